"""Provisioning's jobs: provision, deprovision, suspend and resume identities, register them on Signal, act on
Telnyx's inbound SMS, keep Signal accounts alive, and the cron that moves every identity along.

Multi-step jobs commit after each step (``lifecycle``): a retry resumes from the last commit. A provider
that is unavailable fails the job (SAQ retries it with backoff) after noting the error on the identity; one
that refuses for good marks the identity failed (provisioning) or leaves the error for an operator.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from poindexter_cloud.billing import service as billing
from poindexter_cloud.billing.usage_buffer import UsageBuffer, stream_for
from poindexter_cloud.core.crypto import SealBroken
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.metrics import PROVISIONING_STEPS, cached
from poindexter_cloud.core.queue import background, cron, job
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.identity import service as identities
from poindexter_cloud.integrations.clients import CLIENTS
from poindexter_cloud.integrations.errors import (
    ProviderError,
    ProviderRefused,
    ProviderUnavailable,
    SignalNotRegistered,
)
from poindexter_cloud.integrations.signal import SignalAdapter
from poindexter_cloud.provisioning import inbound, lifecycle, service, signal_registration
from poindexter_cloud.provisioning.lifecycle import Progress, Providers, StepResult
from poindexter_cloud.webhooks import service as webhooks

log = logging.getLogger(__name__)

WAIT_FIRST_SECONDS: Final = 0.05
WAIT_MAX_SECONDS: Final = 2.0
WAIT_LIMIT_SECONDS: Final = 120.0  # a number order still pending after this: the job retries later
KEEPALIVE_CONCURRENCY: Final = 8
ERROR_TEXT_LIMIT: Final = 500

Step = Callable[[UnitOfWork, Providers, uuid.UUID], Awaitable[StepResult]]


class _HeldClients:
    """The worker's hold on the process's provider clients (``integrations.clients``): shared by every job,
    closed when the worker stops (unless a web role of the same process still holds them)."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        async with CLIENTS.held():
            await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()


@background
def provider_clients(resources: Resources) -> _HeldClients:
    """The worker's hold on the process's provider clients, released when it stops."""
    return _HeldClients()


async def providers(settings: Settings) -> Providers:
    """The process's provider clients, as provisioning's steps take them."""
    clients = CLIENTS.get(settings)
    return Providers(await clients.google(), clients.telnyx(), clients.signal(), settings)


async def _note_error(resources: Resources, user_id: uuid.UUID, step: str, error: ProviderError) -> None:
    async with resources.unit_of_work() as uow:
        identity = await identities.get(uow.session, user_id, for_update=True)
        if identity is not None:
            identity.last_error = f"{step}: {error.message}"[:ERROR_TEXT_LIMIT]
        await uow.commit()


_steps = cached(PROVISIONING_STEPS)


async def _run_steps(resources: Resources, p: Providers, user_id: uuid.UUID, next_step: Step) -> str:
    """Run steps until there is nothing more to do now, one transaction each; what the last step was.
    ``lifecycle.StepFailed`` says which step a provider failed in."""
    done: list[str] = []
    wait = WAIT_FIRST_SECONDS
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while True:
        try:
            async with resources.unit_of_work() as uow:
                result = await next_step(uow, p, user_id)
                await uow.commit()
        except lifecycle.StepFailed as failed:
            retrying = isinstance(failed.error, ProviderUnavailable)
            _steps(failed.step, "retrying" if retrying else "failed").inc()
            if retrying:
                await _note_error(resources, user_id, failed.step, failed.error)
            raise
        if result.progress is Progress.DONE:
            return ", ".join(done) or "nothing to do"
        if result.progress is Progress.MOVED:
            _steps(result.step, "done").inc()
            done.append(result.step)
            wait = WAIT_FIRST_SECONDS
            continue
        if time.monotonic() > deadline:
            error = ProviderUnavailable("telnyx", f"Still waiting for {result.step}.")
            await _note_error(resources, user_id, result.step, error)
            raise error
        await asyncio.sleep(wait)
        wait = min(wait * 1.5, WAIT_MAX_SECONDS)


@job(timeout_seconds=300)
async def provision_identity(ctx: dict[str, Any], user_id: str) -> str:
    """Create the user's mailbox, number and messaging, start Signal's registration, and mark the identity
    active; resumes after any crash without making anything twice (``lifecycle``)."""
    resources: Resources = ctx["resources"]
    uid = uuid.UUID(user_id)
    p = await providers(resources.settings)
    try:
        return await _run_steps(resources, p, uid, lifecycle.provision_step)
    except lifecycle.StepFailed as failed:
        if not isinstance(failed.error, ProviderRefused):
            raise failed.error from None
        async with resources.unit_of_work() as uow:
            await lifecycle.fail(uow, p, uid, failed.step, failed.error.message)
            await uow.commit()
        return f"failed at {failed.step}"


@job(timeout_seconds=300)
async def deprovision_identity(ctx: dict[str, Any], user_id: str) -> str:
    """Unregister Signal, release the number, suspend the mailbox (deleted after the retention period, or at
    once for an erased account). Idempotent; run again once the retention is over."""
    resources: Resources = ctx["resources"]
    uid = uuid.UUID(user_id)
    p = await providers(resources.settings)
    try:
        return await _run_steps(resources, p, uid, lifecycle.deprovision_step)
    except lifecycle.StepFailed as failed:
        if not isinstance(failed.error, ProviderRefused):
            raise failed.error from None
        await _note_error(resources, uid, failed.step, failed.error)  # stuck: an operator looks
        return f"refused at {failed.step}"


