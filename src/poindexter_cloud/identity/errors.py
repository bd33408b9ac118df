"""Errors of the identity API, each with a stable code (docs/dex-client.md lists them).

Provider failures reach Dex as ours: the adapters' ``ProviderUnavailable`` (503 ``provider_unavailable``,
worth retrying) and ``ProviderRefused`` (502 ``provider_refused``) with messages of our own, or one of the
errors below where the refusal means something to the caller (no such message, a recipient without Signal,
a time range Google finds empty...). A provider's own body never reaches a response.
"""

from __future__ import annotations

from poindexter_cloud.core.errors import AppError, Conflict, Forbidden, NotFound, RateLimited


class NoIdentity(NotFound):
    code = "no_identity"


# --- the identity's state -----------------------------------------------------------------------------------


class IdentityPending(Conflict):
    """The part the call needs is still being provisioned (``details``: which part, what is pending)."""

    code = "identity_pending"


class IdentityFailed(Conflict):
    """Provisioning the part the call needs failed for good; an operator retries it."""

    code = "identity_failed"


class IdentitySuspended(Forbidden):
    """The subscription's payment is failing: nothing is sent, and the mailbox is suspended until paid."""

    code = "identity_suspended"


class IdentityRemoved(AppError):
    """The identity is being (or has been) taken down: the subscription ended or the account is erased."""

    status = 410
    code = "identity_removed"


class SubscriptionRequired(AppError):
    """No active subscription: reading what arrived still works, sending does not."""

    status = 402
    code = "subscription_required"


class OperationRateLimited(RateLimited):
    """The API key's limit for this operation is reached (``Retry-After`` says when to try again)."""

    code = "rate_limited"


# --- what the request says ----------------------------------------------------------------------------------


class InvalidEmailAddress(AppError):
    code = "invalid_email_address"


class InvalidPhoneNumber(AppError):
    code = "invalid_phone_number"


class NoRecipients(AppError):
    code = "no_recipients"


class TooManyRecipients(AppError):
    code = "too_many_recipients"


class InvalidHeader(AppError):
    """A subject or display name with a line break or control character (header injection)."""

    code = "invalid_header"


class EmptyMessage(AppError):
    code = "empty_message"


class MessageTooLong(AppError):
    code = "message_too_long"


class InvalidText(AppError):
    code = "invalid_text"


class InvalidAttachment(AppError):
    code = "invalid_attachment"


class AttachmentsTooLarge(AppError):
    status = 413
    code = "attachments_too_large"


class InvalidTime(AppError):
    code = "invalid_time"


class InvalidTimeZone(AppError):
    code = "invalid_time_zone"


class InvalidTimeRange(AppError):
    code = "invalid_time_range"


class InvalidEvent(AppError):
    """Google Calendar refused the event as given (``details.reason`` is Google's reason code)."""

    code = "invalid_event"


class InvalidCursor(AppError):
    """A page token or cursor this API did not hand out."""

    code = "invalid_cursor"


class InvalidQuery(AppError):
    code = "invalid_query"


class InvalidId(AppError):
    code = "invalid_id"


# --- what the provider says ---------------------------------------------------------------------------------


class MessageNotFound(NotFound):
    code = "message_not_found"


class AttachmentNotFound(NotFound):
    code = "attachment_not_found"


class EventNotFound(NotFound):
    code = "event_not_found"


class SignalRecipientUnknown(AppError):
    status = 422
    code = "signal_recipient_unknown"


class SignalGroupUnknown(NotFound):
    code = "signal_group_not_found"


class SignalPartlySent(AppError):
    """A group message reached some members but not all; sending it again reaches the others twice."""

    status = 502
    code = "signal_partly_sent"


class SmsRefused(AppError):
    """Telnyx refused the SMS for what it says (its recipient, its size)."""

    status = 422
    code = "sms_refused"
