"""The embedded servers start, keep their data across restarts, and leave no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from poindexter_cloud.core import embedded
from poindexter_cloud.core.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    PortInUseError,
    free_port,
)

pytestmark = pytest.mark.slow


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(path) in part for part in cmdline):
            found.append(process)
    return found


def test_postgres_keeps_data_across_restarts_and_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    with EmbeddedPostgres(data_dir, durable=False) as postgres:
        assert postgres.url.startswith("postgresql://postgres@127.0.0.1:")
        assert postgres.url.endswith("/poindexter")
        first_pid = postgres.pid
        assert first_pid is not None
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE notes (body text)")
            conn.execute("INSERT INTO notes VALUES ('kept')")
    assert postgres.pid is None
    assert _gone(first_pid)
    postgres.stop()  # idempotent

    with EmbeddedPostgres(data_dir, durable=False) as again, psycopg.connect(again.url) as conn:
        second_pid = again.pid
        assert second_pid is not None
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    assert _gone(second_pid)
    assert _processes_using(data_dir) == []
    assert not (data_dir / "postmaster.pid").exists()


def test_postgres_starts_over_a_stale_pid_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    port = free_port()
    crashed = EmbeddedPostgres(data_dir, port=port, durable=False)
    crashed.start()
    assert crashed.pid is not None
    postmaster = psutil.Process(crashed.pid)
    for process in [*postmaster.children(recursive=True), postmaster]:
        with contextlib.suppress(ProcessLookupError):  # a short-lived backend may be gone already
            os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(postmaster.children(recursive=True), timeout=5)
    crashed.stop()  # only reaps the dead postmaster, as its parent would
    assert (data_dir / "postmaster.pid").exists()

    with (
        EmbeddedPostgres(data_dir, port=port, durable=False) as postgres,
        psycopg.connect(postgres.url) as conn,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _processes_using(data_dir) == []


def test_postgres_fixed_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "valkey") as taken:
        assert taken.port is not None
        with pytest.raises(PortInUseError, match=str(taken.port)):
            EmbeddedPostgres(tmp_path / "pg", port=taken.port, durable=False).start()


def test_redis_keeps_data_across_restarts_and_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "valkey"
    with EmbeddedRedis(data_dir) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        assert server.url.endswith("/0")
        first_pid = server.pid
        assert first_pid is not None
        client = redis.Redis.from_url(server.url)
        client.set("greeting", "kept")
        client.close()
    assert _gone(first_pid)
    server.stop()  # idempotent

    with EmbeddedRedis(data_dir) as again:
        second_pid = again.pid
        assert second_pid is not None
        client = redis.Redis.from_url(again.url)
        assert client.get("greeting") == b"kept"
        client.close()
    assert _gone(second_pid)
    assert _processes_using(data_dir) == []


def test_startup_failure_reports_the_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    data_dir.mkdir()
    (data_dir / "PG_VERSION").write_text("not a cluster\n")
    server = EmbeddedPostgres(data_dir, durable=False)
    with pytest.raises(EmbeddedServerError, match="exited with code"):
        server.start()
    assert server.pid is None


def test_postgres_socket_of_a_deep_data_dir_goes_to_a_short_temporary_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / ("deep" * 30) / "pg"
    with EmbeddedPostgres(data_dir, durable=False) as postgres:
        socket_dir = Path((data_dir / "postmaster.pid").read_text().splitlines()[4])
        assert len(str(socket_dir)) < 90
        assert socket_dir != data_dir
        with psycopg.connect(
            host=str(socket_dir), port=postgres.port, user="postgres", dbname="poindexter"
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not socket_dir.exists()


def test_a_picked_port_taken_by_another_server_is_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedRedis(tmp_path / "squatter") as squatter:
        assert squatter.port is not None
        ports = iter([squatter.port])
        monkeypatch.setattr(
            embedded, "free_port", lambda host="127.0.0.1": next(ports, None) or free_port(host)
        )
        with EmbeddedRedis(tmp_path / "ours") as ours:
            assert ours.port not in (None, squatter.port)
            client = redis.Redis.from_url(ours.url)
            assert client.dbsize() == 0
            client.close()
    assert "Address already in use" in (tmp_path / "ours.log").read_text()
