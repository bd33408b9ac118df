"""What other modules ask of provisioning, each in the caller's transaction: provision, suspend, resume or
deprovision a user's identity, or hand Signal an operator's captcha. Each records the wish and defers the job
that carries it out (``provisioning.jobs``), so the job runs only if the caller's transaction commits.
Imports no provider SDK (billing, and through it the proxy, import this module). Never commits.
"""

from __future__ import annotations

import uuid
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.core import audit
from poindexter_cloud.core.crypto import KeyRing, Sealer
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.service import Identity
from poindexter_cloud.provisioning.errors import IdentityNotFound, NotAwaitingCaptcha, NotProvisionable

SUBSCRIPTION_ENDED: Final = "subscription ended"
ACCOUNT_DELETED: Final = "account deleted"
BY_OPERATOR: Final = "operator"


def restart_signal(identity: Identity) -> None:
    """Begin (again) a Signal registration: the time limit counts from now."""
    identity.signal_state, identity.signal_error = "pending", None
    identity.signal_started_at = identities.now()
    identity.signal_attempts, identity.signal_next_attempt_at = 0, identities.now()


async def request_provisioning(
    uow: UnitOfWork, user_id: uuid.UUID, actor: uuid.UUID | None = None
) -> Identity:
    """Provision the user's identity (idempotent): a new one, a failed one again, or one being (or already)
    deprovisioned back to life (a returning subscriber keeps the address). An active identity whose Signal
    registration failed gets a new one."""
    identity = await identities.ensure(uow.session, user_id)
    if identity.purge:
        raise NotProvisionable("This account is being erased.")
    if identity.status in ("active", "suspended"):
        if identity.signal_state == "failed":
            restart_signal(identity)
            await uow.defer_job("register_signal", user_id=str(user_id))
        return identity
    if identity.status != "provisioning":
        identities.set_status(identity, "provisioning")
    identity.failure_step = identity.failure_reason = identity.deprovision_reason = None
    identity.workspace_delete_after = None
    await uow.session.flush()
    audit.record(uow.session, "identity.provisioning_requested", actor=actor, subject=user_id)
    await uow.defer_job("provision_identity", user_id=str(user_id))
    return identity


async def provision_by_operator(uow: UnitOfWork, user_id: uuid.UUID, actor: uuid.UUID | None) -> Identity:
    """``request_provisioning`` for an operator (route or CLI): only for a user whose plan grants it."""
    from poindexter_cloud.billing.service import entitlement  # billing calls this module

    if (await entitlement(uow.session, user_id)).state == "none":
        raise NotProvisionable("This user has no subscription granting an identity.")
    return await request_provisioning(uow, user_id, actor)


async def request_suspension(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    """Payment is failing: suspend the mailbox (the number and Signal stay, so nothing is lost)."""
    await uow.defer_job("suspend_identity", user_id=str(user_id))


async def request_resumption(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    await uow.defer_job("resume_identity", user_id=str(user_id))


async def request_deprovisioning(
    uow: UnitOfWork,
    user_id: uuid.UUID,
    reason: str,
    *,
    purge: bool = False,
    actor: uuid.UUID | None = None,
) -> Identity | None:
    """Take the identity down, in reverse order (idempotent). ``purge`` (account deletion) deletes the
    mailbox at once instead of after the retention period, then erases the identity's data."""
    identity = await identities.get(uow.session, user_id, for_update=True)
    if identity is None or (identity.status == "deleted" and (identity.purge or not purge)):
        return identity
    identity.purge = identity.purge or purge
    if identity.status != "deprovisioning":
        identities.set_status(identity, "deprovisioning")
        identity.deprovision_reason = reason
        audit.record(
            uow.session, "identity.deprovisioning_requested", actor=actor, subject=user_id, reason=reason
        )
    await uow.defer_job("deprovision_identity", user_id=str(user_id))
    return identity


async def identity_removed(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """No mailbox, number or Signal account is left for the user (or they never had an identity)."""
    identity = await identities.get(session, user_id)
    return identity is None or identity.status == "deleted"


def captcha_sealer(settings: Settings) -> Sealer:
    """Seals an operator's Signal captcha for the job that hands it to Signal: job payloads are stored
    (the queue, ``job_history``), and until Signal takes it the token lets anyone register the number."""
    return Sealer(KeyRing.derive("signal-captcha", settings.secret_key, settings.secret_key_previous))


async def submit_signal_captcha(
    uow: UnitOfWork, settings: Settings, user_id: uuid.UUID, token: str, actor: uuid.UUID | None = None
) -> Identity:
    """An operator solved Signal's captcha: register again with it (and a fresh time limit)."""
    identity = await identities.get(uow.session, user_id, for_update=True)
    if identity is None:
        raise IdentityNotFound("This user has no identity.")
    if identity.signal_state != "captcha_required":
        raise NotAwaitingCaptcha(
            f"Signal is not waiting for a captcha (its state is {identity.signal_state})."
        )
    identity.signal_started_at = identities.now()
    audit.record(uow.session, "identity.signal_captcha_submitted", actor=actor, subject=user_id)
    sealed = captcha_sealer(settings).seal(token.strip())
    await uow.defer_job("register_signal", user_id=str(user_id), captcha=sealed)
    return identity


async def find(session: AsyncSession, user_id: uuid.UUID) -> Identity:
    identity = await identities.get(session, user_id)
    if identity is None:
        raise IdentityNotFound("This user has no identity.")
    return identity
