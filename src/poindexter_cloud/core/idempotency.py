"""Idempotency keys for sends: a client that never got the answer to a send can retry it without the
recipient getting the message twice.

A request with an ``Idempotency-Key`` header (1 to 255 printable ASCII characters, one per logical send,
e.g. a UUID) runs once per user and key. A repeat within ``KEEP_SECONDS`` with the same body on the same
route gets the first answer again, marked ``Idempotent-Replayed: true``; with another body or route, 422
``idempotency_key_reused``; while the first is still running, 409 ``idempotency_key_in_use`` (retry
shortly). Only a success is kept: a request that failed (refused as invalid, a provider outage) leaves the
key free, so the retry runs anew.

State in Redis, one string per user and key (the key hashed, so any characters are safe):
``pending:<fingerprint>`` while the first request runs, expiring after ``PENDING_SECONDS`` so that a
process that died mid-request does not hold the key for a day, then ``done:<fingerprint>:<answer as
JSON>``. A send can still happen twice in two cases: retried after its process died mid-send and the
marker expired, or after Redis failed to keep its answer (it is answered all the same). The fingerprint
is a hash of the route and the decoded body, so a body re-serialised with other spacing or key order is
still the same request.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from poindexter_cloud.core.errors import AppError, Conflict

log = logging.getLogger(__name__)

KEEP_SECONDS: Final = 24 * 3600
PENDING_SECONDS: Final = 120  # longer than any send may take (the providers' timeouts)
PREFIX: Final = "poindexter:idempotency:"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")

# Frees the key only if it still holds this request's pending marker.
_RELEASE_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

T = TypeVar("T", bound=msgspec.Struct)


class InvalidIdempotencyKey(AppError):
    code = "invalid_idempotency_key"


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(AppError):
    status = 422
    code = "idempotency_key_reused"


class IdempotencyKeys:
    """Runs a request at most once per user and ``Idempotency-Key``; one per process."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._release = redis.register_script(_RELEASE_LUA)

    async def once(
        self,
        user_id: uuid.UUID,
        key: str | None,
        route: str,
        request: msgspec.Struct,
        answer_type: type[T],
        perform: Callable[[], Awaitable[T]],
    ) -> tuple[T, bool]:
        """``perform()``'s answer, or the one it gave before under this key: (answer, replayed)."""
        if key is None:
            return await perform(), False
        if not _VALID_KEY.fullmatch(key):
            raise InvalidIdempotencyKey(
                "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.",
                details={"header": "Idempotency-Key"},
            )
        name = f"{PREFIX}{user_id.hex}:{hashlib.sha256(key.encode()).hexdigest()}"
        fingerprint = hashlib.sha256(route.encode() + b"\n" + msgspec.json.encode(request)).hexdigest()
        pending = f"pending:{fingerprint}".encode()
        for _ in range(2):  # a second try if the first request's marker expired in between
            if await self._redis.set(name, pending, nx=True, ex=PENDING_SECONDS):
                break
            stored = await self._redis.get(name)
            if stored is not None:
                return _replay(
                    stored if isinstance(stored, bytes) else stored.encode(), fingerprint, answer_type
                ), True
        else:
            raise IdempotencyKeyInUse("A request with this Idempotency-Key is still running; retry shortly.")
        try:
            answer = await perform()
        except BaseException:
            await self._release(keys=[name], args=[pending])
            raise
        done = b"done:%s:%s" % (fingerprint.encode(), msgspec.json.encode(answer))
        try:
            await self._redis.set(name, done, ex=KEEP_SECONDS)
        except RedisError as exc:  # the send happened: answer it; the key frees itself as it expires
            log.warning("could not keep an idempotent answer: %s: %s", type(exc).__name__, exc)
        return answer, False


def _replay(stored: bytes, fingerprint: str, answer_type: type[T]) -> T:
    state, _, rest = stored.partition(b":")
    seen, _, answer = rest.partition(b":")
    if seen.decode() != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used for another request; use a new key for a new request.",
            details={"header": "Idempotency-Key"},
        )
    if state != b"done":
        raise IdempotencyKeyInUse("A request with this Idempotency-Key is still running; retry shortly.")
    return msgspec.json.decode(answer, type=answer_type)
