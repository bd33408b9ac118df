"""The accounts API contract."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

Email = Annotated[str, msgspec.Meta(max_length=254, examples=["ada@example.com"])]
Password = Annotated[str, msgspec.Meta(max_length=256)]
# A name shows in the console and in emails, and PostgreSQL's text refuses NUL: no control characters.
Name = Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    name: Name | None = None


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(max_length=200)]


class TokenResponse(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: uuid.UUID
    token_type: str = "Bearer"


class EmailRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: Email


class LinkTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(max_length=200)]


class PasswordResetRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(max_length=200)]
    new_password: Password


class Account(msgspec.Struct):
    id: uuid.UUID
    email: str
    name: str | None
    status: str
    email_verified: bool
    is_admin: bool
    created_at: datetime


class AccountUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    email: Email | None = None
    password: Password | None = None
    current_password: Password | None = None


class AccountDeletion(msgspec.Struct, forbid_unknown_fields=True):
    password: Password


class Accepted(msgspec.Struct):
    status: str = "accepted"
    message: str | None = None


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None


class ApiKeyInfo(msgspec.Struct):
    id: uuid.UUID
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    last_used_ip: str | None
    expires_at: datetime | None


class ApiKeyCreated(msgspec.Struct):
    """The one response that carries the secret: it is never shown again."""

    id: uuid.UUID
    name: str | None
    prefix: str
    key: str
    created_at: datetime


class ApiKeyRotated(msgspec.Struct):
    key: ApiKeyCreated
    previous_key_expires_at: datetime | None


class ApiKeyList(msgspec.Struct):
    data: list[ApiKeyInfo]


class UserSummary(msgspec.Struct):
    id: uuid.UUID
    email: str
    name: str | None
    status: str
    is_admin: bool
    email_verified: bool
    created_at: datetime


class UserPage(msgspec.Struct):
    data: list[UserSummary]
    total: int
    limit: int
    offset: int