async def _set_suspended(ctx: dict[str, Any], user_id: str, suspended: bool) -> str:
    resources: Resources = ctx["resources"]
    p = await providers(resources.settings)
    async with resources.unit_of_work() as uow:
        outcome = await lifecycle.set_suspended(uow, p, uuid.UUID(user_id), suspended)
        await uow.commit()
    return outcome


@job(timeout_seconds=120)
async def suspend_identity(ctx: dict[str, Any], user_id: str) -> str:
    """Payment is failing: suspend the mailbox (the number and Signal stay). No-op once payment recovered."""
    return await _set_suspended(ctx, user_id, True)


@job(timeout_seconds=120)
async def resume_identity(ctx: dict[str, Any], user_id: str) -> str:
    """Paid again: the mailbox works again. No-op if payment is failing again meanwhile."""
    return await _set_suspended(ctx, user_id, False)


@job(timeout_seconds=120)
async def register_signal(ctx: dict[str, Any], user_id: str, captcha: str | None = None) -> str:
    """One attempt at the identity's Signal registration (``signal_registration``), then its profile name
    once registered. ``captcha``: an operator's, sealed (``service.captcha_sealer``)."""
    resources: Resources = ctx["resources"]
    uid = uuid.UUID(user_id)
    p = await providers(resources.settings)
    token = None
    if captcha is not None:
        try:
            token = service.captcha_sealer(resources.settings).open(captcha)
        except SealBroken:  # sealed under a retired SECRET_KEY: the registration waits for another one
            log.warning("a Signal captcha could not be opened", extra={"user_id": user_id})
    async with resources.unit_of_work() as uow:
        outcome = await signal_registration.attempt(uow, p, uid, token)
        await uow.commit()
    async with resources.unit_of_work() as uow:
        if await signal_registration.ensure_profile(uow, p, uid):
            outcome += ", profile set"
        await uow.commit()
    return outcome


@job(timeout_seconds=120)
async def process_telnyx_event(ctx: dict[str, Any], event_id: str) -> str:
    """Act on one stored Telnyx webhook event (``inbound``) and mark it processed, its text removed, in the
    same transaction. Idempotent: a processed event is skipped."""
    resources: Resources = ctx["resources"]
    usage = UsageBuffer(resources.redis, stream_for(resources.settings.queue_name))
    p = await providers(resources.settings)

    async def act(uow: UnitOfWork, event: webhooks.ProviderEvent) -> tuple[str, dict[str, Any]]:
        return await inbound.apply(uow, p, usage, event.type, event.payload), inbound.redacted(event.payload)

    applied = await webhooks.process_stored_event(resources, webhooks.TELNYX, event_id, act)
    return "already processed" if applied is None else applied


@cron("* * * * *", timeout_seconds=60)
async def advance_signal_registrations(ctx: dict[str, Any]) -> int:
    """Re-run the Signal registrations that are due: retries whose backoff is over, codes that never came."""
    resources: Resources = ctx["resources"]
    async with resources.unit_of_work() as uow:
        due = await signal_registration.due(uow)
        for user_id in due:
            await uow.defer_job("register_signal", user_id=str(user_id))
        await uow.commit()
    return len(due)


@cron("* * * * *", timeout_seconds=120)
async def keep_signal_alive(ctx: dict[str, Any]) -> int:
    """Receive for every registered Signal account (signal-cli's accounts stay registered only if they
    receive), storing each batch before taking the next; the messages stored."""
    resources: Resources = ctx["resources"]
    async with resources.db.sessions() as session:
        accounts = await identities.signal_accounts(session)
    if not accounts:
        return 0
    gate = asyncio.Semaphore(KEEPALIVE_CONCURRENCY)
    signal = CLIENTS.get(resources.settings).signal()

    async def receive(account: identities.SignalAccount) -> int:
        async with gate:
            return await _receive_all(resources, signal, account)

    counts = await asyncio.gather(*(receive(account) for account in accounts))
    return sum(counts)


async def _receive_all(resources: Resources, signal: SignalAdapter, account: identities.SignalAccount) -> int:
    stored_count, more = 0, True
    while more:
        try:
            async with resources.unit_of_work() as uow:
                stored, more = await signal_registration.receive_batch(uow, resources, signal, account)
                await uow.commit()
        except SignalNotRegistered:
            async with resources.unit_of_work() as uow:
                await signal_registration.registration_lost(uow, account.user_id)
                await uow.commit()
            return stored_count
        except ProviderError as exc:
            log.warning(
                "signal keep-alive failed", extra={"identity": str(account.identity_id), "error": exc.code}
            )
            return stored_count
        stored_count += len(stored)
    return stored_count


@cron("*/15 * * * *", timeout_seconds=300)
async def advance_identities(ctx: dict[str, Any]) -> dict[str, int]:
    """Deprovision identities whose subscription ended past its grace period; finish deprovisioning mailboxes
    whose retention is over; resume provisioning left without progress (a job that ran out of retries)."""
    resources: Resources = ctx["resources"]
    now = identities.now()
    async with resources.unit_of_work() as uow:
        session = uow.session
        ended = 0
        for user_id in await billing.users_to_deprovision(session, now):
            identity = await identities.get(session, user_id)
            if identity is not None and identity.status not in ("deprovisioning", "deleted"):
                await service.request_deprovisioning(uow, user_id, service.SUBSCRIPTION_ENDED)
                ended += 1
        retained = await identities.retention_over(session, now)
        stale = await identities.provisioning_idle_since(session, now - identities.STUCK_AFTER)
        for user_id in retained:
            await uow.defer_job("deprovision_identity", user_id=str(user_id))
        for user_id in stale:
            await uow.defer_job("provision_identity", user_id=str(user_id))
        await uow.commit()
    return {"ended": ended, "retention_over": len(retained), "resumed": len(stale)}
