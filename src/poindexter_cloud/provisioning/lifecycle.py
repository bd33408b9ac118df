"""Provisioning and deprovisioning an identity, one recorded step at a time.

Each step runs in the caller's unit of work on the identity row locked ``FOR UPDATE``: it reads what earlier
steps recorded, does one thing at a provider, and records it; the job commits after every step. So a worker
killed anywhere resumes from the last commit, and the only window left (the provider acted, the commit did
not happen) is closed by making every creation findable again:

* the mailbox address is reserved (committed) before the Workspace user is created, and the user carries
  our identity id as an external id: a retry that gets ``409 duplicate`` adopts the user it made before;
* every number is ordered with ``customer_reference`` = the identity id: before ordering, the numbers and
  pending orders under that reference are adopted; deprovisioning releases every number under it.

Two jobs for one identity never act at once: each step holds the row lock. A step that fails for good marks
the identity ``failed`` (``fail``), releasing a number we bought but will never use.
"""

from __future__ import annotations

import enum
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from sqlalchemy import func, select

from poindexter_cloud.billing import service as billing
from poindexter_cloud.core import audit
from poindexter_cloud.core.db import UnitOfWork, advisory_lock_key
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.service import Identity
from poindexter_cloud.integrations.errors import (
    NumberNotAvailable,
    ProviderError,
    ProviderObjectMissing,
    ProviderRefused,
    ProviderUnavailable,
)
from poindexter_cloud.integrations.google import GoogleAdapter, UserExists
from poindexter_cloud.integrations.signal import SignalAdapter
from poindexter_cloud.integrations.telnyx import PROFILE_NAME, Number, TelnyxAdapter
from poindexter_cloud.provisioning import service

log = logging.getLogger(__name__)

SHORT_ID_ALPHABET: Final = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
SHORT_ID_LENGTH: Final = 10


class Progress(enum.Enum):
    MOVED = "moved"  # the step did something: look for the next one
    WAITING = "waiting"  # a provider is not done yet (a number order): ask again shortly
    DONE = "done"  # nothing (more) to do now


@dataclass(frozen=True, slots=True)
class Providers:
    """What a step works with: the process's provider clients (``jobs.providers``) and the settings."""

    google: GoogleAdapter
    telnyx: TelnyxAdapter
    signal: SignalAdapter
    settings: Settings


@dataclass(frozen=True, slots=True)
class StepResult:
    step: str
    progress: Progress


class StepFailed(Exception):
    """A provider failed during ``step``: ``error`` says whether retrying can help."""

    def __init__(self, step: str, error: ProviderError) -> None:
        super().__init__(f"{step}: {error.message}")
        self.step, self.error = step, error


Run = Callable[[UnitOfWork, Providers, Identity], Awaitable[Progress]]
Needed = Callable[[Identity, Providers], bool]


def _reference(identity: Identity) -> str:
    """The customer_reference of the identity's numbers at Telnyx."""
    return str(identity.id)


def _clear_number(identity: Identity) -> None:
    identity.phone_number = identity.phone_telnyx_id = identity.phone_order_id = None
    identity.phone_attached = False


# --- provisioning ----------------------------------------------------------------------------------------


