"""An identity's provisioning as the console tells it: to its subscriber, each part (mailbox, number, text
messages, Signal) with its state, what is still pending and, after a problem, what happens next; to an
operator, what can be done about it. Reads only the identity service's view (what ``GET /v1/identity``
gives).

The page calls an identity *active* once Signal is registered too: the identity's own status turns active as
soon as the mailbox and number work, with Signal's registration still under way beside it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.billing import service as billing
from poindexter_cloud.billing.service import SubscriptionState
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.schemas import IdentityView

Tone = Literal["ok", "wait", "bad", "off"]

POLL_MOVING: Final = 2  # seconds between looks while provisioning moves by itself
POLL_WAITING: Final = 15  # while it waits for a person (an operator's retry, a captcha)

LABELS: Final = {
    "mailbox": "Mailbox",
    "number": "Phone number",
    "messaging": "Text messages",
    "signal": "Signal",
}
DONE: Final = {"mailbox": "Created", "number": "Bought", "messaging": "Received by your Dex"}
# The part each provisioning step works on (``provisioning.lifecycle``'s step names).
STEP_PARTS: Final = {
    "reserve_mailbox": "mailbox",
    "create_mailbox": "mailbox",
    "unsuspend_mailbox": "mailbox",
    "order_number": "number",
    "await_number": "number",
    "attach_number": "messaging",
    "start_signal": "signal",
}
SIGNAL: Final[dict[str, tuple[str, Tone]]] = {
    "none": ("Waiting for the number", "off"),
    "pending": ("Registering", "wait"),
    "retrying": ("Signal asked us to wait: we are retrying", "wait"),
    "awaiting_code": ("Waiting for Signal's code by SMS", "wait"),
    "captcha_required": ("Waiting for a captcha, which our team solves", "wait"),
    "registered": ("Registered", "ok"),
    "failed": ("Failed", "bad"),
    "unregistered": ("Removed", "off"),
}
SIGNAL_MOVING: Final = frozenset({"none", "pending", "retrying", "awaiting_code"})
LIVE: Final = frozenset({"active", "suspended"})

NOTHING_NEEDED: Final = "Nothing is needed from you."
SIGNAL_UNDER_WAY: Final = "The mailbox and phone number are ready; Signal is being registered on the number."
COME_BACK: Final = "If you subscribe again, your Dex gets the same address back and a new number."


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    label: str
    value: str | None  # the address or the number, once there is one
    text: str
    tone: Tone


@dataclass(frozen=True, slots=True)
class Progress:
    headline: str  # Not started, Starting, Provisioning, Active, Failed, Suspended, Being removed, Removed
    tone: Tone
    summary: str
    next: str | None  # after a problem: what happens next
    parts: list[Part]
    pending: list[str]  # the labels of the parts still to do
    poll_seconds: int | None  # how soon the page looks again; None once nothing changes by itself
    view: IdentityView | None

    @property
    def ready(self) -> bool:
        return self.headline == "Active" and not self.pending


async def identity_view(session: AsyncSession, user_id: uuid.UUID) -> IdentityView | None:
    identity = await identities.get(session, user_id)
    return None if identity is None else identities.view(identity)


async def current_progress(session: AsyncSession, user_id: uuid.UUID) -> Progress:
    view = await identity_view(session, user_id)
    return progress_of(view, await billing.subscription_state(session, user_id))


def _not_yet(has_plan: bool) -> Progress:
    if has_plan:
        summary = "Your plan is active: setting up your Dex's mailbox, number and Signal starts in a moment."
        return Progress("Starting", "wait", summary, None, [], [], POLL_MOVING, None)
    summary = "Your Dex gets its own mailbox, phone number and Signal account as soon as you choose a plan."
    return Progress("Not started", "off", summary, None, [], [], None, None)


def _failed_part(view: IdentityView) -> str | None:
    if view.status == "failed":
        return STEP_PARTS.get(view.failure_step or "")
    if view.signal == "failed" and view.status in LIVE:
        return "signal"
    return None


def parts(view: IdentityView) -> list[Part]:
    removing = view.status in ("deprovisioning", "deleted")
    failed = _failed_part(view)
    first_pending = next((step.name for step in view.steps if step.state == "pending"), None)
    found = []
    for step in view.steps:
        value = {"mailbox": view.email, "number": view.phone_number}.get(step.name)
        text: str
        tone: Tone
        if step.name == "signal":
            text, tone = SIGNAL.get(step.state, (step.state, "off"))
        elif step.state == "done":
            text, tone = DONE[step.name], "ok"
            if step.name == "mailbox" and view.status == "suspended":
                text, tone = "Paused until the payment goes through", "bad"
        elif step.state == "removed":
            text, tone = "Removed", "off"
        elif step.state == "suspended":
            text, tone = "Suspended, then deleted after the retention period", "off"
        elif removing:
            text, tone = "Being removed", "wait"
        elif step.name == failed:
            text, tone = "Failed", "bad"
        elif step.name == first_pending and view.status == "provisioning":
            text, tone = "In progress", "wait"
        else:
            text, tone = "Waiting for the step before", "off"
        found.append(Part(step.name, LABELS.get(step.name, step.name), value, text, tone))
    return found


def _part_name(part: str | None) -> str:
    return LABELS.get(part or "", "identity").lower()


def _retrying(view: IdentityView) -> str | None:
    """A transient error is noted as ``step: message`` while the job retries."""
    if not view.last_error:
        return None
    part = _part_name(STEP_PARTS.get(view.last_error.partition(":")[0]))
    return f"Setting up the {part} met a passing error at our provider: we are retrying. {NOTHING_NEEDED}"


def progress_of(view: IdentityView | None, subscription: SubscriptionState) -> Progress:
    if view is None:
        return _not_yet(subscription.status in ("active", "suspended"))
    shown = parts(view)
    pending = [] if view.status in ("deprovisioning", "deleted") else [LABELS[n] for n in view.pending]

    def made(headline: str, tone: Tone, summary: str, next_: str | None, poll: int | None) -> Progress:
        return Progress(headline, tone, summary, next_, shown, pending, poll, view)

    status, signal = view.status, view.signal
    if status == "provisioning":
        summary = "We are setting up your Dex's mailbox, phone number and Signal account."
        return made("Provisioning", "wait", summary, _retrying(view), POLL_MOVING)
    if status == "failed":
        summary = f"Setting up the {_part_name(_failed_part(view))} failed at our provider."
        next_ = f"Our team has been alerted and will retry; what is already made is kept. {NOTHING_NEEDED}"
        return made("Failed", "bad", summary, next_, POLL_WAITING)
    if status == "suspended":
        summary = (
            "Your last payment failed, so the mailbox is paused; the phone number and Signal keep working. "
            "Update your card in Billing and the mailbox resumes."
        )
        return made("Suspended", "bad", summary, None, None)
    if status == "active" and signal == "captcha_required":
        next_ = (
            "Signal wants a captcha solved first (its check that a person is behind a new account). It is on "
            f"our team's list: they solve it, then registration goes on by itself. {NOTHING_NEEDED}"
        )
        return made("Provisioning", "wait", SIGNAL_UNDER_WAY, next_, POLL_WAITING)
    if status == "active" and signal in SIGNAL_MOVING:  # a refusal to retry says so on Signal's part
        return made("Provisioning", "wait", SIGNAL_UNDER_WAY, None, POLL_MOVING)
    if status == "active" and signal == "failed":
        summary = "The mailbox and phone number work; registering Signal on the number failed."
        next_ = f"It is on our team's list: they will register Signal again. {NOTHING_NEEDED}"
        return made("Active", "wait", summary, next_, POLL_WAITING)
    if status == "active":
        return made(
            "Active", "ok", "Your Dex's mailbox, phone number and Signal account are ready.", None, None
        )
    if status == "deprovisioning":
        summary = f"The mailbox, number and Signal account are being removed. {COME_BACK}"
        return made("Being removed", "off", summary, None, None)
    summary = f"The mailbox, number and Signal account were removed. {COME_BACK}"
    return made("Removed", "off", summary, None, None)


# What ``identity.service.issues`` found, for operators.
PROBLEMS: Final = {
    "failed": "Failed",
    "stuck": "No progress",
    "signal_captcha": "Signal wants a captcha",
    "signal_failed": "Signal failed",
}
OperatorAction = Literal["retry", "captcha", "deprovision"]


def operator_action(view: IdentityView) -> OperatorAction | None:
    """What an operator can do for it: provisioning again (``provision_by_operator``: a failed or stalled one,
    or a failed Signal registration), a captcha for Signal, or resuming a stalled removal (CLI)."""
    if view.status in ("failed", "provisioning") or (view.status in LIVE and view.signal == "failed"):
        return "retry"
    if view.signal == "captcha_required" and view.status in LIVE:
        return "captcha"
    if view.status == "deprovisioning":
        return "deprovision"
    return None
