"""What several benchmarks need: the databases they run against, and the CPU a server process used."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

from poindexter_cloud.core import migrations
from poindexter_cloud.core.embedded import EmbeddedPostgres, EmbeddedRedis


@contextlib.contextmanager
def databases() -> Iterator[tuple[str, str]]:
    """(database URL, Redis URL), the database migrated to head: DATABASE_URL and REDIS_URL when both are
    set, otherwise an embedded PostgreSQL (durable=False) and Valkey in a temporary folder, stopped after."""
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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by a process and its children (PostgreSQL's backends are the postmaster's); 0 if it
    is gone."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total
