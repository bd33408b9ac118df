"""Signal on each identity's number: registration (code by SMS, captcha when Signal wants one), the profile,
and the keep-alive receive that also collects what arrives.

Registration is a small state machine on the identity (``signal_state``):

* ``pending`` / ``retrying``: ``register_signal`` asks signal-cli to have Signal text a code, then
  ``awaiting_code``. A transient refusal (rate limit, signal-cli down) -> ``retrying`` at
  ``signal_next_attempt_at``, backing off from 30 s to an hour; Signal wanting a captcha ->
  ``captcha_required`` until an operator submits one (``admin identity signal-captcha``); past
  ``SIGNAL_REGISTRATION_TIMEOUT_SECONDS`` from the first attempt -> ``failed``.
* the code arrives as an SMS on our Telnyx webhook -> ``apply_code`` verifies it -> ``registered``, and the
  profile name is set by the next ``register_signal``. A code that never comes (``CODE_WAIT``) counts as a
  failed attempt. The ``advance_signal_registrations`` cron re-runs what is due.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta
from typing import Final

from poindexter_cloud.core import audit
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.service import Identity, StoredSignalMessage
from poindexter_cloud.integrations.errors import (
    ProviderRefused,
    ProviderUnavailable,
    SignalAlreadyRegistered,
    SignalCaptchaInvalid,
    SignalCaptchaRequired,
    SignalNoSession,
    SignalWrongCode,
)
from poindexter_cloud.integrations.signal import RECEIVE_BATCH, SignalAdapter
from poindexter_cloud.provisioning.lifecycle import Providers
from poindexter_cloud.provisioning.service import restart_signal

log = logging.getLogger(__name__)

RETRY_BASE: Final = timedelta(seconds=30)
RETRY_MAX: Final = timedelta(hours=1)
CODE_WAIT: Final = timedelta(minutes=10)  # about how long Signal's codes stay good
# Signal's registration SMS: "Your Signal code: 123456" (Android's variant: "<#> Your Signal code: 123-456").
CODE_IN_SMS: Final = re.compile(r"\bsignal\b[^\d]{0,40}?(\d{3})-?(\d{3})\b", re.IGNORECASE)


def code_in(text: str) -> str | None:
    found = CODE_IN_SMS.search(text)
    return found.group(1) + found.group(2) if found else None


def _retry_later(identity: Identity, error: str, now: datetime) -> None:
    identity.signal_attempts += 1
    delay = min(RETRY_BASE * 2 ** (identity.signal_attempts - 1), RETRY_MAX)
    identity.signal_state, identity.signal_error = "retrying", error
    identity.signal_next_attempt_at = now + delay


def _give_up(uow: UnitOfWork, identity: Identity, reason: str) -> None:
    identity.signal_state, identity.signal_error, identity.signal_next_attempt_at = "failed", reason, None
    audit.record(uow.session, "identity.signal_failed", subject=identity.user_id, reason=reason)
    log.error("signal registration failed", extra={"user_id": str(identity.user_id)})


def _registered(identity: Identity) -> None:
    identity.signal_state = "registered"
    identity.signal_error = identity.signal_next_attempt_at = None


async def attempt(uow: UnitOfWork, p: Providers, user_id: uuid.UUID, captcha: str | None = None) -> str:
    """One registration attempt for the identity (or nothing, if none is due): its outcome."""
    identity = await identities.get(uow.session, user_id, for_update=True)
    if identity is None or identity.status not in identities.LIVE_STATUSES or not identity.phone_attached:
        return "not ready"
    state = identity.signal_state
    if state not in identities.SIGNAL_IN_PROGRESS:
        return state
    if state == "captcha_required" and not captcha:
        return "waiting for a captcha"
    now = identities.now()
    started = identity.signal_started_at or now
    limit = timedelta(seconds=p.settings.signal_registration_timeout_seconds)
    if now - started > limit:
        _give_up(uow, identity, f"Signal registration did not finish within {limit}.")
        return "failed"
    assert identity.phone_number is not None
    try:
        await p.signal.register(identity.phone_number, captcha)
    except SignalAlreadyRegistered:
        _registered(identity)  # an earlier attempt's verification went through
        return "registered"
    except (SignalCaptchaRequired, SignalCaptchaInvalid) as exc:
        identity.signal_state, identity.signal_error = "captcha_required", exc.message
        identity.signal_next_attempt_at = None
        audit.record(uow.session, "identity.signal_captcha_required", subject=user_id)
        return "captcha required"
    except ProviderUnavailable as exc:
        _retry_later(identity, exc.message, now)
        return "retrying"
    except ProviderRefused as exc:
        _give_up(uow, identity, exc.message)
        return "failed"
    identity.signal_state, identity.signal_error = "awaiting_code", None
    identity.signal_code_requested_at, identity.signal_next_attempt_at = now, None
    return "awaiting code"


async def apply_code(uow: UnitOfWork, p: Providers, identity: Identity, code: str) -> bool:
    """Verify a code texted to the (locked) identity's number; False if it is not awaiting one (the SMS is
    then an ordinary one). A transient failure raises, so the webhook's job retries with the same code.
    Once registered, ``register_signal`` is deferred in the same transaction to set the profile, so it is set
    even if the webhook's job dies right after its commit."""
    if identity.signal_state != "awaiting_code" or identity.phone_number is None:
        return False
    try:
        await p.signal.verify(identity.phone_number, code)
    except SignalAlreadyRegistered:
        pass
    except SignalWrongCode:
        identity.signal_error = "A wrong Signal code arrived; waiting for the right one."
        return True
    except SignalNoSession as exc:
        _retry_later(identity, exc.message, identities.now())
        identity.signal_next_attempt_at = identities.now()
        await uow.defer_job("register_signal", user_id=str(identity.user_id))
        return True
    except ProviderRefused as exc:
        _give_up(uow, identity, exc.message)
        return True
    _registered(identity)
    audit.record(uow.session, "identity.signal_registered", subject=identity.user_id)
    await uow.defer_job("register_signal", user_id=str(identity.user_id))
    return True


