"""The PostgreSQL and Redis a benchmark runs against: DATABASE_URL and REDIS_URL when both are set,
otherwise an embedded PostgreSQL (durable=False) and Valkey in a temporary folder, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from poindexter_cloud.core import migrations
from poindexter_cloud.core.embedded import EmbeddedPostgres, EmbeddedRedis


@contextlib.contextmanager
def databases() -> Iterator[tuple[str, str]]:
    """(database URL, Redis URL), the database migrated to head."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    servers: list[EmbeddedPostgres | EmbeddedRedis] = []
    with tempfile.TemporaryDirectory(prefix="pdx-bench-") as tmp:
        try:
            if not (database_url and redis_url):
                postgres = EmbeddedPostgres(Path(tmp) / "pg", durable=False)
                postgres.start()
                servers.append(postgres)
                valkey = EmbeddedRedis(Path(tmp) / "valkey")
                valkey.start()
                servers.append(valkey)
                database_url, redis_url = postgres.url, valkey.url
                print(f"embedded PostgreSQL at {database_url}, Valkey at {redis_url}")
            migrations.upgrade(database_url)
            yield database_url, redis_url
        finally:
            for server in reversed(servers):
                server.stop()
