"""Reads of cached entries by key, many to a query: cache misses and background refreshes alike.

The proxy's caches (API keys, plans) read PostgreSQL on a miss, and again in the background for an entry
still in use in the last quarter of its life, so steady traffic never waits for the database. One query
per entry cost the proxy about 0.8 ms of CPU per key and 1.3 ms per plan here (`python
bench/key_verification.py`): paid once a minute for every key and user in use, and, after a restart or a
cache clear, by every request at once, on the event loop every request waits on. Here:

* `read`: the misses of one event-loop pass go out together, one query per ``MAX_BATCH`` keys; a miss for
  a key already being read waits for that read instead of sending its own.
* `refresh`: the entries falling due within ``DELAY_SECONDS`` of each other (and any that fall due while
  a batch is being read) are read in one query, in the background.

``read_many`` reads the given keys, caches what it found itself (it knows its cache's invalidation rules)
and returns it; a key it did not find reads as None. A failed read raises in every miss waiting for it; a
failed refresh is logged and not retried: its entries expire on time, and the next request's miss then
reports the failure to its caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from poindexter_cloud.core.errors import outage_text

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A read's outcome counts as seen even if every waiter left (no "exception never retrieved")."""
    if not future.cancelled():
        future.exception()


class BatchedReads(Generic[K, V]):
    DELAY_SECONDS: float = 0.05  # entries fall due 15 s before they expire: waiting to fill a batch is free
    MAX_BATCH: int = 500

    def __init__(self, read_many: Callable[[list[K]], Awaitable[Mapping[K, V]]], what: str) -> None:
        """``what`` names the entries in logs."""
        self._read_many = read_many
        self._what = what
        self._wanted: dict[K, asyncio.Future[V | None]] = {}  # misses of this pass, not sent yet
        self._reading: dict[K, asyncio.Future[V | None]] = {}  # sent: later misses of the key join them
        self._due: dict[K, None] = {}  # background refreshes waiting for their batch, the oldest first
        self._refresh_timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: K) -> V | None:
        """``key``'s entry, read with the other misses of this event-loop pass."""
        future = self._reading.get(key) or self._wanted.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            if not self._wanted:
                asyncio.get_running_loop().call_soon(self._send_wanted)
            self._wanted[key] = future
            self._due.pop(key, None)
        return await asyncio.shield(future)  # a caller that gives up leaves the read to the others

    def refresh(self, key: K) -> None:
        """Read ``key``'s entry again soon, in the background, with the others due then."""
        if key in self._wanted or key in self._reading:
            return
        self._due[key] = None
        if self._refresh_timer is None:
            self._refresh_timer = asyncio.get_running_loop().create_task(
                self._refresh_later(), name=f"refresh {self._what}"
            )

    def forget_reads(self) -> None:
        """Misses from now on send a read of their own: those in flight may have read what just changed."""
        self._reading.clear()

    async def stop(self) -> None:
        timer, self._refresh_timer = self._refresh_timer, None
        tasks = [*self._tasks, *([timer] if timer is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._due.clear()

    def _send_wanted(self) -> None:
        wanted, self._wanted = self._wanted, {}
        self._send(wanted, background=False)

    async def _refresh_later(self) -> None:
        try:
            await asyncio.sleep(self.DELAY_SECONDS)
            while self._due:
                due, self._due = self._due, {}
                loop = asyncio.get_running_loop()
                futures: dict[K, asyncio.Future[V | None]] = {}
                for key in due:
                    futures[key] = future = loop.create_future()
                    future.add_done_callback(_retrieve)
                await asyncio.gather(*self._send(futures, background=True))
        finally:
            if self._refresh_timer is asyncio.current_task():  # not a newer one started after a stop()
                self._refresh_timer = None

    def _send(
        self, futures: dict[K, asyncio.Future[V | None]], *, background: bool
    ) -> list[asyncio.Task[None]]:
        """Read the keys of ``futures``, ``MAX_BATCH`` to a query, and resolve each future with its entry."""
        self._reading.update(futures)
        keys = list(futures)
        sent = []
        for start in range(0, len(keys), self.MAX_BATCH):
            batch = {key: futures[key] for key in keys[start : start + self.MAX_BATCH]}
            task = asyncio.get_running_loop().create_task(self._read(batch, background))
            self._tasks.add(task)  # a strong reference until it is done, even if every waiter left
            task.add_done_callback(self._tasks.discard)
            sent.append(task)
        return sent

    async def _read(self, futures: dict[K, asyncio.Future[V | None]], background: bool) -> None:
        try:
            found = await self._read_many(list(futures))
        except BaseException as exc:
            if background and isinstance(exc, Exception):
                log.warning("could not refresh %d cached %s: %s", len(futures), self._what, outage_text(exc))
            for future in futures.values():
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for key, future in futures.items():
                if not future.done():
                    future.set_result(found.get(key))
        finally:
            for key, future in futures.items():
                if self._reading.get(key) is future:
                    del self._reading[key]
