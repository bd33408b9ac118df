"""Tables owned by accounts: users, their sessions and refresh tokens, API keys, and emailed tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from poindexter_cloud.core.db import Base, created_at, updated_at, uuid_pk


class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("uq_users_email_lower", text("lower(email)"), unique=True),)

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(Text)  # stored normalised (trimmed, lower-case)
    password_hash: Mapped[str] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    stripe_customer_id: Mapped[str | None] = mapped_column(Text, unique=True)
    # active, suspended (by an operator), deleted (erased; the row stays, anonymised, for billing records)
    status: Mapped[str] = mapped_column(Text, server_default="active")
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    is_admin: Mapped[bool] = mapped_column(server_default="false")
    email_verified_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)  # HMAC-SHA256 of the whole key, hex
    key_prefix: Mapped[str] = mapped_column(Text)  # what the console shows, e.g. pk_live_Ab12
    name: Mapped[str | None] = mapped_column(Text)
    last_used_at: Mapped[datetime | None]
    last_used_ip: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None]  # set when rotated: the old key works until then
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()


class Session(Base):
    """One login: a family of refresh tokens. Revoking it ends every token of the family."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    ip: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    last_refreshed_at: Mapped[datetime | None]


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]  # rotated: presenting it again is reuse
    created_at: Mapped[datetime] = created_at()


class EmailToken(Base):
    """A single-use link sent by email: verify an address or reset a password."""

    __tablename__ = "email_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(Text)  # verify_email, reset_password
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
