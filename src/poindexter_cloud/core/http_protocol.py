"""uvicorn's httptools protocol, with the writes of one event-loop pass sent in one system call.

uvicorn writes an answer's head as soon as the app starts the response and its body as soon as the app sends
it: two system calls, and two segments for the client to read, for every small answer. Here a connection's
writes wait for the end of the current event-loop pass (``call_soon``) and leave together; a stream's events
still leave as they come, at most one pass later.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _PassWrites:
    """The connection's transport as uvicorn sees it: ``write`` holds data until the end of the pass, and
    ``close`` sends what is held first; everything else is the real transport's."""

    __slots__ = ("held", "loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.held:
            self.loop.call_soon(self.flush)
        self.held.append(data)

    def flush(self) -> None:
        held, self.held = self.held, []
        if held and not self.transport.is_closing():
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class PassWritesProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writes = _PassWrites(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, writes))
