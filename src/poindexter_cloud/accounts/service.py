"""Accounts' rules: registration, login, sessions, email links, account changes and erasure.

Functions take the caller's unit of work (or session) and never commit. Jobs they need (emails, erasure)
are deferred on the unit of work, so they run only if the caller's transaction commits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.accounts import api_keys, passwords
from poindexter_cloud.accounts.api_keys import ApiKeyVerifier, IssuedKey
from poindexter_cloud.accounts.errors import (
    AccountSuspended,
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidLink,
    InvalidToken,
    UserNotFound,
)
from poindexter_cloud.accounts.models import ApiKey, EmailToken, RefreshToken, Session, User
from poindexter_cloud.accounts.throttle import LoginThrottle
from poindexter_cloud.accounts.tokens import SigningKeys, issue_access_token
from poindexter_cloud.core import audit
from poindexter_cloud.core.crypto import KeyRing, derive_key, random_token
from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.models import AuditEvent
from poindexter_cloud.core.settings import Settings

# No control characters: none belongs in an address, and PostgreSQL's text refuses NUL.
_EMAIL = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)
VERIFY_EMAIL, RESET_PASSWORD = "verify_email", "reset_password"
LINK_LIFETIMES = {VERIFY_EMAIL: timedelta(days=2), RESET_PASSWORD: timedelta(hours=1)}
LINK_PATHS = {VERIFY_EMAIL: "/console/verify-email", RESET_PASSWORD: "/console/reset-password"}
# A rotated refresh token presented again within this time is a concurrent refresh, not a replay
REFRESH_REUSE_GRACE = timedelta(seconds=30)


def now() -> datetime:
    return datetime.now(UTC)


def normalize_email(raw: str) -> str:
    """Trimmed and lower-cased: addresses are unique case-insensitively."""
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidEmail("That is not a valid email address.")
    return email


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: uuid.UUID
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Client:
    """Who is calling, for sessions and the audit log."""

    ip: str | None
    user_agent: str | None


class Accounts:
    """The accounts service for one process: settings and the keys derived from them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signing_keys = SigningKeys.from_settings(settings)
        previous = settings.secret_key_previous
        self._refresh_hashes = KeyRing.derive("refresh-token", settings.secret_key, previous)
        self._link_key = derive_key(settings.secret_key, "email-link")
        self._link_hashes = KeyRing.derive("email-link-hash", settings.secret_key, previous)

    # --- registration and login -----------------------------------------------------------------

    async def register(
        self, uow: UnitOfWork, email: str, password: str, name: str | None, client: Client
    ) -> tuple[User, TokenPair]:
        email = normalize_email(email)
        passwords.check_policy(password, email)
        user = User(
            id=uuid.uuid4(),
            email=email,
            password_hash=passwords.hash_password(password),
            name=name,
            status="active",
        )
        uow.session.add(user)
        try:
            await uow.session.flush()
        except IntegrityError:
            raise EmailTaken("An account with that email already exists.") from None
        audit.record(uow.session, "auth.registered", actor=user.id, subject=user.id, ip=client.ip)
        await self.send_link(uow, user, VERIFY_EMAIL)
        return user, await self._start_session(uow.session, user, client)

    async def login(self, session: AsyncSession, email: str, password: str, client: Client) -> TokenPair:
        """Tokens for a right email and password. Unknown email and wrong password fail alike."""
        user = await self._user_by_email(session, email)
        hash_to_check = user.password_hash if user is not None and user.status != "deleted" else None
        if not passwords.verify_password(hash_to_check, password) or user is None:
            # A deleted account is no account: its failures are not tied to it (erasure may be under way).
            subject = user.id if user is not None and user.status != "deleted" else None
            audit.record(session, "auth.login_failed", subject=subject, ip=client.ip)
            raise InvalidCredentials("The email or password is not right.")
        if user.status == "suspended":
            audit.record(session, "auth.login_refused_suspended", subject=user.id, ip=client.ip)
            raise AccountSuspended("This account is suspended.")
        if passwords.needs_rehash(user.password_hash):
            user.password_hash = passwords.hash_password(password)
        audit.record(session, "auth.login", actor=user.id, subject=user.id, ip=client.ip)
        return await self._start_session(session, user, client)

    async def _user_by_email(self, session: AsyncSession, email: str) -> User | None:
        try:
            normalized = normalize_email(email)
        except InvalidEmail:
            return None
        return (
            await session.execute(select(User).where(func.lower(User.email) == normalized))
        ).scalar_one_or_none()

    async def _start_session(self, session: AsyncSession, user: User, client: Client) -> TokenPair:
        login = Session(
            id=uuid.uuid4(), user_id=user.id, ip=client.ip, user_agent=(client.user_agent or "")[:300]
        )
        session.add(login)
        await session.flush()  # no ORM relationship orders the inserts, so the session row goes first
        return await self._issue(session, user.id, login.id)

    async def _issue(self, session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> TokenPair:
        refresh = f"rt_{random_token()}"
        session.add(
            RefreshToken(
                session_id=session_id,
                token_hash=self._refresh_hashes.hash(refresh),
                expires_at=now() + timedelta(days=self.settings.refresh_token_ttl_days),
            )
        )
        await session.flush()
        ttl = self.settings.access_token_ttl_seconds
        access = issue_access_token(self.signing_keys, user_id, session_id, ttl)
        return TokenPair(access, refresh, ttl, user_id, session_id)

    # --- refresh and logout ---------------------------------------------------------------------

    async def refresh(self, session: AsyncSession, refresh_token: str, client: Client) -> TokenPair:
        """Rotate a refresh token. Presenting one that was already rotated revokes its whole family, unless
        it was rotated less than `REFRESH_REUSE_GRACE` ago: two tabs, or two requests of one page, whose
        access token expired together refresh with the same token at once, and the second must not log the
        user out. It gets a pair of its own in the same session (what Auth0 calls a reuse interval: a thief
        replaying within those seconds goes unnoticed, one replaying later ends the session).

        On reuse this records the revocation and raises; the caller commits before answering so the
        revocation sticks although the request fails.
        """
        row = (
            await session.execute(
                select(RefreshToken, Session, User)
                .join(Session, Session.id == RefreshToken.session_id)
                .join(User, User.id == Session.user_id)
                .where(RefreshToken.token_hash.in_(self._refresh_hashes.hashes(refresh_token)))
                .with_for_update(of=[RefreshToken, Session])
            )
        ).one_or_none()
        if row is None:
            raise InvalidToken("The refresh token is not valid.")
        token, login, user = row
        if login.revoked_at is not None:
            raise InvalidToken("This session has ended; log in again.")
        if token.used_at is not None and now() - token.used_at > REFRESH_REUSE_GRACE:
            login.revoked_at, login.revoked_reason = now(), "refresh_token_reuse"
            audit.record(
                session, "auth.refresh_reuse", subject=user.id, ip=client.ip, session_id=str(login.id)
            )
            raise InvalidToken("This refresh token was already used; the session has been ended.")
        if token.expires_at <= now():
            raise InvalidToken("The refresh token has expired; log in again.")
        if user.status != "active":
            raise AccountSuspended("This account is suspended.")
        if token.used_at is None:
            token.used_at = now()
        login.last_refreshed_at = now()
        return await self._issue(session, user.id, login.id)

    async def logout(
        self, session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID, client: Client
    ) -> None:
        await session.execute(
            update(Session)
            .where(Session.id == session_id, Session.revoked_at.is_(None))
            .values(revoked_at=now(), revoked_reason="logout")
        )
        audit.record(session, "auth.logout", actor=user_id, subject=user_id, ip=client.ip)

    async def revoke_sessions(self, session: AsyncSession, user_id: uuid.UUID, reason: str) -> None:
        await session.execute(
            update(Session)
            .where(Session.user_id == user_id, Session.revoked_at.is_(None))
            .values(revoked_at=now(), revoked_reason=reason)
        )

    async def session_user(self, session: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID) -> User:
        """The user behind a valid access token, if its session is live and the user active."""
        row = (
            await session.execute(
                select(User, Session.revoked_at)
                .join(Session, Session.user_id == User.id)
                .where(User.id == user_id, Session.id == session_id)
            )
        ).one_or_none()
        if row is None or row[1] is not None or row[0].status == "deleted":
            raise InvalidToken("This session has ended; log in again.")
        if row[0].status == "suspended":
            raise AccountSuspended("This account is suspended.")
        return row[0]

    # --- email links ----------------------------------------------------------------------------

    def link_secret(self, purpose: str, token_id: uuid.UUID) -> str:
        """The secret of a link, derived from its row id: the emailing job needs only the id."""
        digest = hmac.new(self._link_key, f"{purpose}:{token_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def link_url(self, purpose: str, token_id: uuid.UUID) -> str:
        return (
            f"{self.settings.web_base_url}{LINK_PATHS[purpose]}?token={self.link_secret(purpose, token_id)}"
        )

    async def send_link(self, uow: UnitOfWork, user: User, purpose: str) -> None:
        token_id = uuid.uuid4()
        uow.session.add(
            EmailToken(
                id=token_id,
                user_id=user.id,
                purpose=purpose,
                token_hash=self._link_hashes.hash(self.link_secret(purpose, token_id)),
                expires_at=now() + LINK_LIFETIMES[purpose],
            )
        )
        await uow.session.flush()
        await uow.defer_job("send_account_email", email_token_id=str(token_id))

    async def email_for_link(self, session: AsyncSession, token_id: uuid.UUID) -> tuple[str, str, str] | None:
        """(address, purpose, url) of a link still worth sending, for the emailing job."""
        row = (
            await session.execute(
                select(EmailToken, User.email)
                .join(User, User.id == EmailToken.user_id)
                .where(EmailToken.id == token_id)
            )
        ).one_or_none()
        if row is None or row[0].used_at is not None or row[0].expires_at <= now():
            return None
        token, address = row
        return address, token.purpose, self.link_url(token.purpose, token.id)

    async def _use_link(self, session: AsyncSession, purpose: str, secret: str) -> User:
        row = (
            await session.execute(
                select(EmailToken, User)
                .join(User, User.id == EmailToken.user_id)
                .where(
                    EmailToken.token_hash.in_(self._link_hashes.hashes(secret)),
                    EmailToken.purpose == purpose,
                )
                .with_for_update(of=EmailToken)
            )
        ).one_or_none()
        if (
            row is None
            or row[0].used_at is not None
            or row[0].expires_at <= now()
            or row[1].status == "deleted"
        ):
            raise InvalidLink("This link is not valid any more. Ask for a new one.")
        row[0].used_at = now()
        return row[1]

    async def verify_email(self, session: AsyncSession, secret: str, client: Client) -> User:
        user = await self._use_link(session, VERIFY_EMAIL, secret)
        user.email_verified_at = user.email_verified_at or now()
        audit.record(session, "auth.email_verified", actor=user.id, subject=user.id, ip=client.ip)
        return user

    async def request_password_reset(self, uow: UnitOfWork, email: str, client: Client) -> None:
        """Sends a link if the account exists; says nothing either way."""
        user = await self._user_by_email(uow.session, email)
        if user is None or user.status == "deleted":
            return
        audit.record(uow.session, "auth.password_reset_requested", subject=user.id, ip=client.ip)
        await self.send_link(uow, user, RESET_PASSWORD)

    async def reset_password(
        self, session: AsyncSession, secret: str, new_password: str, client: Client
    ) -> User:
        user = await self._use_link(session, RESET_PASSWORD, secret)
        passwords.check_policy(new_password, user.email)
        user.password_hash = passwords.hash_password(new_password)
        user.email_verified_at = user.email_verified_at or now()  # they read mail sent to it
        await self.revoke_sessions(session, user.id, "password_reset")
        audit.record(session, "auth.password_reset", actor=user.id, subject=user.id, ip=client.ip)
        return user

    # --- the account ----------------------------------------------------------------------------

    async def update_account(
        self,
        uow: UnitOfWork,
        user: User,
        client: Client,
        *,
        name: str | None = None,
        email: str | None = None,
        password: str | None = None,
        current_password: str | None = None,
    ) -> User:
        if (email is not None or password is not None) and not passwords.verify_password(
            user.password_hash, current_password or ""
        ):
            raise InvalidCredentials("Changing the email or password needs the current password.")
        if name is not None:
            user.name = name.strip() or None
        if email is not None and normalize_email(email) != user.email:
            user.email, user.email_verified_at = normalize_email(email), None
            try:
                await uow.session.flush()
            except IntegrityError:
                raise EmailTaken("An account with that email already exists.") from None
            audit.record(uow.session, "account.email_changed", actor=user.id, subject=user.id, ip=client.ip)
            await self.send_link(uow, user, VERIFY_EMAIL)
        if password is not None:
            passwords.check_policy(password, user.email)
            user.password_hash = passwords.hash_password(password)
            audit.record(
                uow.session, "account.password_changed", actor=user.id, subject=user.id, ip=client.ip
            )
        return user

    async def delete_account(self, uow: UnitOfWork, user: User, password: str, client: Client) -> list[str]:
        """Start erasure: the account stops working now; personal data goes once deprovisioned.

        Returns the hashes of the revoked API keys, for the caller to announce once committed.
        """
        if not passwords.verify_password(user.password_hash, password):
            raise InvalidCredentials("Deleting the account needs the current password.")
        user.status, user.deleted_at = "deleted", now()
        await self.revoke_sessions(uow.session, user.id, "account_deleted")
        revoked = await api_keys.revoke_all_for_user(uow.session, user.id)
        audit.record(uow.session, "account.deleted", actor=user.id, subject=user.id, ip=client.ip)
        await uow.defer_job("erase_account", user_id=str(user.id))
        return revoked

    async def erase_personal_data(self, session: AsyncSession, user_id: uuid.UUID) -> bool:
        """Anonymise a deleted account, keeping only what billing law requires (the Stripe customer id,
        and the user id its invoices and usage refer to). Idempotent."""
        user = await session.get(User, user_id, with_for_update=True)
        if user is None or user.status != "deleted":
            return False
        user.email = f"erased-{user.id}@erased.invalid"
        user.name, user.password_hash = None, "!"
        await session.execute(
            update(ApiKey)
            .where(ApiKey.user_id == user_id)
            .values(name=None, last_used_ip=None, revoked_at=func.coalesce(ApiKey.revoked_at, func.now()))
        )
        await session.execute(
            update(Session).where(Session.user_id == user_id).values(ip=None, user_agent=None)
        )
        await session.execute(
            update(AuditEvent)
            .where(or_(AuditEvent.subject_user_id == user_id, AuditEvent.actor_user_id == user_id))
            .values(ip=None)
        )
        audit.record(session, "account.erased", subject=user_id)
        return True

    async def export(self, session: AsyncSession, user: User) -> dict[str, Any]:
        """Everything we hold about the person, as JSON-ready data."""
        sessions = (await session.execute(select(Session).where(Session.user_id == user.id))).scalars()
        keys = (await session.execute(select(ApiKey).where(ApiKey.user_id == user.id))).scalars()
        events = (
            await session.execute(
                select(AuditEvent)
                .where(AuditEvent.subject_user_id == user.id)
                .order_by(AuditEvent.created_at)
            )
        ).scalars()
        return {
            "account": {
                "id": str(user.id),
                "email": user.email,
                "name": user.name,
                "status": user.status,
                "email_verified_at": user.email_verified_at,
                "created_at": user.created_at,
                "stripe_customer_id": user.stripe_customer_id,
            },
            "sessions": [
                {
                    "id": str(s.id),
                    "ip": s.ip,
                    "user_agent": s.user_agent,
                    "created_at": s.created_at,
                    "revoked_at": s.revoked_at,
                }
                for s in sessions
            ],
            "api_keys": [
                {
                    "id": str(k.id),
                    "name": k.name,
                    "prefix": k.key_prefix,
                    "created_at": k.created_at,
                    "last_used_at": k.last_used_at,
                    "last_used_ip": k.last_used_ip,
                    "revoked_at": k.revoked_at,
                }
                for k in keys
            ],
            "security_events": [
                {"action": e.action, "ip": e.ip, "at": e.created_at, "details": e.details} for e in events
            ],
        }

    # --- the Stripe customer (billing creates it; accounts owns the users row) ------------------

    async def stripe_customer_id(
        self, session: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False
    ) -> str | None:
        """The user's Stripe customer id, if billing has created one. ``for_update`` locks the user row until
        the transaction ends, so two requests cannot both create a customer."""
        query = select(User.stripe_customer_id).where(User.id == user_id)
        if for_update:
            query = query.with_for_update()
        found = (await session.execute(query)).one_or_none()
        if found is None:
            raise UserNotFound("No such user.")
        return found[0]

    async def set_stripe_customer_id(
        self, session: AsyncSession, user_id: uuid.UUID, customer_id: str
    ) -> None:
        await session.execute(update(User).where(User.id == user_id).values(stripe_customer_id=customer_id))

    async def user_for_stripe_customer(self, session: AsyncSession, customer_id: str) -> uuid.UUID | None:
        found: uuid.UUID | None = (
            await session.execute(select(User.id).where(User.stripe_customer_id == customer_id))
        ).scalar_one_or_none()
        return found

    # --- operators ------------------------------------------------------------------------------

    async def get_user(self, session: AsyncSession, user_id: uuid.UUID) -> User:
        user = await session.get(User, user_id)
        if user is None:
            raise UserNotFound("No such user.")
        return user

    async def find_user(self, session: AsyncSession, id_or_email: str) -> User:
        try:
            return await self.get_user(session, uuid.UUID(id_or_email))
        except ValueError:
            user = await self._user_by_email(session, id_or_email)
        if user is None:
            raise UserNotFound("No such user.")
        return user

    async def list_users(
        self, session: AsyncSession, search: str | None, limit: int, offset: int
    ) -> tuple[list[User], int]:
        query = select(User)
        if search:
            escaped = search.strip().lower().replace("%", r"\%").replace("_", r"\_")
            pattern = f"%{escaped}%"
            query = query.where(
                or_(func.lower(User.email).like(pattern), func.lower(User.name).like(pattern))
            )
        total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
        users = (
            (
                await session.execute(
                    query.order_by(User.created_at.desc(), User.id).limit(limit).offset(offset)
                )
            )
            .scalars()
            .all()
        )
        return list(users), int(total)

    async def set_suspended(
        self,
        session: AsyncSession,
        user: User,
        suspended: bool,
        reason: str | None,
        actor: uuid.UUID | None,
        client: Client,
    ) -> None:
        if user.status == "deleted":
            raise UserNotFound("That account has been deleted.")
        user.status = "suspended" if suspended else "active"
        user.suspended_reason = reason if suspended else None
        action = "admin.user_suspended" if suspended else "admin.user_unsuspended"
        audit.record(session, action, actor=actor, subject=user.id, ip=client.ip, reason=reason)

    async def make_admin(self, uow: UnitOfWork, email: str, password: str | None, client: Client) -> User:
        """Grant admin to an account, creating it (verified) if it does not exist yet."""
        user = await self._user_by_email(uow.session, email)
        if user is None:
            if password is None:
                raise UserNotFound("No such user; give a password to create one.")
            user, _ = await self.register(uow, email, password, None, client)
            user.email_verified_at = now()
        user.is_admin = True
        audit.record(uow.session, "admin.granted", subject=user.id, ip=client.ip)
        return user

    # --- shared by the JSON API and the console: throttled login, API keys, the audit log ----------------

    async def login_throttled(
        self, uow: UnitOfWork, throttle: LoginThrottle, email: str, password: str, client: Client
    ) -> TokenPair:
        """``login`` behind the login throttle: refused (429) while the account or the IP is at its limit; a
        failure is counted and re-raised, and the caller commits before answering so its audit row stays; a
        success clears the account's count once the caller commits."""
        await throttle.check(email, client.ip)
        try:
            pair = await self.login(uow.session, email, password, client)
        except (InvalidCredentials, AccountSuspended):
            await throttle.failed(email, client.ip)
            raise
        uow.after_commit(lambda: throttle.succeeded(email, client.ip))
        return pair

    async def create_api_key(
        self,
        uow: UnitOfWork,
        verifier: ApiKeyVerifier,
        user_id: uuid.UUID,
        name: str | None,
        client: Client,
    ) -> IssuedKey:
        """A new key, audited; once committed, replicas drop any negative cache entry for its hash (someone
        may have tried the key early)."""
        issued = await api_keys.create_key(uow.session, self.settings, user_id, name)
        audit.record(
            uow.session,
            "api_key.created",
            actor=user_id,
            subject=user_id,
            ip=client.ip,
            key_id=str(issued.row.id),
        )
        uow.after_commit(lambda: verifier.announce_revoked([issued.row.key_hash]))
        return issued

    async def revoke_api_key(
        self, uow: UnitOfWork, verifier: ApiKeyVerifier, user_id: uuid.UUID, key_id: uuid.UUID, client: Client
    ) -> None:
        """Revoke a key, audited; once committed it stops working on every replica within a second."""
        key = await api_keys.revoke_key(uow.session, user_id, key_id)
        audit.record(
            uow.session, "api_key.revoked", actor=user_id, subject=user_id, ip=client.ip, key_id=str(key_id)
        )
        uow.after_commit(lambda: verifier.announce_revoked([key.key_hash]))

    async def rotate_api_key(
        self, uow: UnitOfWork, verifier: ApiKeyVerifier, user_id: uuid.UUID, key_id: uuid.UUID, client: Client
    ) -> tuple[IssuedKey, datetime | None]:
        """A new secret for a key, audited, and when the old one stops working (its grace period)."""
        issued = await api_keys.rotate_key(uow.session, self.settings, user_id, key_id)
        previous = await uow.session.get(ApiKey, key_id)
        audit.record(
            uow.session,
            "api_key.rotated",
            actor=user_id,
            subject=user_id,
            ip=client.ip,
            key_id=str(key_id),
            new_key_id=str(issued.row.id),
        )
        uow.after_commit(lambda: verifier.announce_revoked([issued.row.key_hash]))
        # Other replicas learn the old key's new expiry by dropping this user's cached keys.
        uow.after_commit(lambda: verifier.announce_user_changed(user_id))
        return issued, previous.expires_at if previous else None

    async def security_events(
        self, session: AsyncSession, *, subject: uuid.UUID | None = None, limit: int, offset: int
    ) -> tuple[list[AuditEvent], int]:
        """The audit log, newest first, optionally only the events about one user, and how many there are."""
        query = select(AuditEvent)
        if subject is not None:
            query = query.where(AuditEvent.subject_user_id == subject)
        total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
        events = (
            await session.execute(
                query.order_by(AuditEvent.created_at.desc(), AuditEvent.id).limit(limit).offset(offset)
            )
        ).scalars()
        return list(events), int(total)
