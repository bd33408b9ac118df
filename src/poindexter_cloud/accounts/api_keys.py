"""API keys for Dex instances: issuing, listing, revoking and rotating them, and verifying them fast.

A key is ``pk_live_`` (production) or ``pk_test_`` (everywhere else), then 43 base62 characters carrying 32
random bytes, then a 6-character base62 CRC32 of everything before it. The checksum is not a secret: it lets
a mistyped or truncated key be rejected before any database or Redis round trip.

**Why HMAC-SHA256 under a server secret, not bcrypt/argon2.** Slow password hashes exist to make guessing
low-entropy secrets expensive. A key holds 256 random bits, so there is nothing to guess and a slow hash
adds no protection; it would only add milliseconds of CPU to every proxied request, and every request the
AI proxy serves verifies a key. A salted slow hash would also make a lookup impossible without the key's
id (one comparison per stored key); a keyed hash is deterministic, so verification is a single indexed
lookup on ``api_keys.key_hash``. The HMAC key is derived from ``SECRET_KEY`` (``HASH_PURPOSE``), so a
database leak alone reveals neither usable keys nor a way to test guesses offline.

**Verification** (``ApiKeyVerifier``) keeps a process-local cache by key hash. Correctness comes from Redis
pub/sub: whoever revokes a key, rotates it or changes a user publishes on ``INVALIDATION_CHANNEL`` after the
commit, and every replica drops the entries named. Cached entries still expire after 60 s as a safety net;
a key still in use in an entry's last quarter is looked up again in the background, so a key in steady use
never waits for the database on the request path after its first request. Entries
carry the key's ``expires_at`` (re-checked on every hit, so a rotated key stops at the end of its grace
period even while cached), and while the listener is not subscribed (startup, a Redis outage) entries live
only one second; each (re)subscription clears the cache, since messages may have been missed. Unknown
hashes are remembered for a few seconds so a flood of well-formed but unknown keys cannot hammer the
database. ``last_used_at``/``last_used_ip`` are recorded in memory and written every few seconds with one
batched UPDATE.

The service functions take a session and never commit. After the commit, the caller announces what
changed (e.g. with ``UnitOfWork.after_commit``):

* ``create_key``: ``verifier.announce_revoked([issued.row.key_hash])`` (drops any negative cache entry);
* ``revoke_key``: ``verifier.announce_revoked([row.key_hash])``;
* ``rotate_key``: ``verifier.announce_revoked([issued.row.key_hash])`` and
  ``verifier.announce_user_changed(user_id)`` (replicas re-read the old key and learn its new expiry);
* ``revoke_all_for_user`` and any change of a user's status or admin flag: ``announce_revoked(hashes)`` /
  ``announce_user_changed(user_id)``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import secrets
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

import msgspec
import redis.asyncio as aioredis
from sqlalchemy import ARRAY, ColumnElement, Text, and_, any_, bindparam, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.accounts.errors import AccountSuspended, ApiKeyNotFound, InvalidApiKey
from poindexter_cloud.accounts.models import ApiKey, User
from poindexter_cloud.core.batched_reads import BatchedReads
from poindexter_cloud.core.crypto import KeyRing, keyed_hash
from poindexter_cloud.core.db import Database
from poindexter_cloud.core.settings import Settings

_INVALID_MESSAGE = "The API key is invalid, revoked or expired."
_SUSPENDED_MESSAGE = "This account is suspended."
_NOT_FOUND_MESSAGE = "No such API key."
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="poindexter"'}


def _invalid() -> InvalidApiKey:
    return InvalidApiKey(_INVALID_MESSAGE, headers=dict(_WWW_AUTHENTICATE))


logger = logging.getLogger(__name__)

# --- key format -----------------------------------------------------------------------------------------

PREFIXES: Final = ("pk_live_", "pk_test_")
HASH_PURPOSE: Final = "api-key-hash"  # derive_key(settings.secret_key, HASH_PURPOSE) is the HMAC key
BODY_LENGTH: Final = 43  # 62**43 > 2**256: 32 random bytes, zero-padded
CHECKSUM_LENGTH: Final = 6  # 62**6 > 2**32: a CRC32
KEY_LENGTH: Final = 8 + BODY_LENGTH + CHECKSUM_LENGTH

API_KEY_RE: Final = re.compile(r"\A(pk_(?:live|test)_)([0-9A-Za-z]{43})([0-9A-Za-z]{6})\Z")
_fullmatch = API_KEY_RE.fullmatch

_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(_ALPHABET[digit])
    if value:
        raise ValueError("value does not fit the width")
    return "".join(reversed(digits))


def _checksum(prefix_and_body: str) -> str:
    return _base62(zlib.crc32(prefix_and_body.encode()), CHECKSUM_LENGTH)


def generate_key(prefix: str) -> str:
    """A new key: ``prefix`` + base62 of 32 random bytes (43 chars) + base62 CRC32 checksum (6 chars)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown API key prefix {prefix!r}")
    head = prefix + _base62(int.from_bytes(secrets.token_bytes(32), "big"), BODY_LENGTH)
    return head + _checksum(head)


