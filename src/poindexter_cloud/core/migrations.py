"""Alembic, driven from code: used by the `migrate` command, `dev` and the tests."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

REPO_ROOT = Path(__file__).resolve().parents[3]


def alembic_dir() -> Path:
    """alembic/ beside the source checkout, or where POINDEXTER_ALEMBIC_DIR says (the image sets it)."""
    candidates = [os.environ.get("POINDEXTER_ALEMBIC_DIR"), REPO_ROOT / "alembic", Path.cwd() / "alembic"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "env.py").is_file():
            return Path(candidate)
    raise FileNotFoundError("alembic/ not found: set POINDEXTER_ALEMBIC_DIR")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(alembic_dir()))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> None:
    command.current(alembic_config(database_url), verbose=False)


def revision(database_url: str, message: str, autogenerate: bool) -> None:
    command.revision(alembic_config(database_url), message=message, autogenerate=autogenerate)
