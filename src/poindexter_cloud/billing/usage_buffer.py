"""The usage buffer: usage events go to a Redis stream on the request path, and the worker drains them into
PostgreSQL's usage_events, so no request waits on (or fails with) the database.

Guarantees, and what gives them:

* **A completed request's event survives a proxy SIGKILL**: the producer adds the event to the stream
  before the response's last byte is sent (the proxy: its bytes are in the kernel, on their way to Redis,
  before a whole answer's first byte); from then on it lives in Redis (which must persist with AOF for
  the buffer to survive a *Redis* restart too).
* **A PostgreSQL outage loses nothing**: the drain acknowledges entries only after the transaction holding
  their rows has committed. A failed insert leaves them pending in the consumer group; the same consumer
  re-reads its pending entries first on its next pass, and entries of a consumer that died are reclaimed
  with XAUTOCLAIM once idle for ``claim_idle_ms``.
* **Nothing is counted twice**: an entry can be delivered again (a crash between commit and XACK, a slow
  consumer whose entries were reclaimed), so the insert is ``ON CONFLICT DO NOTHING`` on (request_id,
  attempt, created_at); created_at comes from the producer's ``created_at_us``, so a repeat hits the same
  partition and the same key.
* **A bad entry never blocks the drain**: entries that cannot be decoded, or whose row PostgreSQL refuses
  as data (not as an outage), are moved to the dead-letter stream ``<stream>:dead`` and acknowledged.

Wire format (for producers that XADD themselves, such as the proxy's settle script in Lua)
-------------------------------------------------------------------------------------------

* stream: ``poindexter:usage-events`` (``STREAM``); consumer group ``usage-drain`` (``GROUP``), created by
  the drain with ``XGROUP CREATE ... 0 MKSTREAM``, so entries added before it exists are drained too;
* entry id: ``*`` (server-assigned; its millisecond part is what ``oldest_pending_age_seconds`` measures);
* exactly one field, ``e`` (``FIELD``), whose value is the event as **UTF-8 JSON** produced by
  ``encode(record)`` (msgspec), an object with the keys of ``UsageRecord``::

      {"request_id": "req_...", "attempt": 0, "user_id": "<uuid>", "api_key_id": "<uuid>" | null,
       "event_type": "ai_request", "model": "claude-sonnet-4-5" | null, "provider": "anthropic" | null,
       "usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                 "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0},
       "cost_microdollars": 0, "latency_ms": 0, "status": 200, "estimated": false,
       "created_at_us": 1795000000000000, "price_version": "2026-11-01"}

  UUIDs are canonical hyphenated strings; integers are JSON integers (created_at_us < 2^53, so Lua's cjson
  could read it too). Unknown keys are ignored by the drain, so fields may be added (with defaults) before
  every drainer is upgraded.
* never trim the stream (no MAXLEN/MINID on XADD): an unacknowledged event would be lost. The drain deletes
  each entry (XDEL) in the same MULTI as its XACK, so the stream's length is the backlog.

In Lua (the encoded bytes passed as an argument, the stream as a key)::

    redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Annotated, Any, Final, NamedTuple
from uuid import UUID

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy.exc import DataError, IntegrityError

from poindexter_cloud.billing.pricing import TokenUsage
from poindexter_cloud.billing.usage import created_at_of, insert_usage_records
from poindexter_cloud.core.db import Database
from poindexter_cloud.core.metrics import USAGE_EVENTS_DRAINED

log = logging.getLogger(__name__)

STREAM: Final = "poindexter:usage-events"
GROUP: Final = "usage-drain"
FIELD: Final = b"e"
DEAD_SUFFIX: Final = ":dead"
DEAD_LETTER_MAXLEN: Final = 100_000  # approximate; a flood of garbage must not fill Redis's memory

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class UsageRecord(msgspec.Struct, frozen=True):
    """One usage event: one upstream attempt of a proxied request, or one metered action of another module.

    ``created_at_us`` (epoch microseconds) is set by the producer, once: it picks the partition and, with
    ``request_id`` and ``attempt``, is the key that makes a re-delivered event a no-op.
    """

    request_id: NonEmpty
    attempt: NonNegative
    user_id: UUID
    api_key_id: UUID | None
    event_type: NonEmpty  # "ai_request" from the proxy; "email_sent", "sms_sent", ... from other modules
    model: str | None
    provider: str | None
    usage: TokenUsage
    cost_microdollars: NonNegative
    latency_ms: NonNegative
    status: NonNegative  # the HTTP status the client got
    estimated: bool  # True when we counted the output ourselves because the stream was cut
    created_at_us: NonNegative
    price_version: str


def usage_record(user_id: UUID, event_type: str, key: str, provider: str, at: float) -> UsageRecord:
    """A metered message (not an AI request): no tokens, no cost, ``key`` fixed by the message so a repeat
    is stored once."""
    return UsageRecord(
        request_id=key,
        attempt=0,
        user_id=user_id,
        api_key_id=None,
        event_type=event_type,
        model=None,
        provider=provider,
        usage=TokenUsage(),
        cost_microdollars=0,
        latency_ms=0,
        status=0,
        estimated=False,
        created_at_us=int(at * 1_000_000),
        price_version="",
    )


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(UsageRecord)


def encode(record: UsageRecord) -> bytes:
    """The value of field ``e`` of a stream entry (UTF-8 JSON)."""
    return _ENCODER.encode(record)


def decode(data: bytes | str) -> UsageRecord:
    """Parse and validate an entry's ``e`` value; ``msgspec.DecodeError`` (or ``OverflowError`` for an
    instant outside the years we can store) if it is not a usable event."""
    record = _DECODER.decode(data)
    created_at_of(record.created_at_us)
    return record


def stream_for(queue_name: str) -> str:
    """The deployment's stream: it shares the queue's namespace, so two deployments (or two test runs)
    sharing one Redis never drain each other's events. The default queue name gives ``STREAM``."""
    return f"{queue_name}:usage-events"