def is_well_formed(key: str) -> bool:
    """Format and checksum only; pure, no I/O."""
    return _fullmatch(key) is not None and _checksum(key[:-CHECKSUM_LENGTH]) == key[-CHECKSUM_LENGTH:]


def display_prefix(key: str) -> str:
    """What the console shows for a key: its prefix and the first 4 characters of its body."""
    match = _fullmatch(key)
    if match is None:
        raise ValueError("not an API key")
    return match.group(1) + match.group(2)[:4]


def hash_key(key: str, hmac_key: bytes) -> str:
    """What ``api_keys.key_hash`` stores: HMAC-SHA256 of the whole key, hex."""
    return keyed_hash(hmac_key, key)


def _hmac_keys(settings: Settings) -> KeyRing:
    """The current HMAC key, then (during a SECRET_KEY rotation) the one older keys' hashes were made with."""
    return KeyRing.derive(HASH_PURPOSE, settings.secret_key, settings.secret_key_previous)


# --- service functions (take a session, never commit) ---------------------------------------------------


class IssuedKey(NamedTuple):
    row: ApiKey
    secret: str  # shown to the user once; never stored


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _live(now: datetime) -> ColumnElement[bool]:
    return and_(ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))


async def create_key(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID, name: str | None
) -> IssuedKey:
    """Add a new key for ``user_id``; the row holds only the key's hash and display prefix."""
    secret = generate_key(settings.api_key_prefix)
    row = ApiKey(
        id=uuid.uuid4(),
        user_id=user_id,
        key_hash=hash_key(secret, _hmac_keys(settings).current),
        key_prefix=display_prefix(secret),
        name=name,
        last_used_at=None,
        last_used_ip=None,
        expires_at=None,
        revoked_at=None,
        created_at=_utcnow(),  # set here so the row is complete without a refresh
    )
    session.add(row)
    await session.flush()
    return IssuedKey(row, secret)


