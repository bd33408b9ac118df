"""Errors of the provider adapters.

The adapters turn every provider failure into one of two kinds: ``ProviderUnavailable`` (worth retrying:
timeouts, 5xx, rate limits) and ``ProviderRefused`` (retrying the same call cannot help: a refusal, a
misconfiguration). Provisioning's jobs retry the first and record the second as the identity's failure; the
identity API answers either with a code of its own. Messages are our own; a provider's raw body never reaches
a client or a log.
"""

from __future__ import annotations

from poindexter_cloud.core.errors import AppError


class ProviderError(AppError):
    status = 502
    code = "provider_error"

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(message)
        self.provider = provider


class ProviderUnavailable(ProviderError):
    """Not answering, timed out, rate limited us or failed on its side: worth retrying."""

    status = 503
    code = "provider_unavailable"


class ProviderRefused(ProviderError):
    """The provider refused the request; the same request would be refused again."""

    code = "provider_refused"


class ProviderObjectMissing(ProviderRefused):
    """The object the call names does not exist (any more)."""

    code = "provider_object_missing"


class NumberNotAvailable(ProviderRefused):
    """The number was sold to someone else between the search and the order."""

    code = "number_not_available"


class SignalCaptchaRequired(ProviderRefused):
    """Signal wants a captcha before it sends a code (an operator solves it)."""

    code = "signal_captcha_required"


class SignalCaptchaInvalid(ProviderRefused):
    code = "signal_captcha_invalid"


class SignalAlreadyRegistered(ProviderRefused):
    code = "signal_already_registered"


class SignalWrongCode(ProviderRefused):
    code = "signal_wrong_code"


class SignalNoSession(ProviderRefused):
    """No verification is pending (never requested, or the code expired): register again."""

    code = "signal_no_session"


class SignalNotRegistered(ProviderRefused):
    code = "signal_not_registered"


class InvalidTelnyxSignature(AppError):
    """A Telnyx webhook whose Ed25519 signature does not verify, or whose timestamp is over 5 minutes off."""

    status = 400
    code = "invalid_signature"
