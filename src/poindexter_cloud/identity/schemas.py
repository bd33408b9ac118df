"""The identity API contract: an identity as its subscriber and operators see it."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class StepView(msgspec.Struct):
    """One part of the identity: ``mailbox``, ``number``, ``messaging`` (inbound SMS reach us) or ``signal``;
    ``state`` is ``done``, ``pending``, ``removed`` or, for Signal, its registration state."""

    name: str
    state: str


class IdentityView(msgspec.Struct):
    user_id: uuid.UUID
    status: str  # provisioning, active, suspended, failed, deprovisioning, deleted
    email: str | None
    phone_number: str | None
    signal: str  # none, pending, retrying, awaiting_code, captcha_required, registered, failed, unregistered
    steps: list[StepView]
    pending: list[str]  # the steps not done yet
    failure_step: str | None
    failure_reason: str | None
    last_error: str | None
    signal_error: str | None
    provisioned_at: datetime | None
    status_changed_at: datetime
    updated_at: datetime


class ProvisioningIssue(msgspec.Struct):
    """Why an operator should look: ``failed``, ``stuck`` (no progress for a while), ``signal_captcha``
    (Signal wants a captcha solved) or ``signal_failed``."""

    problem: str
    identity: IdentityView


class ProvisioningIssues(msgspec.Struct):
    issues: list[ProvisioningIssue]
    stuck_after_minutes: int
