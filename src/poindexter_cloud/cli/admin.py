"""`admin ...`: operator commands. Each domain module adds its group here."""

from __future__ import annotations

import argparse

from poindexter_cloud.cli.common import Subcommands


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("admin", help="operator commands")
    parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return 0
