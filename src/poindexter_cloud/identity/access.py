"""Who may use which part of an identity now, and the configuration Dex reads at start.

Each part (the mailbox, the number, the Signal account) has a state of its own: ``ready``, ``pending``
(being provisioned), ``failed`` (provisioning it failed for good), ``suspended`` (the mailbox, while a
payment fails) or ``removed`` (being taken down). A call needs its part ready; a send also needs the
subscription paid: a failing payment (billing's state, or the identity already suspended) refuses it with
``identity_suspended``, no subscription with ``subscription_required``. Reading what arrived keeps working
while a payment fails, except the mailbox, which Google holds suspended.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.accounts.auth import Principal
from poindexter_cloud.billing import service as billing
from poindexter_cloud.billing.plans import PLANS, IdentityLimits, OperationLimit, Plan
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.identity import service
from poindexter_cloud.identity.errors import (
    IdentityFailed,
    IdentityPending,
    IdentityRemoved,
    IdentitySuspended,
    NoIdentity,
    SubscriptionRequired,
)
from poindexter_cloud.identity.limits import OPERATIONS, Limiter, Operation
from poindexter_cloud.identity.models import Identity
from poindexter_cloud.identity.schemas import (
    DexConfiguration,
    EmailIdentity,
    IdentityParts,
    Limits,
    OperationLimitView,
    PhoneIdentity,
    PlanInfo,
    ProxyConfiguration,
    SignalIdentity,
)
from poindexter_cloud.identity.validation import MAX_EMAIL_RECIPIENTS, MAX_SMS_SEGMENTS

Part = Literal["email", "phone", "signal"]
REMOVING: Final = frozenset({"deprovisioning", "deleted"})
# The provisioning steps (identity.service.steps) each part is made of.
PART_STEPS: Final[dict[Part, tuple[str, ...]]] = {
    "email": ("mailbox",),
    "phone": ("number", "messaging"),
    "signal": ("signal",),
}
PART_NAMES: Final[dict[Part, str]] = {"email": "mailbox", "phone": "phone number", "signal": "Signal account"}


def _not_made(identity: Identity) -> str:
    return "failed" if identity.status == "failed" else "pending"


def email_state(identity: Identity) -> str:
    if identity.status in REMOVING:
        return "removed"
    if identity.workspace_user_id is None or identity.workspace_email is None:
        return _not_made(identity)
    return "suspended" if identity.workspace_suspended else "ready"


def phone_state(identity: Identity) -> str:
    if identity.status in REMOVING:
        return "removed"
    if identity.phone_number is None or not identity.phone_attached:
        return _not_made(identity)
    return "ready"


def signal_state(identity: Identity) -> str:
    if identity.status in REMOVING:
        return "removed"
    if identity.signal_state == "registered" and identity.phone_number is not None:
        return "ready"
    if identity.signal_state == "failed" or (identity.status == "failed" and identity.signal_state == "none"):
        return "failed"
    return "pending"


STATES: Final[dict[Part, Callable[[Identity], str]]] = {
    "email": email_state,
    "phone": phone_state,
    "signal": signal_state,
}


def plan_of(entitlement: billing.Entitlement) -> Plan:
    """The subscriber's plan; Basic's limits for one without a plan (they can only read, if anything)."""
    return PLANS.get(entitlement.plan or "", PLANS["basic"])


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller, their identity (as read at the start of the request) and what their plan allows.

    ``admit`` takes the call from the key's limit for its operation: the service awaits it once the request
    has passed its own checks, so a refused request takes nothing from the limit."""

    principal: Principal
    identity: Identity
    entitlement: billing.Entitlement
    admit: Callable[[], Awaitable[None]]

    @property
    def mailbox(self) -> str:
        assert self.identity.workspace_email is not None
        return self.identity.workspace_email

    @property
    def number(self) -> str:
        assert self.identity.phone_number is not None
        return self.identity.phone_number

    def require(self, part: Part, *, sending: bool = False) -> None:
        """The part is ready (and, to send, the subscription paid), else the error saying why not."""
        identity, name = self.identity, PART_NAMES[part]
        state = STATES[part](identity)
        if state == "removed":
            raise IdentityRemoved(f"The identity's {name} has been taken down: the subscription ended.")
        payment_failing = identity.status == "suspended" or self.entitlement.state == "suspended"
        if state == "suspended" or (sending and payment_failing):
            raise IdentitySuspended(
                "The last payment failed: nothing can be sent and the mailbox is suspended until the "
                "subscription is paid (Billing, in the console).",
                details={"part": part},
            )
        if sending and self.entitlement.state == "none":
            raise SubscriptionRequired("There is no active subscription: nothing can be sent.")
        if state == "pending":
            pending = pending_steps(identity, part)
            raise IdentityPending(
                f"The identity's {name} is still being provisioned; try again shortly.",
                details={"part": part, "pending": pending, "status": identity.status},
            )
        if state == "failed":
            raise IdentityFailed(
                f"Provisioning the identity's {name} failed; an operator will retry it.",
                details={"part": part, "failure_step": identity.failure_step},
            )


