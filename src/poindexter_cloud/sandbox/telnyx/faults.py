"""Injected faults (``POST /telnyx/_control/faults``): the next ``count`` API calls matching a method and a
path answer an error status instead of being served, or are held ``delay_seconds`` before being served (a
client with a shorter timeout gives up while the call still takes effect, as when an answer is lost).

A fault matches before authentication, like a failing load balancer; ``path`` is the API path without the
``/telnyx`` prefix, exact or an ``fnmatch`` pattern (``/v2/phone_numbers/*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

from ..fault_queue import take
from .errors import TelnyxError, for_status


@dataclass(slots=True)
class Fault:
    path: str
    method: str | None = None  # None: any method
    count: int = 1
    status: int | None = None  # None: a delay fault
    delay_seconds: float = 0.0
    code: str | None = None
    title: str | None = None
    detail: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and fnmatchcase(path, self.path)

    def error(self) -> TelnyxError:
        assert self.status is not None
        error = for_status(self.status)
        error.code = self.code or error.code
        error.title = self.title or error.title
        error.detail = self.detail or error.detail
        return error

    def view(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "count": self.count,
            "status": self.status,
            "delay_seconds": self.delay_seconds,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        }


class Faults:
    def __init__(self) -> None:
        self.pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.pending.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        """The first pending fault for this call, which it uses up one count of."""
        return take(self.pending, lambda fault: fault.matches(method, path))

    def reset(self) -> None:
        self.pending.clear()


FAULTS: Final = Faults()
