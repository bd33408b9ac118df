"""The webhook delivery machinery the simulators share (Stripe's and Telnyx's ``webhooks.py`` build on it).

A :class:`DeliveryQueue` works its queue of jobs one at a time, in order, in a background task on the
sandbox's event loop (woken by new work; an event emitted off the loop, from another thread, is handed to
the loop it last ran on). A failed job that the provider retries waits on a timer (:meth:`later`), so a
retry does not hold back later jobs. ``reset`` bumps a generation: work begun before it stops, and what it
was sending is neither recorded nor retried. Delivery modes: ``normal``; ``duplicate`` sends each job twice
(the copy is never retried); ``hold`` (and ``reverse``, where the provider has it) keeps what arrives in
``held`` until the provider's flush, which ``reverse`` releases newest first.

The provider says what a job is and what it POSTs (:meth:`DeliveryQueue.signed_post`: its URL, body and signed
headers), how an attempt is described in ``deliveries`` (:meth:`~DeliveryQueue.describe`), and what
follows a success or a failure (its retry schedule).
"""

from __future__ import annotations

import asyncio
import copy
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import aiohttp


class DeliveryJob(Protocol):
    """What the queue needs of a provider's job: whether it is the copy ``duplicate`` mode adds."""

    duplicate: bool


JobT = TypeVar("JobT", bound=DeliveryJob)
HeldT = TypeVar("HeldT")


@dataclass(slots=True, frozen=True)
class SignedPost:
    """One attempt's POST, signed at ``signed_at`` (unix seconds)."""

    url: str
    body: str
    headers: dict[str, str]
    signed_at: int


class DeliveryQueue(ABC, Generic[JobT, HeldT]):
    default_timeout_seconds: ClassVar[float]

    def __init__(self) -> None:
        self.generation = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: set[asyncio.TimerHandle] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reset()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop deliveries run on when an event comes from another thread."""
        self.loop = loop

    def reset(self) -> None:
        self.generation += 1
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.mode = "normal"
        self.retry_base_seconds = 1.0
        self.timeout_seconds = self.default_timeout_seconds
        self.queue: deque[JobT] = deque()
        self.held: list[HeldT] = []
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=2000)
        self.running = False

    # -- what the provider decides

    @abstractmethod
    def signed_post(self, job: JobT) -> SignedPost:
        """The POST of this attempt, signed now."""

    @abstractmethod
    def describe(self, job: JobT) -> dict[str, Any]:
        """The attempt's entry in ``deliveries``, before its outcome (status, error, signed_at, seconds)."""

    def delivered(self, job: JobT) -> None:
        """The endpoint took the job (a 2xx answer)."""

    @abstractmethod
    def failed(self, job: JobT) -> None:
        """The endpoint did not take the job (not a duplicate): retry it, or give up."""

    # -- intake

    def holding(self) -> bool:
        return self.mode in ("hold", "reverse")

    def copies(self, job: JobT) -> list[JobT]:
        """The jobs that deliver ``job``: itself, and in ``duplicate`` mode a copy sent right after it."""
        if self.mode != "duplicate":
            return [job]
        twin = copy.copy(job)
        twin.duplicate = True
        return [job, twin]

    def submit(self, jobs: Iterable[JobT]) -> None:
        self.queue.extend(jobs)
        self.wake()

    def release(self) -> list[HeldT]:
        """Empty ``held``, returning what it held in the order to deliver it (newest first in ``reverse``)."""
        held, self.held = self.held, []
        if self.mode == "reverse":
            held.reverse()
        return held

    def backoff(self, attempt: int) -> float:
        """The wait before retrying after the ``attempt``-th failure: ``retry_base_seconds`` x 2^(n-1)."""
        return self.retry_base_seconds * 2.0 ** (attempt - 1)

    def later(self, delay: float, job: JobT) -> None:
        """Queue ``job`` again after ``delay`` seconds (a timer until then, cancelled by a reset)."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def requeue() -> None:
            if handle is not None:
                self.timers.discard(handle)
            self.submit([job])

        handle = loop.call_later(delay, requeue)
        self.timers.add(handle)

    # -- the worker

    def wake(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self.loop is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.wake)
            return  # without a loop the deliveries wait for the next wake
        self.loop = loop
        if self.running or not self.queue:
            return
        self.running = True
        task = loop.create_task(self.work(self.generation))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def work(self, generation: int) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while self.queue and generation == self.generation:
                    await self.deliver(session, self.queue.popleft(), generation)
        finally:
            if generation == self.generation:
                self.running = False
                if self.queue:
                    self.wake()

    async def deliver(self, session: aiohttp.ClientSession, job: JobT, generation: int) -> None:
        signed = self.signed_post(job)
        status: int | None = None
        error: str | None = None
        started = time.time()
        try:
            async with session.post(
                signed.url, data=signed.body.encode(), headers=signed.headers
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if generation != self.generation:
            return  # the sandbox was reset meanwhile
        self.deliveries.append(
            {
                **self.describe(job),
                "status": status,
                "error": error,
                "signed_at": signed.signed_at,
                "seconds": round(time.time() - started, 4),
            }
        )
        if status is not None and 200 <= status < 300:
            self.delivered(job)
        elif not job.duplicate:
            self.failed(job)

    # -- controls

    def idle(self) -> bool:
        """Nothing being delivered or waiting for a retry (held events aside)."""
        return not self.queue and not self.timers and not self.running
