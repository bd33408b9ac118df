"""Injected faults (``POST /signal/_control/faults``), applied before an API call reaches its handler.

* ``error``: 500 with an empty body, what gin's panic recovery answers.
* ``timeout``: the call hangs ``seconds`` (signal-cli stuck talking to Signal), then answers what
  signal-cli-rest-api answers when it kills signal-cli: 400 ``process killed as timeout reached``. A client
  with a shorter timeout sees its own timeout.
* ``rate_limit``: Signal answers a registration with ``status`` (413 or 429); signal-cli reports it, 400.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from litestar import Request, Response

from .registration import rate_limited
from .store import STATE
from .wire import error

KINDS: Final = ("error", "timeout", "rate_limit")
TIMEOUT_MESSAGE: Final = "process killed as timeout reached"
CONTROL_PREFIX: Final = "/signal/_control"

# The calls hanging in a ``timeout`` fault, each on its own event.
_hanging: set[asyncio.Event] = set()


def cancel_waits() -> None:
    """Release the calls hanging in a ``timeout`` fault (on reset), so a server can stop without waiting."""
    for released in _hanging:
        released.set()


async def _hang(seconds: float) -> None:
    """Sleep ``seconds``, or until a reset."""
    released = asyncio.Event()
    _hanging.add(released)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), seconds)
    finally:
        _hanging.discard(released)


async def inject(request: Request[Any, Any, Any]) -> Response[bytes] | None:
    """The ``before_request`` hook of the Signal router: the fault this call suffers, or None to go on."""
    path = request.scope["path"]
    if path.startswith(CONTROL_PREFIX):
        return None
    fault = STATE.take_fault(request.method, path.removeprefix("/signal"))
    if fault is None:
        return None
    if fault.kind == "error":
        return Response(content=b"", status_code=500, media_type=None)
    if fault.kind == "timeout":
        await _hang(fault.seconds)
        return error(TIMEOUT_MESSAGE)
    return error(rate_limited(fault.status))
