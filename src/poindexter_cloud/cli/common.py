"""What every command shares: loading settings for a role and failing with one clear message."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from poindexter_cloud.core import logs
from poindexter_cloud.core.settings import InvalidSettings, Role, Settings, load_or_raise

Subcommands = Any  # argparse's private _SubParsersAction


def settings_or_exit(role: Role | None) -> Settings:
    """Settings for ``role``; on any missing or malformed variable, print all of them and exit 2."""
    try:
        settings = load_or_raise(role)
    except InvalidSettings as exc:
        print(f"poindexter-cloud: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_level)
    return settings


def add_role_argument(parser: argparse.ArgumentParser, choices: tuple[Role, ...], **kwargs: Any) -> None:
    parser.add_argument("--role", type=Role, choices=choices, metavar="|".join(choices), **kwargs)