async def ensure_profile(uow: UnitOfWork, p: Providers, user_id: uuid.UUID) -> bool:
    """Set the Signal profile name of a registered account if it is not set yet; True if it was set now."""
    identity = await identities.get(uow.session, user_id, for_update=True)
    name = p.settings.signal_profile_name
    if identity is None or identity.signal_state != "registered" or identity.signal_profile_name == name:
        return False
    assert identity.phone_number is not None
    await p.signal.set_profile(identity.phone_number, name)
    identity.signal_profile_name = name
    return True


async def due(uow: UnitOfWork) -> list[uuid.UUID]:
    """Users whose registration should be attempted now: a retry that is due, or a code that never came
    (counted as a failed attempt)."""
    now = identities.now()
    session = uow.session
    for user_id in await identities.signal_codes_overdue(session, now - CODE_WAIT):
        identity = await identities.get(session, user_id, for_update=True)
        if identity is not None and identity.signal_state == "awaiting_code":
            _retry_later(identity, "No Signal code arrived.", now)
            identity.signal_next_attempt_at = now
    return await identities.signal_attempts_due(session, now)


# --- keep-alive: receive, and store what arrives ---------------------------------------------------------


async def receive_batch(
    uow: UnitOfWork, resources: Resources, signal: SignalAdapter, account: identities.SignalAccount
) -> tuple[list[StoredSignalMessage], bool]:
    """Take one batch of what signal-cli holds for the account and store it (each message counted) in the
    caller's transaction, which must commit right after (signal-cli hands each envelope out once); the new
    rows, and whether more may be waiting. The database connection is taken first, so an outage leaves the
    messages with signal-cli."""
    await uow.session.connection()
    batch = await signal.receive(account.number, RECEIVE_BATCH)
    stored = await identities.store_signal_envelopes(
        uow, resources, account.identity_id, account.user_id, batch
    )
    return stored, len(batch) >= RECEIVE_BATCH


async def registration_lost(uow: UnitOfWork, user_id: uuid.UUID) -> bool:
    """signal-cli no longer holds the number registered (Signal dropped it, or its data was lost): register
    it again. True if a registration was started."""
    identity = await identities.get(uow.session, user_id, for_update=True)
    if identity is None or identity.signal_state != "registered":
        return False
    identity.signal_profile_name = None
    restart_signal(identity)
    audit.record(uow.session, "identity.signal_registration_lost", subject=user_id)
    await uow.defer_job("register_signal", user_id=str(user_id))
    return True
