"""The `poindexter-cloud` command line: serve, dev, migrate, config and admin."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from poindexter_cloud import __version__
from poindexter_cloud.cli import admin, config, dev, migrate, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poindexter-cloud",
        description="Poindexter Cloud: identity, AI proxy and billing for self-hosted Dex assistants.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, dev, migrate, config, admin):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
