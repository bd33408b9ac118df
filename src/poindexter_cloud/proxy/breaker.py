"""A circuit breaker per upstream API key: after repeated failures, try the others first for a while."""

from __future__ import annotations

import time
from typing import TypeVar

T = TypeVar("T")


class Breakers:
    def __init__(self, failures_to_open: int, open_seconds: float) -> None:
        self.failures_to_open = failures_to_open
        self.open_seconds = open_seconds
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}

    def is_open(self, key: str) -> bool:
        until = self._open_until.get(key)
        return until is not None and until > time.monotonic()

    def order(self, candidates: list[tuple[T, str]]) -> list[tuple[T, str]]:
        """Closed circuits first, in configured order; open ones last (better than refusing outright)."""
        if not self._open_until:
            return candidates
        return sorted(candidates, key=lambda candidate: self.is_open(candidate[1]))

    def success(self, key: str) -> None:
        if key in self._failures:
            del self._failures[key]
            self._open_until.pop(key, None)

    def failure(self, key: str) -> None:
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        if count >= self.failures_to_open:
            self._open_until[key] = time.monotonic() + self.open_seconds
