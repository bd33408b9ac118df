"""The schema: migrations both ways on a fresh database, and usage_events partitions that never run out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from conftest import create_database, drop_database
from poindexter_cloud.core import migrations


@pytest.fixture
def fresh_database(server_urls: tuple[str, str]) -> Iterator[str]:
    url = create_database(server_urls[0])
    yield url
    drop_database(server_urls[0], url)


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_upgrade_then_downgrade_on_a_fresh_database(fresh_database: str) -> None:
    migrations.upgrade(fresh_database)
    plan_tables = {
        "users",
        "subscriptions",
        "identities",
        "api_keys",
        "usage_events",
        "usage_monthly",
        "incoming_sms",
        "job_history",
    }
    assert plan_tables <= tables(fresh_database)
    migrations.downgrade(fresh_database, "base")
    assert tables(fresh_database) == {"alembic_version"}
    migrations.upgrade(fresh_database)
    assert plan_tables <= tables(fresh_database)


def add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    return moment.replace(year=moment.year + month_index // 12, month=month_index % 12 + 1, day=15)


def test_usage_event_two_years_out_is_stored_and_later_moves_to_its_own_partition(database_url: str) -> None:
    far = add_months(datetime.now(UTC), 24)
    with psycopg.connect(database_url) as connection:
        connection.execute(
            "INSERT INTO usage_events (user_id, event_type, created_at)"
            " VALUES (gen_random_uuid(), 'probe', %s)",
            (far,),
        )
        connection.commit()
        where = connection.execute(
            "SELECT tableoid::regclass::text FROM usage_events WHERE event_type = 'probe'"
        ).fetchone()
        assert where == ("usage_events_default",)
        # The worker's job keeps partitions ahead; once it reaches that month the row moves with it.
        connection.execute("SELECT ensure_usage_events_partitions(25)")
        connection.commit()
        where = connection.execute(
            "SELECT tableoid::regclass::text FROM usage_events WHERE event_type = 'probe'"
        ).fetchone()
    assert where == (f"usage_events_{far:%Y_%m}",)
