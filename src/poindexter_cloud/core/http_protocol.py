"""uvicorn's httptools protocol, with a whole answer's head and body sent in one system call, and a way for a
handler to learn at once that its client left.

uvicorn writes an answer's head as soon as the app starts the response and its body as soon as the app sends
it: two system calls, and two segments for the client to read, for every small answer. Here the head of an
answer with a ``content-length`` (a whole one, whose body follows within the same event-loop pass) waits
for the end of the pass (``call_soon``), taking along whatever is written meanwhile. Everything else, a
stream's head and events included, is written at once as uvicorn does: nothing of a stream waits.

A handler learns that its client hung up only by calling ``receive``, which it cannot do while it awaits
something else, such as an upstream's answer. ``ClientWatch`` covers such a wait without a task of its own:
while a block runs under it, losing the connection cancels the handler's task, and the block raises
``ClientLeft`` instead of ``CancelledError``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
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


_CONNECTION = "poindexter.connection"  # the scope's extension holding the request's PassWritesProtocol


class PassWritesProtocol(HttpToolsProtocol):
    watcher: asyncio.Task[Any] | None = None  # the handler task to cancel if the connection is lost
    lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writes = _PassWrites(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, writes))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {_CONNECTION: {"protocol": self}}  # ASGI: an extension's value is a dict

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.cancel(_CONNECTION)
        super().connection_lost(exc)


class ClientLeft(Exception):
    """The client's connection was lost during a `ClientWatch` block."""


class ClientWatch:
    """``with ClientWatch(scope):`` around an await: the client hanging up ends the wait with `ClientLeft`,
    and entering after it hung up raises `ClientLeft` at once. Under another server it watches nothing."""

    __slots__ = ("_protocol", "_task")

    def __init__(self, scope: dict[str, Any]) -> None:
        extension = (scope.get("extensions") or {}).get(_CONNECTION)
        self._protocol: PassWritesProtocol | None = extension["protocol"] if extension else None
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        protocol = self._protocol
        if protocol is not None:
            if protocol.lost:
                raise ClientLeft
            protocol.watcher = self._task = asyncio.current_task()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        protocol, task = self._protocol, self._task
        if protocol is None or task is None:
            return
        self._task = None
        if protocol.watcher is task:
            protocol.watcher = None
            return
        # the lost connection cancelled the task: unless something else cancelled it too, the client left
        if task.uncancel() == 0 and kind in (None, asyncio.CancelledError):
            raise ClientLeft from None