def dead_letter_stream(stream: str) -> str:
    return stream + DEAD_SUFFIX


class UsageBuffer:
    """The producer side, for modules that meter from Python (the proxy adds entries in its own Lua)."""

    def __init__(self, redis: Redis, stream: str = STREAM) -> None:
        self._redis = redis
        self.stream = stream

    async def push(self, record: UsageRecord) -> None:
        """Add one event; once this returns the event is in Redis and the drain will store it."""
        await self._redis.xadd(self.stream, {FIELD: encode(record)})

    async def depth(self) -> int:
        """Events not yet acknowledged (read or not): the drain deletes entries as it acknowledges them."""
        return int(await self._redis.xlen(self.stream))

    async def oldest_pending_age_seconds(self) -> float | None:
        """Age of the oldest unacknowledged event by Redis's own clock (entry ids are its milliseconds), or
        None when the buffer is empty."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.xrange(self.stream, "-", "+", count=1)
            (seconds, micros), oldest = await pipe.execute()
        if not oldest:
            return None
        added_ms = int(_text(oldest[0][0]).split("-", 1)[0])
        now_ms = int(seconds) * 1000 + int(micros) / 1000
        return max(0.0, (now_ms - added_ms) / 1000)


# --- the drain -------------------------------------------------------------------------------------------

Entry = tuple[bytes, dict[Any, Any] | None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(response: Any) -> list[Entry]:
    """XREADGROUP's reply as (id, fields) pairs, for RESP2 (a list) and RESP3 (a dict) alike."""
    if not response:
        return []
    streams = response.values() if isinstance(response, dict) else (entries for _name, entries in response)
    found: list[Entry] = []
    for entries in streams:
        for entry in entries:
            found.append((entry[0], entry[1] or None))
    return found


async def _ensure_group(redis: Redis, stream: str, group: str) -> None:
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _reclaim(
    redis: Redis, stream: str, group: str, consumer: str, batch: int, idle_ms: int
) -> list[Entry]:
    """Entries of consumers that read them and then went quiet for ``idle_ms`` (crashed, or stuck)."""
    cursor: bytes | str = "0-0"
    for _ in range(10):  # XAUTOCLAIM scans at most 10 x count pending entries per call
        reply = await redis.xautoclaim(stream, group, consumer, idle_ms, start_id=cursor, count=batch)
        cursor, claimed = reply[0], reply[1]
        entries = [(entry[0], entry[1] or None) for entry in claimed]
        if entries or _text(cursor) == "0-0":
            return entries
    return []


async def _read(
    redis: Redis,
    stream: str,
    group: str,
    consumer: str,
    batch: int,
    claim_idle_ms: int,
    block_ms: int | None,
    recover: bool = True,
) -> list[Entry]:
    # With ``recover`` (every direct call; the drainer after a failed pass and now and then):
    # 1. Our own pending entries: read before, not acknowledged (e.g. the database was down). Retried first,
    #    so an outage holds at most one batch in flight and the rest waits, unread, in the stream.
    # 2. Entries another consumer read and never acknowledged.
    if recover:
        entries = _entries(await redis.xreadgroup(group, consumer, {stream: "0"}, count=batch))
        if entries:
            return entries
        entries = await _reclaim(redis, stream, group, consumer, batch, claim_idle_ms)
        if entries:
            return entries
    # 3. New entries, waiting up to block_ms for some to arrive.
    return _entries(
        await redis.xreadgroup(group, consumer, {stream: ">"}, count=batch, block=block_ms or None)
    )


