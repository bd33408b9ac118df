"""uvicorn's httptools protocol, with a whole answer's head and body sent in one system call.

uvicorn writes an answer's head as soon as the app starts the response and its body as soon as the app sends
it: two system calls, and two segments for the client to read, for every small answer. Here the head of an
answer with a ``content-length`` (a whole one, whose body follows within the same event-loop pass) waits
for the end of the pass (``call_soon``), taking along whatever is written meanwhile. Everything else, a
stream's head and events included, is written at once as uvicorn does: nothing of a stream waits.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _PassWrites:
    """The connection's transport as uvicorn sees it: ``write`` holds a whole answer's head (and what
    follows it) until the end of the pass, ``close`` sends what is held first; everything else is the real
    transport's."""

    __slots__ = ("held", "loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if self.held:
            self.held.append(data)
        elif data.startswith(b"HTTP/") and b"\r\ncontent-length:" in data:  # uvicorn lowercases names
            self.held.append(data)
            self.loop.call_soon(self.flush)
        else:
            self.transport.write(data)

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
