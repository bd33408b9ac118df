"""Alembic environment: runs migrations over the app's own async engine (psycopg 3)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from poindexter_cloud.core.all_models import Base
from poindexter_cloud.core.db import make_engine
from poindexter_cloud.core.settings import _database_url

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        import os

        url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    return _database_url(url)


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave usage_events' monthly partitions to the partition function: they are not models."""
    is_partition = name is not None and name.startswith("usage_events_")
    return not (type_ in {"table", "index"} and reflected and compare_to is None and is_partition)


def run_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = make_engine(database_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(run_online())