class _Dead(msgspec.Struct, frozen=True):
    entry_id: bytes
    raw: bytes
    error: str


async def _insert(db: Database, records: Sequence[UsageRecord]) -> int:
    async with db.unit_of_work() as uow:
        inserted = await insert_usage_records(uow.session, records)
        await uow.commit()
    return inserted


async def _insert_one_by_one(
    db: Database, decoded: Sequence[tuple[bytes, bytes, UsageRecord]]
) -> tuple[int, list[_Dead]]:
    """After PostgreSQL refused a batch *as data*, find the culprits: each record in its own transaction.

    Only data and integrity errors mark a record dead; anything else (an outage) propagates, and records
    already inserted here are skipped as conflicts when the batch is retried.
    """
    inserted = 0
    dead: list[_Dead] = []
    for entry_id, raw, record in decoded:
        try:
            inserted += await _insert(db, [record])
        except (DataError, IntegrityError) as exc:
            dead.append(_Dead(entry_id, raw, f"refused by PostgreSQL: {exc.orig or exc}"))
    return inserted, dead


async def _settle(
    redis: Redis, stream: str, group: str, entry_ids: Sequence[bytes], dead: Sequence[_Dead]
) -> None:
    """Dead-letter, acknowledge and delete in one MULTI: never acknowledged without its dead letter, and
    never acknowledged but left in the stream (which would skew ``depth``)."""
    async with redis.pipeline(transaction=True) as pipe:
        for letter in dead:
            pipe.xadd(
                dead_letter_stream(stream),
                {b"e": letter.raw, b"id": letter.entry_id, b"error": letter.error[:1000]},
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        pipe.xack(stream, group, *entry_ids)
        pipe.xdel(stream, *entry_ids)
        await pipe.execute()


async def drain_once(
    redis: Redis,
    db: Database,
    consumer: str,
    batch: int = 500,
    claim_idle_ms: int = 30000,
    *,
    stream: str = STREAM,
    group: str = GROUP,
    block_ms: int | None = None,
    recover: bool = True,
) -> Drained:
    """Move one batch from the stream into usage_events.

    With ``recover``, reads this consumer's own unacknowledged entries first, else reclaims those of
    consumers idle for ``claim_idle_ms``; then (or without it) reads new ones, waiting up to ``block_ms``
    if given. The batch is inserted in one transaction and acknowledged only after it commits; if the
    insert raises (PostgreSQL down), the error propagates and nothing is acknowledged. ``consumer``
    should be unique per process.
    """
    if recover:
        await _ensure_group(redis, stream, group)
    entries = await _read(redis, stream, group, consumer, batch, claim_idle_ms, block_ms, recover)
    if not entries:
        return Drained(0, 0)
    decoded: list[tuple[bytes, bytes, UsageRecord]] = []
    dead: list[_Dead] = []
    for entry_id, fields in entries:
        # A client made with decode_responses=True hands back str keys; either way the event is read.
        raw = (fields.get(FIELD) or fields.get(FIELD.decode())) if fields else None
        if raw is None:
            dead.append(_Dead(entry_id, b"", "entry has no 'e' field (or was deleted)"))
            continue
        data: bytes = raw.encode() if isinstance(raw, str) else raw
        try:
            decoded.append((entry_id, data, decode(data)))
        except (msgspec.DecodeError, OverflowError) as exc:
            dead.append(_Dead(entry_id, data, f"undecodable: {exc}"))
    inserted = 0
    if decoded:
        try:
            inserted = await _insert(db, [record for _id, _raw, record in decoded])
        except (DataError, IntegrityError):
            log.warning(
                "PostgreSQL refused a usage batch as data; inserting its %d events one by one", len(decoded)
            )
            inserted, refused = await _insert_one_by_one(db, decoded)
            dead.extend(refused)
    for letter in dead:
        log.error(
            "usage event moved to the dead-letter stream",
            extra={
                "entry_id": _text(letter.entry_id),
                "error": letter.error,
                "dead_letter": dead_letter_stream(stream),
            },
        )
    await _settle(redis, stream, group, [entry_id for entry_id, _fields in entries], dead)
    return Drained(len(entries), inserted)


class Drained(NamedTuple):
    """One pass of ``drain_once``: the stream entries it took, and the rows new to usage_events."""

    entries: int
    inserted: int


async def prune_idle_consumers(
    redis: Redis, keep: str, idle_ms: int = 3_600_000, *, stream: str = STREAM, group: str = GROUP
) -> int:
    """Forget consumers (old worker processes) that own no pending entries and were idle for ``idle_ms``;
    deleting such a consumer loses nothing, and it keeps the group's consumer list from growing forever."""
    pruned = 0
    for info in await redis.xinfo_consumers(stream, group):
        name = _text(info["name"])
        if name != keep and int(info["pending"]) == 0 and int(info["idle"]) >= idle_ms:
            await redis.xgroup_delconsumer(stream, group, name)
            pruned += 1
    return pruned


class UsageDrainer:
    """The worker's long-running drain: loops ``drain_once``, blocking up to a second on an empty stream so
    events reach PostgreSQL within about a second; on any error it backs off (up to 5 s) and keeps going.

    Cheap per event under load: after a pass that found less than a full batch it waits ``GATHER_SECONDS``
    for more to arrive (one transaction for many events rather than one each), and it looks for its own
    and dead consumers' unacknowledged entries only when it starts, after a failed pass, and every
    ``RECOVER_INTERVAL_SECONDS``, not on every pass (those are two more Redis round trips each)."""

    BLOCK_MS: int = 1000
    GATHER_SECONDS: float = 0.2
    RECOVER_INTERVAL_SECONDS: float = 10.0
    BACKOFF_MIN_SECONDS: float = 0.1
    BACKOFF_MAX_SECONDS: float = 5.0
    PRUNE_INTERVAL_SECONDS: float = 600.0
    STOP_GRACE_SECONDS: float = 3.0

    def __init__(
        self,
        redis: Redis,
        db: Database,
        consumer_name: str,
        *,
        stream: str = STREAM,
        group: str = GROUP,
        batch: int = 500,
        claim_idle_ms: int = 30000,
    ) -> None:
        self._redis = redis
        self._db = db
        self.consumer_name = consumer_name
        self.stream = stream
        self.group = group
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self.inserted_total = 0

    async def run(self) -> None:
        """Drain until ``stop``; never raises (except when cancelled). A drainer runs once: after ``stop``,
        make a new one."""
        self._task = asyncio.current_task()
        self._stopped.clear()
        delay = self.BACKOFF_MIN_SECONDS
        next_prune = time.monotonic() + 60.0
        next_recover = 0.0  # at once: entries a previous run left pending
        try:
            while not self._stopping.is_set():
                try:
                    recover = time.monotonic() >= next_recover
                    drained = await drain_once(
                        self._redis,
                        self._db,
                        self.consumer_name,
                        self.batch,
                        self.claim_idle_ms,
                        stream=self.stream,
                        group=self.group,
                        block_ms=self.BLOCK_MS,
                        recover=recover,
                    )
                    self.inserted_total += drained.inserted
                    USAGE_EVENTS_DRAINED.inc(drained.inserted)
                    if recover:
                        next_recover = time.monotonic() + self.RECOVER_INTERVAL_SECONDS
                    delay = self.BACKOFF_MIN_SECONDS
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + self.PRUNE_INTERVAL_SECONDS
                        await prune_idle_consumers(
                            self._redis, self.consumer_name, stream=self.stream, group=self.group
                        )
                    if 0 < drained.entries < self.batch:
                        with suppress(TimeoutError):  # gather a bigger batch; stop() ends the wait
                            await asyncio.wait_for(self._stopping.wait(), self.GATHER_SECONDS)
                except Exception as exc:
                    next_recover = 0.0  # the failed batch is pending: read it again first
                    log.warning(
                        "usage drain failed (%s: %s); retrying in %.1f s",
                        type(exc).__name__,
                        exc,
                        delay,
                        exc_info=delay == self.BACKOFF_MIN_SECONDS,  # the traceback once per outage
                    )
                    with suppress(TimeoutError):  # stop() ends the back-off early
                        await asyncio.wait_for(self._stopping.wait(), delay)
                    delay = min(delay * 2, self.BACKOFF_MAX_SECONDS)
        finally:
            self._task = None
            self._stopped.set()

    async def stop(self) -> None:
        """Let the current pass finish (at most the 1 s block plus an insert), then return; a pass still
        running after the grace period is cancelled, which is safe: unacknowledged entries are re-read."""
        self._stopping.set()  # also when run() has not started yet: it then returns at once
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(self._stopped.wait(), self.STOP_GRACE_SECONDS)
        except TimeoutError:
            task.cancel()
            await asyncio.wait([task])
