"""The long-lived clients one process shares: database, Redis and the job queue."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from poindexter_cloud.core.db import Database, UnitOfWork
from poindexter_cloud.core.queue import JobQueue
from poindexter_cloud.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    db: Database
    redis: Redis
    queue: JobQueue

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        db = Database.from_url(settings.database_url, settings.db_pool_size)
        # A blocking pool: a burst waits briefly for a connection instead of failing with "too many".
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_pool_size,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        redis = Redis(connection_pool=pool)
        queue = JobQueue(
            settings.redis_url,
            max_attempts=settings.job_max_attempts,
            retry_delay_seconds=settings.job_retry_delay_seconds,
            name=settings.queue_name,
        )
        await queue.connect()
        return cls(settings, db, redis, queue)

    async def close(self) -> None:
        """Close everything, even while Redis is unreachable (SAQ's disconnect then fails): a process
        stopped during an outage still releases its database connections."""
        try:
            await self.queue.disconnect()
        except (OSError, RedisError) as exc:
            log.warning("could not disconnect the job queue: %s", exc)
        await self.redis.aclose()
        await self.db.dispose()

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """One transaction whose deferred jobs reach the queue after it commits."""
        return self.db.unit_of_work(self.queue)
