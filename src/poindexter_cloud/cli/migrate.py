"""`migrate upgrade|downgrade|current|revision`: the database schema, over Alembic."""

from __future__ import annotations

import argparse

from poindexter_cloud.cli.common import Subcommands, settings_or_exit
from poindexter_cloud.core import migrations


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("migrate", help="upgrade, downgrade or inspect the database schema")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="apply migrations (default: to head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = actions.add_parser("downgrade", help="revert migrations to REVISION (e.g. -1 or base)")
    downgrade.add_argument("revision")
    actions.add_parser("current", help="print the current revision")
    revision = actions.add_parser("revision", help="create a new migration file")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--autogenerate", action="store_true", help="diff the models against the database")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    url = settings_or_exit(None).database_url
    if args.action == "upgrade":
        migrations.upgrade(url, args.revision)
    elif args.action == "downgrade":
        migrations.downgrade(url, args.revision)
    elif args.action == "current":
        migrations.current(url)
    else:
        migrations.revision(url, args.message, args.autogenerate)
    return 0
