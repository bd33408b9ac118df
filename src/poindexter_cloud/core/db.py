"""SQLAlchemy 2 async engine, the declarative base every module's models share, and the unit of work.

A request or job opens one ``UnitOfWork``, lets services add to its session (services never commit), and
commits once. Jobs asked for during the unit of work are written to ``job_history`` in the same
transaction and handed to the queue only after the commit succeeds (see ``core.queue``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import DateTime

from poindexter_cloud.core.errors import REDIS_UNREACHABLE

if TYPE_CHECKING:
    from poindexter_cloud.core.queue import JobQueue

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), uuid.UUID: UUID(as_uuid=True)}


def uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, server_default=func.gen_random_uuid())


def created_at() -> Mapped[datetime]:
    return mapped_column(server_default=func.now(), nullable=False)


def updated_at() -> Mapped[datetime]:
    return mapped_column(server_default=func.now(), onupdate=func.now(), nullable=False)


def advisory_lock_key(name: str) -> ColumnElement[int]:
    """The 64-bit key of the advisory lock called ``name`` (``pg_advisory_xact_lock`` and friends)."""
    return func.hashtextextended(name, 0)


def make_engine(database_url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


class Database:
    """The engine and session factories of one process.

    ``reads`` (and ``autocommit``, the same for Core) run each statement on its own, outside a transaction:
    no BEGIN before it and no ROLLBACK when the session closes, two PostgreSQL round trips fewer, for the
    lone SELECTs of the proxy's caches. Never for writes that must happen together.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.reads = async_sessionmaker(self.autocommit, expire_on_commit=False)

    @classmethod
    def from_url(cls, database_url: str, pool_size: int = 10) -> Database:
        return cls(make_engine(database_url, pool_size))

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def unit_of_work(self, queue: JobQueue | None = None) -> AsyncIterator[UnitOfWork]:
        async with self.sessions() as session:
            uow = UnitOfWork(session, queue)
            try:
                yield uow
            except BaseException:
                await session.rollback()
                raise


class UnitOfWork:
    """One transaction, plus the jobs to enqueue once it has committed."""

    def __init__(self, session: AsyncSession, queue: JobQueue | None) -> None:
        self.session = session
        self._queue = queue
        self._pending_jobs: list[tuple[uuid.UUID, str, dict[str, Any], dict[str, str]]] = []
        self._after_commit: list[Callable[[], Awaitable[None]]] = []

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` once the transaction has committed (e.g. announce a revocation to replicas)."""
        self._after_commit.append(callback)

    async def defer_job(self, function: str, **kwargs: Any) -> uuid.UUID:
        """Record a job in this transaction; it reaches the queue only if the transaction commits."""
        from poindexter_cloud.core.observe import job_origin
        from poindexter_cloud.core.queue import record_pending_job

        origin = job_origin()
        job_id = await record_pending_job(self.session, function, kwargs, origin)
        self._pending_jobs.append((job_id, function, kwargs, origin))
        return job_id

    async def commit(self) -> None:
        await self.session.commit()
        pending, self._pending_jobs = self._pending_jobs, []
        callbacks, self._after_commit = self._after_commit, []
        if self._queue is not None:
            for job_id, function, kwargs, origin in pending:
                # With Redis away the job is safe in job_history: the outbox sweep enqueues a row left
                # pending. So what committed still succeeds; failing it would make a client, or a
                # provider's webhook, retry what is already done (and Telnyx gives up after three tries).
                try:
                    await self._queue.enqueue(job_id, function, kwargs, origin)
                except REDIS_UNREACHABLE as exc:
                    log.warning(
                        "job left to the outbox sweep (%s: %s)",
                        type(exc).__name__,
                        exc,
                        extra={"job": function, "job_id": str(job_id)},
                    )
        for callback in callbacks:
            await callback()
