"""`config check [--role R]`: every setting with its source, and every missing or invalid one."""

from __future__ import annotations

import argparse

from poindexter_cloud.cli.common import Subcommands, add_role_argument
from poindexter_cloud.core.settings import Role, load


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("config", help="inspect configuration")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="list every setting, its source, and what is wrong")
    add_role_argument(check, tuple(Role), default=Role.ALL)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    loaded = load(role=args.role)
    rows = [(r.spec.env, r.source, r.shown(), r.spec.help) for r in loaded.resolved]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, source, shown, help_text in rows:
        print(f"{name:<{widths[0]}}  {source:<{widths[1]}}  {shown:<{widths[2]}}  {help_text}")
    if loaded.problems:
        print(f"\n{len(loaded.problems)} problem(s) for role {args.role.value}:")
        for problem in loaded.problems:
            print(f"  - {problem}")
        return 1
    print(f"\nconfiguration is valid for role {args.role.value}")
    return 0