async def identity_of(session: AsyncSession, user_id: uuid.UUID) -> Identity:
    """The user's identity; ``no_identity`` before a subscription starts provisioning one."""
    identity = await service.get(session, user_id)
    if identity is None:
        raise NoIdentity("There is no identity yet: it is provisioned once a subscription is paid.")
    return identity


async def caller(
    resources: Resources, principal: Principal, limiter: Limiter, part: Part, operation: Operation
) -> Caller:
    """The caller of ``operation`` on ``part`` of their identity: identity and entitlement read in a short
    session of their own (no connection is held while a provider answers), the part checked (a send: the
    subscription paid too), and the call's admission under the key's limit."""
    async with resources.db.sessions() as session:
        identity = await identity_of(session, principal.user_id)
        entitlement = await billing.entitlement(session, principal.user_id)
    limits = plan_of(entitlement).identity_limits
    found = Caller(
        principal, identity, entitlement, functools.partial(limiter.take, principal, limits, operation)
    )
    found.require(part, sending=operation.endswith("_send"))
    return found


# --- views --------------------------------------------------------------------------------------------------


def pending_steps(identity: Identity, part: Part | None = None) -> list[str]:
    wanted = PART_STEPS[part] if part is not None else None
    return [step for step in service.view(identity).pending if wanted is None or step in wanted]


def email_part(identity: Identity) -> EmailIdentity:
    state = email_state(identity)
    address = identity.workspace_email if identity.workspace_user_id else None
    return EmailIdentity(identity.status, state, address, pending_steps(identity, "email"))


def phone_part(identity: Identity) -> PhoneIdentity:
    return PhoneIdentity(
        identity.status, phone_state(identity), identity.phone_number, pending_steps(identity, "phone")
    )


def signal_part(identity: Identity) -> SignalIdentity:
    number = identity.phone_number if identity.signal_state == "registered" else None
    return SignalIdentity(
        identity.status,
        signal_state(identity),
        identity.signal_state,
        number,
        pending_steps(identity, "signal"),
    )


def _limit_view(limits: IdentityLimits, operation: str) -> OperationLimitView:
    limit: OperationLimit = getattr(limits, operation)
    return OperationLimitView(limit.per_minute, limit.per_day)


def configuration(
    identity: Identity, entitlement: billing.Entitlement, settings: Settings
) -> DexConfiguration:
    view = service.view(identity)
    plan = plan_of(entitlement)
    parts = IdentityParts(email_part(identity), phone_part(identity), signal_part(identity))
    operations: dict[str, OperationLimitView] = {
        name: _limit_view(plan.identity_limits, name) for name in OPERATIONS
    }
    return DexConfiguration(
        user_id=identity.user_id,
        status=identity.status,
        ready=all(part.state == "ready" for part in (parts.email, parts.phone, parts.signal)),
        pending=view.pending,
        email=view.email,
        phone_number=view.phone_number,
        signal=view.signal,
        parts=parts,
        proxy=ProxyConfiguration(
            base_url=settings.proxy_base_url,
            anthropic_base_url=settings.proxy_base_url,
            openai_base_url=f"{settings.proxy_base_url}/v1",
        ),
        plan=PlanInfo(entitlement.plan, entitlement.state),
        limits=Limits(
            operations=operations,
            ai_requests_per_minute=plan.requests_per_minute_per_key,
            ai_tokens_per_minute=plan.tokens_per_minute_per_key,
            max_attachment_bytes=settings.identity_max_attachment_bytes,
            max_email_recipients=MAX_EMAIL_RECIPIENTS,
            max_sms_segments=MAX_SMS_SEGMENTS,
        ),
        failure_step=identity.failure_step,
        failure_reason=identity.failure_reason,
        updated_at=identity.updated_at,
    )
