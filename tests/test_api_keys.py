"""API keys: issued, listed, revoked and rotated through the service functions, verified by ApiKeyVerifier.

Real PostgreSQL and Redis. Each "replica" is an ApiKeyVerifier with a database engine and Redis client of
its own; the statements it sends are observed with a SQLAlchemy event listener.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import add_subscription, eventually, make_settings
from poindexter_cloud.accounts.api_keys import (
    API_KEY_RE,
    HASH_PURPOSE,
    ApiKeyVerifier,
    IssuedKey,
    KeyPrincipal,
    create_key,
    display_prefix,
    generate_key,
    hash_key,
    is_well_formed,
    list_keys,
    revoke_all_for_user,
    revoke_key,
    rotate_key,
)
from poindexter_cloud.accounts.errors import AccountSuspended, ApiKeyNotFound, InvalidApiKey
from poindexter_cloud.accounts.models import ApiKey
from poindexter_cloud.core.crypto import derive_key
from poindexter_cloud.core.db import Database
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.proxy.entitlements import Entitlements

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass
class StatementLog:
    """Every SQL statement an engine sends (observed, not intercepted)."""

    engine: AsyncEngine
    statements: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def clear(self) -> None:
        self.statements.clear()

    def count(self, verb: str | None = None) -> int:
        if verb is None:
            return len(self.statements)
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(verb))


@dataclass
class Replica:
    verifier: ApiKeyVerifier
    log: StatementLog
    redis: Redis
    db: Database
    client_name: str  # of every Redis connection of this replica, its pub/sub one included


MakeReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def make_replica(settings: Settings) -> AsyncIterator[MakeReplica]:
    replicas: list[Replica] = []

    async def make(
        replica_settings: Settings = settings,
        start: bool = True,
        verifier_class: type[ApiKeyVerifier] = ApiKeyVerifier,
    ) -> Replica:
        db = Database.from_url(replica_settings.database_url, pool_size=2)
        name = f"api-keys-test-{uuid.uuid4().hex[:8]}"
        redis = Redis.from_url(replica_settings.redis_url, client_name=name)
        replica = Replica(
            verifier_class(db, redis, replica_settings), StatementLog(db.engine), redis, db, name
        )
        replicas.append(replica)
        if start:
            await replica.verifier.start()
        return replica

    yield make
    for replica in replicas:
        await replica.verifier.stop()
        await replica.redis.aclose()
        await replica.db.dispose()


async def new_user(resources: Resources, *, is_admin: bool = False) -> uuid.UUID:
    async with resources.unit_of_work() as uow:
        user_id: uuid.UUID = (
            await uow.session.execute(
                text("INSERT INTO users (email, password_hash, is_admin) VALUES (:e, 'x', :a) RETURNING id"),
                {"e": f"{uuid.uuid4().hex}@example.com", "a": is_admin},
            )
        ).scalar_one()
        await uow.commit()
    return user_id


async def issue(resources: Resources, user_id: uuid.UUID, name: str | None = "laptop") -> IssuedKey:
    async with resources.unit_of_work() as uow:
        issued = await create_key(uow.session, resources.settings, user_id, name)
        await uow.commit()
    return issued


async def set_status(resources: Resources, user_id: uuid.UUID, status: str) -> None:
    async with resources.unit_of_work() as uow:
        await uow.session.execute(
            text("UPDATE users SET status = :s WHERE id = :id"), {"s": status, "id": user_id}
        )
        await uow.commit()


async def key_row(resources: Resources, key_id: uuid.UUID) -> ApiKey:
    async with resources.db.sessions() as session:
        return (await session.execute(select(ApiKey).where(ApiKey.id == key_id))).scalar_one()


def rejects(replica: Replica, key: str, error: type[Exception]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await replica.verifier.verify(key, None)
        except error:
            return True
        return False

    return check


# --- issuing and the key format -------------------------------------------------------------------------


async def test_a_created_key_verifies_as_its_user_is_listed_and_only_its_hash_is_stored(
    resources: Resources, make_replica: MakeReplica
) -> None:
    user_id = await new_user(resources, is_admin=True)
    issued = await issue(resources, user_id, "home server")
    replica = await make_replica()

    principal = await replica.verifier.verify(issued.secret, "203.0.113.9")
    assert principal == KeyPrincipal(key_id=issued.row.id, user_id=user_id, is_admin=True)

    async with resources.db.sessions() as session:
        listed = await list_keys(session, user_id)
    assert [(k.id, k.name, k.key_prefix) for k in listed] == [
        (issued.row.id, "home server", issued.secret[:12])
    ]

    hmac_key = derive_key(resources.settings.secret_key, HASH_PURPOSE)
    assert issued.row.key_hash == hash_key(issued.secret, hmac_key)
    async with resources.db.sessions() as session:
        stored = (
            await session.execute(
                text("SELECT api_keys::text FROM api_keys WHERE id = :id"), {"id": issued.row.id}
            )
        ).scalar_one()
    body = issued.secret[8:-6]
    assert issued.secret not in stored and body not in stored and body[4:12] not in stored
    assert issued.row.key_hash in stored and issued.secret[:12] in stored


async def test_keys_are_listed_newest_first_without_revoked_or_expired_ones(resources: Resources) -> None:
    user_id = await new_user(resources)
    first, second, third = [await issue(resources, user_id, name) for name in ("a", "b", "c")]
    async with resources.unit_of_work() as uow:
        await revoke_key(uow.session, user_id, second.row.id)
        await uow.session.execute(
            text("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": first.row.id},
        )
        await uow.commit()
    async with resources.db.sessions() as session:
        assert [k.id for k in await list_keys(session, user_id)] == [third.row.id]
    fourth = await issue(resources, user_id, "d")
    async with resources.db.sessions() as session:
        assert [k.id for k in await list_keys(session, user_id)] == [fourth.row.id, third.row.id]


def test_key_format_prefix_length_and_checksum(settings: Settings) -> None:
    assert settings.api_key_prefix == "pk_test_"
    keys = {generate_key(settings.api_key_prefix) for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("pk_test_") and len(key) == 8 + 43 + 6
        assert API_KEY_RE.fullmatch(key) and is_well_formed(key)
        assert display_prefix(key) == key[:12]
    live = generate_key("pk_live_")
    assert live.startswith("pk_live_") and is_well_formed(live)
    with pytest.raises(ValueError):
        generate_key("sk_test_")

    key = next(iter(keys))
    for position in range(len(key)):
        replacement = BASE62[(BASE62.index(key[position]) + 1) % 62] if key[position] in BASE62 else "x"
        mistyped = key[:position] + replacement + key[position + 1 :]
        assert not is_well_formed(mistyped), position
    for bad in ("", key[:-1], key + "0", key + "\n", key.replace("pk_test_", "pk_prod_"), " " + key[1:]):
        assert not is_well_formed(bad)


async def test_malformed_or_mistyped_keys_are_rejected_without_any_query(
    resources: Resources, make_replica: MakeReplica
) -> None:
    issued = await issue(resources, await new_user(resources))
    replica = await make_replica()
    replica.log.clear()
    key = issued.secret
    flipped_body = key[:20] + ("A" if key[20] != "A" else "B") + key[21:]
    flipped_checksum = key[:-1] + ("A" if key[-1] != "A" else "B")
    other_environment = generate_key("pk_live_")  # well formed, but not this environment's
    for bad in (flipped_body, flipped_checksum, "", "Bearer " + key, key[:-1], other_environment):
        with pytest.raises(InvalidApiKey) as caught:
            await replica.verifier.verify(bad, "203.0.113.1")
        assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")
    assert replica.log.count() == 0
    assert (await replica.verifier.verify(key, None)).key_id == issued.row.id
    assert replica.log.count() == 1


async def test_cache_hits_do_no_io_and_unknown_keys_are_cached_briefly(
    resources: Resources, make_replica: MakeReplica
) -> None:
    issued = await issue(resources, await new_user(resources))
    replica = await make_replica()
    replica.log.clear()
    for _ in range(100):
        await replica.verifier.verify(issued.secret, "198.51.100.1")
    assert replica.log.count() == 1  # the one miss

    replica.log.clear()
    unknown = generate_key("pk_test_")
    for _ in range(50):
        with pytest.raises(InvalidApiKey):
            await replica.verifier.verify(unknown, None)
    assert replica.log.count() == 1


class ShortLivedEntries(ApiKeyVerifier):
    POSITIVE_TTL_SECONDS = 0.4


async def test_a_key_in_steady_use_is_refreshed_in_the_background_never_on_the_request_path(
    resources: Resources, make_replica: MakeReplica
) -> None:
    issued = await issue(resources, await new_user(resources))
    replica = await make_replica(verifier_class=ShortLivedEntries)
    await replica.verifier.verify(issued.secret, None)  # the one miss
    replica.log.clear()
    deadline = time.monotonic() + 3 * ShortLivedEntries.POSITIVE_TTL_SECONDS
    while time.monotonic() < deadline:
        before = replica.log.count()
        assert (await replica.verifier.verify(issued.secret, None)).key_id == issued.row.id
        assert replica.log.count() == before  # answered from the cache, no query in the call
        await asyncio.sleep(0.02)
    assert replica.log.count("SELECT") >= 2  # yet the entry was read again, in the background


class ShortLivedEntitlements(Entitlements):
    TTL_SECONDS = 0.4


async def test_a_user_in_steady_use_has_the_plan_refreshed_in_the_background(
    resources: Resources, make_replica: MakeReplica
) -> None:
    user_id = await new_user(resources)
    await add_subscription(resources, user_id, "pro")
    replica = await make_replica()
    plans = ShortLivedEntitlements(replica.db, replica.verifier)
    assert (await plans.of(user_id)).plan == "pro"  # the one read
    replica.log.clear()
    deadline = time.monotonic() + 3 * ShortLivedEntitlements.TTL_SECONDS
    while time.monotonic() < deadline:
        before = replica.log.count()
        assert (await plans.of(user_id)).state == "active"
        assert replica.log.count() == before
        await asyncio.sleep(0.02)
    assert replica.log.count("SELECT") >= 2
    await plans.stop()


class RefreshedInOneSecond(ApiKeyVerifier):
    POSITIVE_TTL_SECONDS = 2.0  # due for its refresh after 1.5 s


class PlansRefreshedInOneSecond(Entitlements):
    TTL_SECONDS = 2.0


async def test_entries_falling_due_together_are_read_again_in_one_query_per_cache(
    resources: Resources, make_replica: MakeReplica
) -> None:
    """Ten keys and ten plans in use: two SELECTs refresh them all, and what changed behind the caches'
    backs (no announcement) shows as soon as they have, not only when the entries expire."""
    users = [await new_user(resources) for _ in range(10)]
    keys = [await issue(resources, user_id) for user_id in users]
    for user_id in users:
        await add_subscription(resources, user_id)
    replica = await make_replica(verifier_class=RefreshedInOneSecond)
    plans = PlansRefreshedInOneSecond(replica.db, replica.verifier)
    for user_id, key in zip(users, keys, strict=True):
        await replica.verifier.verify(key.secret, None)
        await plans.of(user_id)
    async with resources.unit_of_work() as uow:
        await uow.session.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": keys[0].row.id}
        )
        await uow.session.execute(
            text("UPDATE subscriptions SET status = 'past_due' WHERE user_id = :id"), {"id": users[1]}
        )
        await uow.commit()
    await asyncio.sleep(1.6)
    replica.log.clear()
    for user_id, key in zip(users, keys, strict=True):  # still cached: answered without a query
        assert (await replica.verifier.verify(key.secret, None)).key_id == key.row.id
        assert (await plans.of(user_id)).state == "active"
    assert replica.log.count() == 0

    await eventually(lambda: asyncio.sleep(0, replica.log.count("SELECT") == 2), within=0.3)
    with pytest.raises(InvalidApiKey):
        await replica.verifier.verify(keys[0].secret, None)
    assert (await plans.of(users[1])).state == "suspended"
    for user_id, key in zip(users[2:], keys[2:], strict=True):
        assert (await replica.verifier.verify(key.secret, None)).key_id == key.row.id
        assert (await plans.of(user_id)).state == "active"
    assert replica.log.count() == 2  # the two refreshes, nothing since
    await plans.stop()


async def test_concurrent_misses_for_one_key_share_one_query(
    resources: Resources, make_replica: MakeReplica
) -> None:
    issued = await issue(resources, await new_user(resources))
    replica = await make_replica()
    replica.log.clear()
    results = await asyncio.gather(*(replica.verifier.verify(issued.secret, None) for _ in range(20)))
    assert {r.key_id for r in results} == {issued.row.id}
    assert replica.log.count("SELECT") == 1


async def test_misses_for_many_keys_at_once_share_one_query_per_cache(
    resources: Resources, make_replica: MakeReplica
) -> None:
    """A replica just started (or whose cache was cleared) meeting twenty keys at once, some unknown."""
    users = [await new_user(resources) for _ in range(20)]
    keys = [await issue(resources, user_id) for user_id in users]
    for user_id in users[:10]:
        await add_subscription(resources, user_id, "pro")
    unknown = [generate_key("pk_test_") for _ in range(5)]
    replica = await make_replica()
    plans = Entitlements(replica.db, replica.verifier)
    replica.log.clear()

    async def refused(key: str) -> bool:
        with pytest.raises(InvalidApiKey):
            await replica.verifier.verify(key, None)
        return True

    principals = await asyncio.gather(*(replica.verifier.verify(key.secret, None) for key in keys))
    assert [p.key_id for p in principals] == [key.row.id for key in keys]
    assert replica.log.count("SELECT") == 1
    assert all(await asyncio.gather(*(refused(key) for key in unknown)))
    assert replica.log.count("SELECT") == 2
    found = await asyncio.gather(*(plans.of(user_id) for user_id in users))
    assert [f.plan for f in found] == ["pro"] * 10 + [None] * 10
    assert replica.log.count("SELECT") == 3
    await plans.stop()


async def test_announcing_a_new_key_drops_a_negative_entry_on_every_replica(
    resources: Resources, make_replica: MakeReplica
) -> None:
    """What create_key + announce_revoked([row.key_hash]) does for a key someone presented too early."""
    user_id = await new_user(resources)
    first, second = await make_replica(), await make_replica()
    key = generate_key("pk_test_")
    with pytest.raises(InvalidApiKey):
        await second.verifier.verify(key, None)  # now remembered as unknown
    key_hash = hash_key(key, derive_key(resources.settings.secret_key, HASH_PURPOSE))
    async with resources.unit_of_work() as uow:
        uow.session.add(ApiKey(user_id=user_id, key_hash=key_hash, key_prefix=display_prefix(key)))
        uow.after_commit(lambda: first.verifier.announce_revoked([key_hash]))
        await uow.commit()
    started = time.monotonic()
    await eventually(lambda: _verifies(second, key), within=1.0, interval=0.01)
    assert time.monotonic() - started < 1.0


async def _verifies(replica: Replica, key: str) -> bool:
    try:
        await replica.verifier.verify(key, None)
    except InvalidApiKey:
        return False
    return True


# --- revocation, rotation, suspension ---------------------------------------------------------------------


async def test_a_revoked_key_is_rejected_by_another_replica_within_one_second(
    resources: Resources, make_replica: MakeReplica
) -> None:
    user_id = await new_user(resources)
    issued = await issue(resources, user_id)
    first, second = await make_replica(), await make_replica()
    for replica in (first, second):
        await replica.verifier.verify(issued.secret, None)
    second.log.clear()
    await second.verifier.verify(issued.secret, None)
    assert second.log.count() == 0  # cached on the second replica

    async with resources.unit_of_work() as uow:
        revoked = await revoke_key(uow.session, user_id, issued.row.id)
        uow.after_commit(lambda: first.verifier.announce_revoked([revoked.key_hash]))
        await uow.commit()
    started = time.monotonic()
    with pytest.raises(InvalidApiKey):
        await first.verifier.verify(issued.secret, None)  # the announcing replica: at once
    await eventually(rejects(second, issued.secret, InvalidApiKey), within=1.0, interval=0.01)
    assert time.monotonic() - started < 1.0
    assert (await key_row(resources, issued.row.id)).revoked_at is not None

    async with resources.unit_of_work() as uow:
        with pytest.raises(ApiKeyNotFound) as caught:
            await revoke_key(uow.session, user_id, issued.row.id)  # already revoked
    assert (caught.value.status, caught.value.code) == (404, "api_key_not_found")


async def test_only_the_owner_can_revoke_or_rotate_a_key(resources: Resources) -> None:
    owner, other = await new_user(resources), await new_user(resources)
    issued = await issue(resources, owner)
    async with resources.unit_of_work() as uow:
        with pytest.raises(ApiKeyNotFound):
            await revoke_key(uow.session, other, issued.row.id)
        with pytest.raises(ApiKeyNotFound):
            await rotate_key(uow.session, resources.settings, other, issued.row.id)
        with pytest.raises(ApiKeyNotFound):
            await revoke_key(uow.session, owner, uuid.uuid4())


async def test_a_rotated_key_works_for_its_grace_period_then_stops_even_while_cached(
    database_url: str, redis_url: str, resources: Resources, make_replica: MakeReplica
) -> None:
    grace_settings = make_settings(database_url, redis_url, API_KEY_ROTATION_GRACE_SECONDS="1")
    user_id = await new_user(resources)
    old = await issue(resources, user_id, "nas")
    first, second = await make_replica(grace_settings), await make_replica(grace_settings)
    await second.verifier.verify(old.secret, None)  # cached before the rotation

    async with resources.unit_of_work() as uow:
        new = await rotate_key(uow.session, grace_settings, user_id, old.row.id)

        async def announce() -> None:
            await first.verifier.announce_revoked([new.row.key_hash])
            await first.verifier.announce_user_changed(user_id)

        uow.after_commit(announce)
        await uow.commit()
    assert new.row.name == "nas" and new.secret != old.secret
    old_row = await key_row(resources, old.row.id)
    assert old_row.expires_at is not None and old_row.revoked_at is None

    for replica in (first, second):  # within the grace period both keys work (and are now cached)
        assert (await replica.verifier.verify(old.secret, None)).key_id == old.row.id
        assert (await replica.verifier.verify(new.secret, None)).key_id == new.row.id

    await asyncio.sleep(max(0.0, old_row.expires_at.timestamp() - time.time()) + 0.05)
    second.log.clear()
    for replica in (first, second):
        with pytest.raises(InvalidApiKey):
            await replica.verifier.verify(old.secret, None)
        assert (await replica.verifier.verify(new.secret, None)).key_id == new.row.id
    assert second.log.count() == 0  # refused from the cache, by the expiry it holds
    async with resources.db.sessions() as session:
        assert [k.id for k in await list_keys(session, user_id)] == [new.row.id]


async def test_rotation_without_grace_revokes_the_old_key_at_once(
    database_url: str, redis_url: str, resources: Resources, make_replica: MakeReplica
) -> None:
    no_grace = make_settings(database_url, redis_url, API_KEY_ROTATION_GRACE_SECONDS="0")
    user_id = await new_user(resources)
    old = await issue(resources, user_id)
    replica = await make_replica(no_grace)
    await replica.verifier.verify(old.secret, None)
    async with resources.unit_of_work() as uow:
        new = await rotate_key(uow.session, no_grace, user_id, old.row.id)
        await uow.commit()
    await replica.verifier.announce_user_changed(user_id)
    assert (await key_row(resources, old.row.id)).revoked_at is not None
    with pytest.raises(InvalidApiKey):
        await replica.verifier.verify(old.secret, None)
    assert (await replica.verifier.verify(new.secret, None)).user_id == user_id


async def test_a_suspended_user_is_refused_at_once_on_a_replica_that_cached_the_key(
    resources: Resources, make_replica: MakeReplica
) -> None:
    user_id = await new_user(resources)
    issued = await issue(resources, user_id)
    first, second = await make_replica(), await make_replica()
    for replica in (first, second):
        await replica.verifier.verify(issued.secret, None)

    await set_status(resources, user_id, "suspended")
    await first.verifier.announce_user_changed(user_id)
    started = time.monotonic()
    with pytest.raises(AccountSuspended) as caught:
        await first.verifier.verify(issued.secret, None)
    assert (caught.value.status, caught.value.code) == (403, "account_suspended")
    await eventually(rejects(second, issued.secret, AccountSuspended), within=1.0, interval=0.01)
    assert time.monotonic() - started < 1.0

    second.log.clear()
    with pytest.raises(AccountSuspended):  # remembered: a suspended Dex retrying does not hit the database
        await second.verifier.verify(issued.secret, None)
    assert second.log.count() == 0

    await set_status(resources, user_id, "deleted")
    await first.verifier.announce_user_changed(user_id)
    with pytest.raises(AccountSuspended):
        await first.verifier.verify(issued.secret, None)

    await set_status(resources, user_id, "active")
    await first.verifier.announce_user_changed(user_id)
    await eventually(lambda: _verifies(second, issued.secret), within=1.0, interval=0.01)


async def test_revoke_all_for_user_returns_the_hashes_and_every_key_stops(
    resources: Resources, make_replica: MakeReplica
) -> None:
    user_id = await new_user(resources)
    keys = [await issue(resources, user_id, f"k{i}") for i in range(3)]
    other = await issue(resources, await new_user(resources))
    replica = await make_replica()
    for issued in [*keys, other]:
        await replica.verifier.verify(issued.secret, None)
    async with resources.unit_of_work() as uow:
        hashes = await revoke_all_for_user(uow.session, user_id)
        await uow.commit()
    assert sorted(hashes) == sorted(k.row.key_hash for k in keys)
    await replica.verifier.announce_revoked(hashes)
    for issued in keys:
        with pytest.raises(InvalidApiKey):
            await replica.verifier.verify(issued.secret, None)
    assert (await replica.verifier.verify(other.secret, None)).key_id == other.row.id


async def test_after_the_listener_reconnects_the_cache_is_cleared_and_revocations_arrive(
    resources: Resources, make_replica: MakeReplica
) -> None:
    user_id = await new_user(resources)
    issued = await issue(resources, user_id)
    first, second = await make_replica(), await make_replica()
    await second.verifier.verify(issued.secret, None)
    second.log.clear()
    await second.verifier.verify(issued.secret, None)
    assert second.log.count() == 0

    name = second.client_name
    pubsub_clients = [c for c in await second.redis.client_list(_type="pubsub") if c["name"] == name]
    assert len(pubsub_clients) == 1
    await second.redis.client_kill_filter(_id=pubsub_clients[0]["id"])

    async def queried_again() -> bool:
        await second.verifier.verify(issued.secret, None)
        return second.log.count() > 0

    await eventually(queried_again, within=5.0)  # the cache was cleared: messages may have been missed
    await eventually(lambda: _has_pubsub_client(second, name, not_id=pubsub_clients[0]["id"]), within=5.0)

    await second.verifier.verify(issued.secret, None)
    async with resources.unit_of_work() as uow:
        await revoke_key(uow.session, user_id, issued.row.id)
        await uow.commit()
    await first.verifier.announce_revoked([issued.row.key_hash])
    await eventually(rejects(second, issued.secret, InvalidApiKey), within=1.0, interval=0.01)


async def _has_pubsub_client(replica: Replica, name: str, not_id: str) -> bool:
    clients = await replica.redis.client_list(_type="pubsub")
    return any(c["name"] == name and c["id"] != not_id for c in clients)


# --- last used ----------------------------------------------------------------------------------------


async def test_last_use_is_written_in_one_update_per_flush_not_per_verify(
    resources: Resources, make_replica: MakeReplica
) -> None:
    user_id = await new_user(resources)
    first_key, second_key = await issue(resources, user_id, "a"), await issue(resources, user_id, "b")
    replica = await make_replica()
    replica.log.clear()
    for i in range(200):
        await replica.verifier.verify(first_key.secret, f"203.0.113.{i % 50}")
        await replica.verifier.verify(second_key.secret, "198.51.100.20")
    before = time.time()
    await replica.verifier.verify(first_key.secret, "192.0.2.77")
    assert replica.log.count("UPDATE") == 0

    await replica.verifier.stop()  # flushes
    assert replica.log.count("UPDATE") == 1
    first_row, second_row = (
        await key_row(resources, first_key.row.id),
        await key_row(resources, second_key.row.id),
    )
    assert first_row.last_used_ip == "192.0.2.77" and second_row.last_used_ip == "198.51.100.20"
    assert first_row.last_used_at is not None and second_row.last_used_at is not None
    assert before <= first_row.last_used_at.timestamp() <= time.time()
    assert second_row.last_used_at < first_row.last_used_at

    # An older use flushed later (another replica that is behind) never moves last_used_at back.
    stale = await make_replica()
    await stale.verifier.verify(first_key.secret, "10.0.0.1")
    async with resources.unit_of_work() as uow:
        await uow.session.execute(
            text("UPDATE api_keys SET last_used_at = now() + interval '1 hour' WHERE id = :id"),
            {"id": first_key.row.id},
        )
        await uow.commit()
    assert await stale.verifier.flush_last_used() == 1
    assert (await key_row(resources, first_key.row.id)).last_used_ip == "192.0.2.77"


async def test_the_flusher_runs_on_its_own_and_a_failed_flush_keeps_the_data(
    resources: Resources, make_replica: MakeReplica
) -> None:
    issued = await issue(resources, await new_user(resources))
    replica = await make_replica(start=False)
    replica.verifier.FLUSH_INTERVAL_SECONDS = 0.2
    await replica.verifier.start()

    failures = 0

    def fail_updates(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal failures
        if statement.startswith("UPDATE api_keys"):
            failures += 1
            raise RuntimeError("database unavailable")

    event.listen(replica.db.engine.sync_engine, "before_cursor_execute", fail_updates)
    await replica.verifier.verify(issued.secret, "192.0.2.1")
    await eventually(lambda: _async(failures >= 2), within=5.0)  # the flusher survived the failures
    assert (await key_row(resources, issued.row.id)).last_used_at is None
    event.remove(replica.db.engine.sync_engine, "before_cursor_execute", fail_updates)

    async def written() -> bool:
        return (await key_row(resources, issued.row.id)).last_used_ip == "192.0.2.1"

    await eventually(written, within=5.0)


async def _async(value: bool) -> bool:
    return value


async def test_a_use_without_a_known_ip_is_recorded_too(
    resources: Resources, make_replica: MakeReplica
) -> None:
    issued = await issue(resources, await new_user(resources))
    replica = await make_replica()
    await replica.verifier.verify(issued.secret, None)
    assert await replica.verifier.flush_last_used() == 1
    assert await replica.verifier.flush_last_used() == 0  # nothing new to write
    row = await key_row(resources, issued.row.id)
    assert row.last_used_at is not None and row.last_used_ip is None
