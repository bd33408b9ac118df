"""Errors of the accounts module, each with a stable code."""

from __future__ import annotations

from poindexter_cloud.core.errors import AppError, Conflict, Forbidden, NotFound, RateLimited, Unauthorized


class InvalidEmail(AppError):
    code = "invalid_email"


class WeakPassword(AppError):
    code = "weak_password"


class EmailTaken(Conflict):
    code = "email_taken"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"


class InvalidToken(Unauthorized):
    """A missing, malformed, expired, tampered or revoked access or refresh token."""

    code = "invalid_token"


class InvalidLink(AppError):
    """An email link that is unknown, used or expired."""

    code = "invalid_link"


class LoginThrottled(RateLimited):
    code = "too_many_attempts"


class AccountSuspended(Forbidden):
    code = "account_suspended"


class InvalidApiKey(Unauthorized):
    code = "invalid_api_key"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class AdminOnly(Forbidden):
    code = "admin_only"


class UserNotFound(NotFound):
    code = "user_not_found"
