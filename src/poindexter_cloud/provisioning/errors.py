"""Provisioning's own errors (the providers' are ``integrations.errors``)."""

from __future__ import annotations

from poindexter_cloud.core.errors import Conflict, NotFound


class IdentityNotFound(NotFound):
    code = "identity_not_found"


class NotAwaitingCaptcha(Conflict):
    code = "signal_not_awaiting_captcha"


class NotProvisionable(Conflict):
    """The user has no subscription granting the service, or their account is being erased."""

    code = "not_provisionable"
