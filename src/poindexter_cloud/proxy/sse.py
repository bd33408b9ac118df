"""Splitting a server-sent-event byte stream into whole events, without copying more than needed."""

from __future__ import annotations

from collections.abc import Iterator


class EventSplitter:
    """Feed it chunks as they arrive; it yields each complete event block (with its blank-line end)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        data = self._buffer + chunk if self._buffer else chunk
        if b"\r\n" in data:
            data = data.replace(b"\r\n", b"\n")
        start = 0
        while (end := data.find(b"\n\n", start)) != -1:
            yield data[start : end + 2]
            start = end + 2
        self._buffer = data[start:]

    @property
    def pending(self) -> bytes:
        """Bytes of an event not finished yet (relayed as they are if the stream ends there)."""
        return self._buffer


def fields(block: bytes) -> tuple[bytes, bytes]:
    """(event name, data) of one event block; multi-line data is joined with newlines, as SSE says."""
    event = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip()
    return event, b"\n".join(data)
