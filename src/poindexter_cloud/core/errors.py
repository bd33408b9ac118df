"""The one error shape of the JSON API, and the exception every module's errors derive from.

Every 4xx and 5xx body is ``{"error": {"code", "message", "request_id"[, "details"]}}``; ``code`` is a stable
machine-readable string, ``message`` is for people.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# PostgreSQL or Redis unreachable (down, restarting, the pool exhausted): nothing the caller did wrong, and
# gone in seconds, so the web role and the proxy answer 503 with Retry-After, which clients and providers
# retry, rather than 500.
# Redis: only redis-py's connection failures; any other RedisError (a script's error, a wrong type) is a bug.
REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
DATABASE_DOWN: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)
DEPENDENCY_DOWN: tuple[type[Exception], ...] = (*REDIS_DOWN, *DATABASE_DOWN)
# Redis unreachable through either client: redis-py's errors, or the socket's own (OSError, TimeoutError among
# them), which the proxy's script client (core/redis_scripts.py) raises.
REDIS_UNREACHABLE: tuple[type[Exception], ...] = (*REDIS_DOWN, OSError)
DEPENDENCY_RETRY_AFTER_SECONDS = 5


def outage_text(exc: BaseException) -> str:
    """An unreachable store's error in one log-sized line (drivers' messages run to several)."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    request_id: str | None = None
    details: Any = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class AppError(Exception):
    """A failure the caller can act on. Subclasses set ``status`` and ``code``."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class NotFound(AppError):
    status = 404
    code = "not_found"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class Conflict(AppError):
    status = 409
    code = "conflict"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
