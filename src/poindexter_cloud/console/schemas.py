"""The console's forms, as posted by its pages (application/x-www-form-urlencoded).

Unknown fields are allowed: every form also carries ``_csrf_token``, which the CSRF middleware checks.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from poindexter_cloud.accounts.schemas import Email, Name, Password

LinkToken = Annotated[str, msgspec.Meta(max_length=200)]
NextPath = Annotated[str, msgspec.Meta(max_length=500)]


class SignupForm(msgspec.Struct):
    email: Email
    password: Password
    name: Name = ""


class LoginForm(msgspec.Struct):
    email: Email
    password: Password
    next: NextPath = ""


class EmailForm(msgspec.Struct):
    email: Email


class LinkForm(msgspec.Struct):
    token: LinkToken


class ResetForm(msgspec.Struct):
    token: LinkToken
    new_password: Password


class PlanForm(msgspec.Struct):
    plan: Literal["basic", "pro"]


class KeyForm(msgspec.Struct):
    name: Name = ""


class CheckForm(msgspec.Struct):
    key_id: uuid.UUID


class RetryForm(msgspec.Struct):
    return_to: Literal["provisioning", "user"] = "provisioning"  # the page the operator retried from
