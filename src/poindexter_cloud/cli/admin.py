"""`admin ...`: operator commands. Each group lives beside the module it operates on."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from poindexter_cloud.cli.common import Subcommands, settings_or_exit
from poindexter_cloud.core.errors import AppError
from poindexter_cloud.core.resources import Resources

# Modules with an admin command group: each has cli.py with register(groups) adding its subcommands, whose
# handler is an async function (args, resources) -> exit code.
GROUP_MODULES = ("admin", "billing", "provisioning")


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("admin", help="operator commands")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for name in GROUP_MODULES:
        importlib.import_module(f"poindexter_cloud.{name}.cli").register(groups)
    parser.set_defaults(handler=handle)


AdminHandler = Callable[[argparse.Namespace, Resources], Awaitable[int]]


def handle(args: argparse.Namespace) -> int:
    settings = settings_or_exit(None)
    action: AdminHandler = args.admin_action

    async def run() -> int:
        resources = await Resources.open(settings)
        try:
            return await action(args, resources)
        except AppError as exc:
            print(f"poindexter-cloud: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await resources.close()

    return asyncio.run(run())


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c), *(len(str(row.get(c, ""))) for row in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
