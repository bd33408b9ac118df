"""Errors of the billing module, each with a stable code.

Stripe's own errors never reach a client: the adapter maps them to these, with messages of our own.
"""

from __future__ import annotations

from poindexter_cloud.core.errors import AppError, Conflict, NotFound


class PaymentProviderUnavailable(AppError):
    """Stripe could not be reached, timed out, rate limited us or failed on its side: worth retrying."""

    status = 503
    code = "payment_provider_unavailable"


class PaymentProviderError(AppError):
    """Stripe refused a request of ours (a bug or a misconfiguration on our side, not the caller's)."""

    status = 502
    code = "payment_provider_error"


class PaymentDeclined(AppError):
    status = 402
    code = "payment_declined"


class StripeObjectMissing(NotFound):
    """The Stripe object asked for does not exist (in this Stripe account and mode)."""

    code = "stripe_object_missing"


class InvalidWebhookSignature(AppError):
    """A webhook whose signature does not verify, or whose timestamp is outside the tolerance."""

    status = 400
    code = "invalid_signature"


class AlreadySubscribed(Conflict):
    code = "already_subscribed"


class NoBillingAccount(NotFound):
    """The user has never started a checkout, so Stripe knows no customer for them."""

    code = "no_billing_account"


class BillingNotConfigured(AppError):
    """The Stripe catalog (prices) is missing: an operator must run `admin stripe sync`."""

    status = 503
    code = "billing_not_configured"