async def list_keys(session: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    """The user's keys that still work (not revoked, not expired), newest first."""
    result = await session.execute(
        select(ApiKey)
        .where(ApiKey.user_id == user_id, _live(_utcnow()))
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return list(result.scalars())


async def _live_key_for_update(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    result = await session.execute(
        select(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, _live(_utcnow()))
        .with_for_update()
    )
    row = result.scalar_one_or_none()
    if row is None:
        raise ApiKeyNotFound(_NOT_FOUND_MESSAGE)
    return row


async def revoke_key(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """Revoke one of the user's live keys; ``ApiKeyNotFound`` if it is not one."""
    row = await _live_key_for_update(session, user_id, key_id)
    row.revoked_at = _utcnow()
    await session.flush()
    return row


async def rotate_key(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID, key_id: uuid.UUID
) -> IssuedKey:
    """A new key with the same name; the old one works for the grace period (0: revoked at once)."""
    old = await _live_key_for_update(session, user_id, key_id)
    now = _utcnow()
    grace = settings.api_key_rotation_grace_seconds
    if grace <= 0:
        old.revoked_at = now
    else:
        expires_at = now + timedelta(seconds=grace)
        # Rotating a key already in its grace period never extends it.
        old.expires_at = expires_at if old.expires_at is None else min(old.expires_at, expires_at)
    return await create_key(session, settings, user_id, old.name)


async def revoke_all_for_user(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """Revoke every key of the user not revoked yet (account erasure); returns their hashes."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=_utcnow())
        .returning(ApiKey.key_hash)
        .execution_options(synchronize_session="fetch")
    )
    return list(result.scalars())


# --- verification ---------------------------------------------------------------------------------------


class KeyPrincipal(msgspec.Struct, frozen=True):
    key_id: uuid.UUID
    user_id: uuid.UUID
    is_admin: bool


class _Invalidation(msgspec.Struct, omit_defaults=True):
    """A message on the invalidation channel: drop these key hashes, and/or every key of this user."""

    hashes: list[str] = msgspec.field(default_factory=list)
    user_id: uuid.UUID | None = None


_encode = msgspec.json.Encoder().encode
_decode_invalidation = msgspec.json.Decoder(_Invalidation).decode

# (principal, account active, key expiry as epoch seconds (inf: none), entry valid until epoch seconds,
# background refresh due at epoch seconds (inf: started already))
_Entry = tuple[KeyPrincipal, bool, float, float, float]


# Live keys by hash, many at once (core/batched_reads.py): one array parameter, one statement.
_LOOKUP = (
    select(ApiKey.key_hash, ApiKey.id, ApiKey.user_id, ApiKey.expires_at, User.status, User.is_admin)
    .join(User, User.id == ApiKey.user_id)
    .where(
        ApiKey.key_hash == any_(bindparam("key_hashes", type_=ARRAY(Text))),
        ApiKey.revoked_at.is_(None),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > bindparam("now")),
    )
)

# A key found under the previous secret's hash is re-hashed under the current one (once), unless it was
# revoked meanwhile, so a rotation's old secret can be dropped once the keys in use have been seen.
_REHASH = text(
    "UPDATE api_keys SET key_hash = :new WHERE id = :id AND key_hash = :old AND revoked_at IS NULL"
)

# The uses as one JSON array: psycopg dumps the three arrays of an unnest element by element, in Python.
_FLUSH_LAST_USED = text(
    "UPDATE api_keys SET last_used_at = v.at, last_used_ip = v.ip "
    "FROM (SELECT id, to_timestamp(t) AS at, ip "
    "      FROM jsonb_to_recordset(CAST(:uses AS jsonb)) AS u(id uuid, t double precision, ip text)) AS v "
    "WHERE api_keys.id = v.id AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.at)"
)

INVALIDATION_CHANNEL: Final = "poindexter:api-keys:invalidate"


class ApiKeyVerifier:
    """Verifies keys against a process-local cache kept correct by Redis pub/sub; one per process.

    ``start()`` subscribes (waiting up to a few seconds for it) and starts the last-used flusher; before it,
    or while Redis is unreachable, verification still works with one-second cache entries.
    """

    POSITIVE_TTL_SECONDS: float = 60.0  # safety net; correctness comes from pub/sub
    REFRESH_AHEAD_SHARE: float = 0.25  # a hit in the last quarter of an entry's life refreshes it
    UNSUBSCRIBED_TTL_SECONDS: float = 1.0  # while no invalidation can be heard
    NEGATIVE_TTL_SECONDS: float = 3.0
    MAX_NEGATIVE_ENTRIES: int = 100_000
    FLUSH_INTERVAL_SECONDS: float = 5.0
    PRUNE_INTERVAL_SECONDS: float = 30.0
    START_TIMEOUT_SECONDS: float = 5.0
    KEEPALIVE_SECONDS: float = 5.0  # ping on the pub/sub connection; 3 silent intervals mean it is dead
    RECONNECT_MIN_SECONDS: float = 0.1
    RECONNECT_MAX_SECONDS: float = 5.0
    MAX_HASHES_PER_MESSAGE: int = 1000

    def __init__(self, db: Database, redis: aioredis.Redis, settings: Settings) -> None:
        self._db = db
        self._reads = BatchedReads(self._read_many, "api keys")
        self._redis = redis
        self._prefix = settings.api_key_prefix
        hmac_keys = _hmac_keys(settings).keys
        self._hmac_key = hmac_keys[0]
        self._previous_hmac_key = hmac_keys[1] if len(hmac_keys) > 1 else None
        self._positive: dict[str, _Entry] = {}
        self._by_user: dict[uuid.UUID, set[str]] = {}
        self._negative: dict[str, float] = {}
        # Bumped by every invalidation: a lookup that raced one does not cache its (maybe stale) answer.
        self._generation = 0
        self._positive_ttl = self.UNSUBSCRIBED_TTL_SECONDS
        self._subscribed = asyncio.Event()
        self._last_used: dict[uuid.UUID, tuple[float, str | None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._user_listeners: list[Callable[[uuid.UUID | None], None]] = []

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the revocation listener and the last-used flusher; wait (bounded) for the subscription."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._listen(), name="api-keys-invalidation-listener"),
            asyncio.create_task(self._flush_loop(), name="api-keys-last-used-flusher"),
        ]
        try:
            await asyncio.wait_for(self._subscribed.wait(), self.START_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning("api key invalidation channel not subscribed yet; caching for 1 s until it is")

    async def stop(self) -> None:
        """Stop the background tasks, then write the pending last-used data."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._reads.stop()
        self._unsubscribed()
        try:
            await self.flush_last_used()
        except Exception:
            logger.exception("could not write api key last-used data on stop")

    # --- the hot path -----------------------------------------------------------------------------------

    async def verify(self, key: str, ip: str | None) -> KeyPrincipal:
        """The key's principal; ``InvalidApiKey`` or ``AccountSuspended`` otherwise.

        Format and checksum are checked only when the cache does not know the key: a cached hash came from
        a well-formed key, so a hit needs only the length and prefix checks and the hash."""
        if len(key) != KEY_LENGTH or not key.startswith(self._prefix):
            raise _invalid()
        key_hash = hmac.digest(self._hmac_key, key.encode(), "sha256").hex()  # == hash_key(key, ...)
        now = time.time()
        entry = self._positive.get(key_hash)
        if entry is None or entry[3] <= now:
            if not is_well_formed(key):  # a mistyped key is refused before any lookup
                raise _invalid()
            negative_until = self._negative.get(key_hash)
            if negative_until is not None and negative_until > now:
                raise _invalid()
            entry = await self._lookup(key_hash)
            if entry is None and self._previous_hmac_key is not None:
                entry = await self._rehash(key, key_hash)
            if entry is None:
                raise _invalid()
        elif entry[4] <= now:
            self._positive[key_hash] = (*entry[:4], math.inf)  # one background refresh per entry
            self._reads.refresh(key_hash)
        principal, active, expires, _until, _refresh = entry
        if expires <= now:
            raise _invalid()
        if not active:
            raise AccountSuspended(_SUSPENDED_MESSAGE)
        self._last_used[principal.key_id] = (now, ip)
        return principal

    async def _rehash(self, key: str, key_hash: str) -> _Entry | None:
        """A key made before the SECRET_KEY rotation: found by its previous hash, re-hashed under the
        current one, then looked up again (and cached) by it; the second lookup also finds a key that a
        concurrent request has just re-hashed. None if it is not a live key either way."""
        assert self._previous_hmac_key is not None
        previous = hmac.digest(self._previous_hmac_key, key.encode(), "sha256").hex()
        async with self._db.autocommit.connect() as connection:
            result = await connection.execute(_LOOKUP, {"key_hashes": [previous], "now": _utcnow()})
            row = result.first()
            rehashed = row is not None and bool(
                (await connection.execute(_REHASH, {"new": key_hash, "old": previous, "id": row.id})).rowcount
            )
        if rehashed:  # replicas that took the new hash for unknown forget that (this one too)
            await self.announce_revoked([key_hash])
        return await self._lookup(key_hash)

    async def _lookup(self, key_hash: str) -> _Entry | None:
        """The key's entry, read with the other misses of this pass (concurrent misses of one key share
        the read)."""
        return await self._reads.read(key_hash)

    async def _read_many(self, key_hashes: list[str]) -> dict[str, _Entry]:
        """Misses and background refreshes (`BatchedReads`): one query, and what it found cached, unless
        an invalidation came while it ran (it may have read the old state)."""
        generation = self._generation
        async with self._db.autocommit.connect() as connection:
            result = await connection.execute(_LOOKUP, {"key_hashes": key_hashes, "now": _utcnow()})
            now = time.time()
            found = {row.key_hash: self._entry(row, now) for row in result}
        if generation == self._generation:
            for key_hash in key_hashes:
                self._found(key_hash, found.get(key_hash))
        return found

    def _entry(self, row: Any, now: float) -> _Entry:
        return (
            KeyPrincipal(row.id, row.user_id, row.is_admin),
            row.status == "active",  # suspended, deleted, anything unknown: refused
            math.inf if row.expires_at is None else row.expires_at.timestamp(),
            now + self._positive_ttl,
            now + self._positive_ttl * (1 - self.REFRESH_AHEAD_SHARE),
        )

    def _found(self, key_hash: str, entry: _Entry | None) -> None:
        """Cache what a read found; None: not a live key (a cached one revoked without an announcement)."""
        if entry is None:
            self._drop(key_hash)
            self._remember_unknown(key_hash, time.time())
        else:
            self._remember(key_hash, entry)

    # --- the cache --------------------------------------------------------------------------------------

    def _remember(self, key_hash: str, entry: _Entry) -> None:
        self._negative.pop(key_hash, None)
        self._positive[key_hash] = entry
        self._by_user.setdefault(entry[0].user_id, set()).add(key_hash)

    def _remember_unknown(self, key_hash: str, now: float) -> None:
        if len(self._negative) >= self.MAX_NEGATIVE_ENTRIES:
            self._prune_negative(now)
            if len(self._negative) >= self.MAX_NEGATIVE_ENTRIES:
                self._negative.clear()
        self._negative[key_hash] = now + self.NEGATIVE_TTL_SECONDS

    def _drop(self, key_hash: str) -> None:
        self._negative.pop(key_hash, None)
        entry = self._positive.pop(key_hash, None)
        if entry is not None:
            hashes = self._by_user.get(entry[0].user_id)
            if hashes is not None:
                hashes.discard(key_hash)
                if not hashes:
                    del self._by_user[entry[0].user_id]

    def _drop_user(self, user_id: uuid.UUID) -> None:
        for key_hash in list(self._by_user.get(user_id, ())):
            self._drop(key_hash)

    def on_user_changed(self, listener: Callable[[uuid.UUID | None], None]) -> None:
        """Also tell ``listener`` when a user changes (None: anything may have changed), so caches kept
        beside this one (the proxy's entitlements) follow the same invalidations."""
        self._user_listeners.append(listener)

    def _clear(self) -> None:
        for listener in self._user_listeners:
            listener(None)
        self._generation += 1
        self._reads.forget_reads()
        self._positive.clear()
        self._by_user.clear()
        self._negative.clear()

    def _prune_negative(self, now: float) -> None:
        for key_hash in [h for h, until in self._negative.items() if until <= now]:
            del self._negative[key_hash]

    def _prune(self, now: float) -> None:
        for key_hash in [h for h, e in self._positive.items() if e[3] <= now or e[2] <= now]:
            self._drop(key_hash)
        self._prune_negative(now)

    def _apply(self, message: _Invalidation) -> None:
        self._generation += 1
        self._reads.forget_reads()  # a read that started before this message may have read the old state
        for key_hash in message.hashes:
            self._drop(key_hash)
        if message.user_id is not None:
            self._drop_user(message.user_id)
            for listener in self._user_listeners:
                listener(message.user_id)

    # --- invalidation over pub/sub ----------------------------------------------------------------------

    async def announce_revoked(self, key_hashes: Sequence[str]) -> None:
        """Every replica (this one at once) drops these hashes; also used for new and rotated keys."""
        hashes = list(key_hashes)
        for start in range(0, len(hashes), self.MAX_HASHES_PER_MESSAGE):
            await self._announce(_Invalidation(hashes=hashes[start : start + self.MAX_HASHES_PER_MESSAGE]))

    async def announce_user_changed(self, user_id: uuid.UUID) -> None:
        """Every replica (this one at once) drops every cached key of this user."""
        await self._announce(_Invalidation(user_id=user_id))

    async def _announce(self, message: _Invalidation) -> None:
        self._apply(message)
        try:
            await self._redis.publish(INVALIDATION_CHANNEL, _encode(message))
        except Exception:
            # The change is committed; other replicas learn it when their entries expire (at most 60 s).
            logger.exception("could not publish an api key invalidation")

    def _subscribed_now(self) -> None:
        self._clear()  # messages may have been missed while we were not subscribed
        self._positive_ttl = self.POSITIVE_TTL_SECONDS
        self._subscribed.set()

    def _unsubscribed(self) -> None:
        self._clear()
        self._positive_ttl = self.UNSUBSCRIBED_TTL_SECONDS
        self._subscribed.clear()

    def _on_message(self, data: bytes | str) -> None:
        try:
            message = _decode_invalidation(data)
        except msgspec.DecodeError:
            logger.warning("unreadable api key invalidation message; clearing the cache")
            self._clear()
            return
        self._apply(message)

    async def _listen(self) -> None:
        """Subscribe on a connection of its own; on any error, resubscribe with backoff."""
        loop = asyncio.get_running_loop()
        delay = self.RECONNECT_MIN_SECONDS
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                last_seen = last_ping = loop.time()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if message is not None:
                        last_seen = now
                        kind = message["type"]
                        if kind == "message":
                            self._on_message(message["data"])
                        elif kind == "subscribe":  # also after redis-py reconnects on its own
                            self._subscribed_now()
                            delay = self.RECONNECT_MIN_SECONDS
                    if now - last_seen > 3 * self.KEEPALIVE_SECONDS:
                        raise ConnectionError("no reply on the api key invalidation connection")
                    if now - last_ping >= self.KEEPALIVE_SECONDS:
                        await pubsub.ping("api-keys-keepalive")
                        last_ping = now
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._unsubscribed()
                logger.warning(
                    "api key invalidation listener lost Redis (%s); retrying in %.1f s", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RECONNECT_MAX_SECONDS)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    # --- last used --------------------------------------------------------------------------------------

    async def flush_last_used(self) -> int:
        """Write the recorded last uses with one UPDATE; on failure they are kept for the next attempt."""
        if not self._last_used:
            return 0
        pending, self._last_used = self._last_used, {}
        ordered = sorted(pending.items())  # same row order on every replica
        try:
            async with self._db.engine.begin() as connection:
                uses = [{"id": key_id, "t": at, "ip": ip} for key_id, (at, ip) in ordered]
                await connection.execute(_FLUSH_LAST_USED, {"uses": _encode(uses).decode()})
        except BaseException:
            for key_id, value in pending.items():
                self._last_used.setdefault(key_id, value)  # a newer use recorded meanwhile wins
            raise
        return len(pending)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + self.PRUNE_INTERVAL_SECONDS
        while True:
            await asyncio.sleep(self.FLUSH_INTERVAL_SECONDS)
            try:
                await self.flush_last_used()
            except Exception:
                logger.exception("could not write api key last-used data; will retry")
            if loop.time() >= next_prune:
                self._prune(time.time())
                next_prune = loop.time() + self.PRUNE_INTERVAL_SECONDS