async def _reserve_mailbox(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    short_id = "".join(secrets.choice(SHORT_ID_ALPHABET) for _ in range(SHORT_ID_LENGTH))
    identity.workspace_email = f"dex-{short_id}@{p.settings.google_workspace_domain}"
    return Progress.MOVED


async def _create_mailbox(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    email = identity.workspace_email
    assert email is not None
    family_name = email.partition("@")[0].removeprefix("dex-")
    try:
        user = await p.google.create_user(email, "Dex", family_name, str(identity.id))
    except UserExists:
        found = await p.google.get_user(email)
        if found is None:
            raise ProviderUnavailable("google", "The Workspace user vanished while we adopted it.") from None
        if found.identity_id != str(identity.id):
            raise ProviderRefused(
                "google", f"{email} belongs to a Workspace user that is not ours."
            ) from None
        log.info(
            "adopted the workspace user an earlier attempt created", extra={"identity": str(identity.id)}
        )
        user = found
    identity.workspace_user_id, identity.workspace_suspended = user.id, user.suspended
    return Progress.MOVED


async def _unsuspend_mailbox(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    assert identity.workspace_user_id is not None
    try:
        await p.google.set_suspended(identity.workspace_user_id, False)
    except ProviderObjectMissing:
        identity.workspace_user_id = None  # deleted meanwhile: made again, at the same address
    identity.workspace_suspended = False
    return Progress.MOVED


async def _order_number(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    reference = _reference(identity)
    held = await p.telnyx.held_numbers(reference)
    active = [number for number in held if number.status == "active"]
    if active:  # bought by an attempt whose answer was lost
        await _record_number(uow, p, identity, active[0])
        return Progress.MOVED
    if held:
        pending = await p.telnyx.pending_orders(reference)
        if not pending:
            return Progress.WAITING
        identity.phone_order_id = pending[0].id
        return Progress.MOVED
    country = p.settings.telnyx_number_country
    for area_code in p.settings.telnyx_number_area_codes or (None,):
        for candidate in await p.telnyx.search_numbers(country, area_code):
            try:
                order = await p.telnyx.order_number(candidate, reference)
            except NumberNotAvailable:
                continue  # sold to someone else since the search
            identity.phone_order_id = order.id
            audit.record(uow.session, "identity.number_ordered", subject=identity.user_id, order=order.id)
            return Progress.MOVED
    areas = ", ".join(p.settings.telnyx_number_area_codes) or "any area"
    raise ProviderRefused("telnyx", f"No SMS number is for sale in {country} ({areas}).")


async def _await_number(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    assert identity.phone_order_id is not None
    try:
        order = await p.telnyx.get_order(identity.phone_order_id)
    except ProviderObjectMissing:
        identity.phone_order_id = None
        return Progress.MOVED
    if order.status == "pending" or not order.phone_numbers:
        return Progress.WAITING
    if order.status != "success":
        raise ProviderRefused("telnyx", f"The Telnyx number order {order.id} ended in {order.status}.")
    number = await p.telnyx.number(order.phone_numbers[0])
    if number is None or number.status != "active":
        return Progress.WAITING
    await _record_number(uow, p, identity, number)
    return Progress.MOVED


async def _record_number(uow: UnitOfWork, p: Providers, identity: Identity, number: Number) -> None:
    """The number is the identity's. Telnyx sold it to us just now, so if another identity's record still
    names it, that record is stale (the number left the account behind our back): that identity loses it,
    its Signal account on it is deleted, and, if active, it is provisioned again with a new number."""
    other = await identities.by_phone_number(uow.session, number.phone_number, for_update=True)
    if other is not None and other.id != identity.id:
        if other.phone_telnyx_id and await p.telnyx.holds(other.phone_telnyx_id):
            raise ProviderRefused("telnyx", f"{number.phone_number} is recorded for two identities.")
        log.warning("a number recorded for another identity left the account", extra={"other": str(other.id)})
        await p.signal.unregister(number.phone_number)
        _clear_number(other)
        other.signal_state, other.signal_profile_name = "none", None
        other.last_error = "Telnyx no longer held its number; it gets a new one."
        if other.status == "active":
            identities.set_status(other, "provisioning")
            await uow.defer_job("provision_identity", user_id=str(other.user_id))
        await uow.session.flush()
    identity.phone_number, identity.phone_telnyx_id = number.phone_number, number.id


async def messaging_profile(uow: UnitOfWork, p: Providers) -> str:
    """TELNYX_MESSAGING_PROFILE_ID, else the profile named ``PROFILE_NAME`` (its webhook URL is left as
    found), made on first use with our webhook; one creator at a time across workers."""
    if p.settings.telnyx_messaging_profile_id:
        return p.settings.telnyx_messaging_profile_id
    found = await p.telnyx.find_messaging_profile(PROFILE_NAME)
    if found is not None:
        return found
    lock = func.pg_advisory_xact_lock(advisory_lock_key("telnyx:messaging-profile"))
    await uow.session.execute(select(lock))
    found = await p.telnyx.find_messaging_profile(PROFILE_NAME)
    if found is not None:
        return found
    destinations = [p.settings.telnyx_number_country]
    return await p.telnyx.create_messaging_profile(PROFILE_NAME, p.settings.telnyx_webhook_url, destinations)


async def _attach_number(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    assert identity.phone_telnyx_id is not None
    profile = await messaging_profile(uow, p)
    try:
        await p.telnyx.attach(identity.phone_telnyx_id, profile)
    except ProviderObjectMissing:
        _clear_number(identity)  # released outside our control: buy another
        return Progress.MOVED
    identity.phone_attached = True
    return Progress.MOVED


async def _start_signal(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    service.restart_signal(identity)
    await uow.defer_job("register_signal", user_id=str(identity.user_id))
    return Progress.MOVED


async def _activate(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    identities.set_status(identity, "active")
    identity.provisioned_at = identity.provisioned_at or identities.now()
    identity.failure_step = identity.failure_reason = identity.last_error = None
    audit.record(
        uow.session, "identity.provisioned", subject=identity.user_id, email=identity.workspace_email
    )
    if (await billing.entitlement(uow.session, identity.user_id)).state == "suspended":
        await service.request_suspension(uow, identity.user_id)  # payment failed while we provisioned
    return Progress.MOVED


PROVISION_STEPS: Final[tuple[tuple[str, Needed, Run], ...]] = (
    ("reserve_mailbox", lambda i, p: i.workspace_email is None, _reserve_mailbox),
    ("create_mailbox", lambda i, p: i.workspace_user_id is None, _create_mailbox),
    ("unsuspend_mailbox", lambda i, p: i.workspace_suspended, _unsuspend_mailbox),
    ("order_number", lambda i, p: i.phone_telnyx_id is None and i.phone_order_id is None, _order_number),
    ("await_number", lambda i, p: i.phone_telnyx_id is None, _await_number),
    ("attach_number", lambda i, p: not i.phone_attached, _attach_number),
    ("start_signal", lambda i, p: i.signal_state in ("none", "unregistered", "failed"), _start_signal),
    ("activate", lambda i, p: True, _activate),
)


async def _step(
    uow: UnitOfWork, p: Providers, user_id: uuid.UUID, status: str, steps: tuple[tuple[str, Needed, Run], ...]
) -> StepResult:
    identity = await identities.get(uow.session, user_id, for_update=True)
    if identity is None or identity.status != status:
        return StepResult("", Progress.DONE)
    for name, needed, run in steps:
        if needed(identity, p):
            try:
                return StepResult(name, await run(uow, p, identity))
            except ProviderError as exc:
                raise StepFailed(name, exc) from exc
    return StepResult("", Progress.DONE)


async def provision_step(uow: UnitOfWork, p: Providers, user_id: uuid.UUID) -> StepResult:
    """Run the next provisioning step the identity needs (``DONE`` once it is active, or not provisioning)."""
    return await _step(uow, p, user_id, "provisioning", PROVISION_STEPS)


async def fail(uow: UnitOfWork, p: Providers, user_id: uuid.UUID, step: str, reason: str) -> None:
    """A provisioning step failed for good: mark the identity failed, for operators, and release a number
    bought but never made usable. What else exists (the mailbox) stays for the next attempt."""
    identity = await identities.get(uow.session, user_id, for_update=True)
    if identity is None or identity.status != "provisioning":
        return
    if step == "await_number":
        identity.phone_order_id = None  # a failed order: the next attempt orders anew
    if step == "attach_number" and identity.phone_telnyx_id is not None:
        try:
            await p.telnyx.release(identity.phone_telnyx_id)
        except ProviderUnavailable as exc:
            identity.last_error = f"releasing the number: {exc.message}"
        else:
            audit.record(
                uow.session, "identity.number_released", subject=user_id, number=identity.phone_number
            )
            _clear_number(identity)
    identities.set_status(identity, "failed")
    identity.failure_step, identity.failure_reason = step, reason
    audit.record(uow.session, "identity.provisioning_failed", subject=user_id, step=step, reason=reason)
    log.error("identity provisioning failed", extra={"user_id": str(user_id), "step": step})


# --- deprovisioning --------------------------------------------------------------------------------------


def _delete_due(identity: Identity, p: Providers) -> bool:
    due = identity.workspace_delete_after
    return (
        identity.purge
        or p.settings.identity_retention_days == 0
        or (due is not None and due <= identities.now())
    )


async def _unregister_signal(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    assert identity.phone_number is not None
    await p.signal.unregister(identity.phone_number)
    identity.signal_state = "unregistered"
    identity.signal_profile_name = identity.signal_next_attempt_at = identity.signal_error = None
    return Progress.MOVED


async def _release_number(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    if identity.phone_telnyx_id is None:
        assert identity.phone_order_id is not None
        try:
            order = await p.telnyx.get_order(identity.phone_order_id)
        except ProviderObjectMissing:
            order = None
        if order is not None and order.status == "pending":
            return Progress.WAITING  # what it buys is released by _finish's sweep
        identity.phone_order_id = None
        return Progress.MOVED
    released = await p.telnyx.release(identity.phone_telnyx_id)
    audit.record(
        uow.session,
        "identity.number_released",
        subject=identity.user_id,
        number=identity.phone_number,
        already=not released,
    )
    _clear_number(identity)
    return Progress.MOVED


async def _remove_mailbox(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    assert identity.workspace_user_id is not None
    if _delete_due(identity, p):
        await p.google.delete_user(identity.workspace_user_id)
        identity.workspace_user_id, identity.workspace_suspended = None, False
        identity.workspace_delete_after = None
        audit.record(uow.session, "identity.mailbox_deleted", subject=identity.user_id)
        return Progress.MOVED
    try:
        await p.google.set_suspended(identity.workspace_user_id, True)
    except ProviderObjectMissing:
        identity.workspace_user_id = None
        return Progress.MOVED
    identity.workspace_suspended = True
    retention = timedelta(days=p.settings.identity_retention_days)
    identity.workspace_delete_after = identity.workspace_delete_after or identities.now() + retention
    return Progress.MOVED


async def _finish(uow: UnitOfWork, p: Providers, identity: Identity) -> Progress:
    """Release numbers bought under our reference but never recorded, adopt a mailbox created but never
    recorded; then, once the mailbox is gone, the identity is ``deleted``."""
    for number in await p.telnyx.held_numbers(_reference(identity)):
        await p.telnyx.release(number.id)
        log.warning("released an unrecorded number", extra={"identity": str(identity.id)})
    if identity.workspace_user_id is None and identity.workspace_email:
        found = await p.google.get_user(identity.workspace_email)
        if found is not None and found.identity_id == str(identity.id):
            identity.workspace_user_id, identity.workspace_suspended = found.id, found.suspended
            return Progress.MOVED
    if identity.workspace_user_id is not None:
        return Progress.DONE  # the suspended mailbox waits out its retention
    identities.set_status(identity, "deleted")
    audit.record(
        uow.session, "identity.deprovisioned", subject=identity.user_id, reason=identity.deprovision_reason
    )
    if identity.purge:  # the account's erasure was waiting for this
        await uow.defer_job("erase_account", user_id=str(identity.user_id))
    return Progress.DONE


DEPROVISION_STEPS: Final[tuple[tuple[str, Needed, Run], ...]] = (
    (
        "unregister_signal",
        lambda i, p: i.signal_state not in ("none", "unregistered") and i.phone_number is not None,
        _unregister_signal,
    ),
    (
        "release_number",
        lambda i, p: i.phone_telnyx_id is not None or i.phone_order_id is not None,
        _release_number,
    ),
    (
        "remove_mailbox",
        lambda i, p: i.workspace_user_id is not None and (_delete_due(i, p) or not i.workspace_suspended),
        _remove_mailbox,
    ),
    ("finish", lambda i, p: True, _finish),
)


async def deprovision_step(uow: UnitOfWork, p: Providers, user_id: uuid.UUID) -> StepResult:
    """Run the next deprovisioning step (reverse order: Signal, number, mailbox), ``DONE`` when nothing more
    can be done now (deleted, or the suspended mailbox waiting out its retention)."""
    return await _step(uow, p, user_id, "deprovisioning", DEPROVISION_STEPS)


# --- payment failing and recovering ----------------------------------------------------------------------


async def set_suspended(uow: UnitOfWork, p: Providers, user_id: uuid.UUID, suspended: bool) -> str:
    """Suspend (payment failing) or resume (paid again) the identity's mailbox, if billing still says so:
    jobs for a quick failure and recovery may run in either order, and both end in billing's state."""
    wanted = "suspended" if suspended else "active"
    if (await billing.entitlement(uow.session, user_id)).state != wanted:
        return f"billing is no longer {wanted}"
    identity = await identities.get(uow.session, user_id, for_update=True)
    current = "active" if suspended else "suspended"
    if identity is None or identity.status != current:
        return f"nothing to do ({identity.status if identity else 'no identity'})"
    if identity.workspace_user_id is not None:
        try:
            await p.google.set_suspended(identity.workspace_user_id, suspended)
        except ProviderObjectMissing:  # deleted behind our back: provisioning makes it again
            identity.workspace_user_id = None
            identity.last_error = "The Workspace user was gone."
    identity.workspace_suspended = suspended
    identities.set_status(identity, wanted)
    audit.record(uow.session, f"identity.{'suspended' if suspended else 'resumed'}", subject=user_id)
    return wanted
