"""``Idempotency-Key`` on the endpoints that take it (sending messages), as Telnyx documents it: a key of 1 to
255 letters, digits, ``-``, ``_`` or ``:``; a record per key, method and path (the organization is the
sandbox's one); only successful answers are replayed, for 24 hours; the same key with other query parameters
or another body (compared byte for byte) is 422 while the record lives; a retry while the first request is
still being processed is 409 ``10036``."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final

from .errors import TelnyxError

KEY: Final = re.compile(r"^[A-Za-z0-9_:-]{1,255}$")
TTL_SECONDS: Final = 24 * 3600


@dataclass(slots=True)
class Record:
    fingerprint: tuple[bytes, bytes]  # (query string, body)
    created: float
    body: Any = None  # the successful answer, once there is one


class Keys:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str, str], Record] = {}

    def reset(self) -> None:
        self.records.clear()

    def claim(self, key: str, method: str, path: str, fingerprint: tuple[bytes, bytes]) -> Record:
        """The record for this request: a replay when it has a body, else a fresh claim to ``complete`` or
        ``release``. Raises Telnyx's error for a malformed, mismatched or busy key."""
        if not KEY.match(key):
            raise TelnyxError(
                422,
                "10015",
                "Bad Request",
                "The Idempotency-Key header must be 1 to 255 letters, numbers, hyphens, underscores or "
                "colons.",
            )
        now = time.time()
        slot = (key, method, path)
        record = self.records.get(slot)
        if record is not None and now - record.created > TTL_SECONDS:
            record = None
        if record is None:
            record = self.records[slot] = Record(fingerprint, now)
            return record
        if record.fingerprint != fingerprint:
            raise TelnyxError(
                422,
                "10015",
                "Bad Request",
                f"The Idempotency-Key '{key}' was already used with other parameters or another body.",
            )
        if record.body is None:
            raise TelnyxError(
                409,
                "10036",
                "Request in progress",
                "A request with the same Idempotency-Key is still being processed. Retry later with the same "
                "key and request.",
            )
        return record

    def release(self, key: str, method: str, path: str, record: Record) -> None:
        """Forget a claim whose request failed: only successful answers are kept."""
        if self.records.get((key, method, path)) is record:
            del self.records[(key, method, path)]


KEYS: Final = Keys()
