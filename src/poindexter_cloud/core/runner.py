"""Running several HTTP servers and workers in one event loop, stopping them all on SIGINT or SIGTERM.

Used by ``serve --role all`` and ``dev``. uvicorn's and SAQ's own signal handling is switched off so that
one handler stops everything in order: servers stop accepting, workers finish their jobs, then the caller
stops whatever it started (embedded databases).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from saq import Worker

from poindexter_cloud.core.http_protocol import PassWritesProtocol

log = logging.getLogger(__name__)


class ManagedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to whoever runs it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: Any, host: str, port: int, workers: int = 1) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=workers,
        http=PassWritesProtocol,  # httptools, an answer's head and body in one write
        ws="none",
        lifespan="on",
        access_log=False,  # Observed writes one access line per request, with its request id
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


@dataclass
class Service:
    """A named server to start; ``url`` is printed once it listens."""

    name: str
    app: Any
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def freeze_startup_objects() -> None:
    """What imports and startup made lives as long as the process: after one collection (so no garbage is
    kept), ``gc.freeze`` moves it out of the cyclic collector's reach, and a full collection walks only
    what came since. Measured on the proxy at c=64 (docs/performance.md): p99 122-152 ms before, 41-53 ms
    after (the pauses were full collections over every imported object), throughput unchanged."""
    gc.collect()
    gc.freeze()


async def run_together(
    services: list[Service],
    workers: list[Worker[Any]],
    on_ready: Callable[[], Awaitable[None] | None] | None = None,
) -> int:
    """Run until a signal arrives or any part stops; returns a process exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    servers = [ManagedServer(uvicorn_config(service.app, service.host, service.port)) for service in services]
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(server.serve(), name=s.name) for server, s in zip(servers, services, strict=True)
    ]
    for worker in workers:
        worker.SIGNALS = []
        await worker.queue.connect()
        tasks.append(asyncio.create_task(worker.start(), name="worker"))
    stopper = asyncio.create_task(stop.wait())
    exit_code = 0
    try:
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                log.error("a service failed to start")
                return 1
            await asyncio.sleep(0.05)
        freeze_startup_objects()
        if on_ready is not None:
            result = on_ready()
            if result is not None:
                await result
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            log.error("a service stopped unexpectedly", extra={"service": [t.get_name() for t in done]})
            exit_code = 1
    finally:
        for server in servers:
            server.should_exit = True
        for worker in workers:
            await worker.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, outcome in zip(tasks, results, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                log.error("service ended with an error", extra={"service": task.get_name()}, exc_info=outcome)
        for worker in workers:
            await worker.queue.disconnect()
        stopper.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return exit_code
