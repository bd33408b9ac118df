"""Accounts over HTTP: registration, login, tokens, email links, the account, erasure and the audit log."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from conftest import RunningServer, eventually, make_settings
from poindexter_cloud.accounts.models import RefreshToken, Session, User
from poindexter_cloud.accounts.tokens import SigningKeys, issue_access_token
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.models import AuditEvent
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role, Settings
from poindexter_cloud.sandbox.smtp import MAILBOX

PASSWORD = "correct horse battery"


def new_email() -> str:
    return f"Ada.{uuid.uuid4().hex[:10]}@Example.com"


async def register(
    web: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    response = await web.post("/v1/auth/register", json={"email": email or new_email(), "password": password})
    assert response.status_code == 201, response.text
    return dict(response.json())


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def audit_actions(resources: Resources, user_id: str) -> list[str]:
    async with resources.db.sessions() as session:
        rows = await session.execute(
            select(AuditEvent.action)
            .where(AuditEvent.subject_user_id == uuid.UUID(user_id))
            .order_by(AuditEvent.created_at)
        )
        return list(rows.scalars())


async def link_in_mail(address: str, purpose_path: str) -> str:
    async def find() -> str | None:
        for message in MAILBOX.messages(address):
            match = re.search(rf"{purpose_path}\?token=([\w-]+)", message["text"])
            if match:
                return match.group(1)
        return None

    token: str = await eventually(find)
    return token


async def test_register_login_and_the_account(web: httpx.AsyncClient, resources: Resources) -> None:
    email = new_email()
    tokens = await register(web, email)
    account = (await web.get("/v1/account/", headers=bearer(tokens))).json()
    assert account["email"] == email.lower()
    assert account["email_verified"] is False
    login = await web.post("/v1/auth/login", json={"email": email.upper(), "password": PASSWORD})
    assert login.status_code == 200
    assert login.json()["user_id"] == tokens["user_id"]
    assert await audit_actions(resources, tokens["user_id"]) == ["auth.registered", "auth.login"]


async def test_the_same_email_in_another_case_is_taken(web: httpx.AsyncClient) -> None:
    email = new_email()
    await register(web, email)
    again = await web.post(
        "/v1/auth/register", json={"email": f"  {email.swapcase()} ", "password": PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "invalid_email"),
        ({"email": "ada\x00@example.com", "password": PASSWORD}, "invalid_email"),
        ({"email": "short@example.com", "password": "tiny"}, "weak_password"),
        ({"email": "same@example.com", "password": "aaaaaaaaaaaa"}, "weak_password"),
        ({"email": "x@example.com"}, "invalid_request"),
        ({"email": "x@example.com", "password": PASSWORD, "admin": True}, "invalid_request"),
        ({"email": "x@example.com", "password": PASSWORD, "name": "Ada\x00"}, "invalid_request"),
        ({"email": "x@example.com", "password": PASSWORD, "name": "Ada\nLovelace"}, "invalid_request"),
    ],
)
async def test_bad_registrations_are_refused_clearly_and_write_nothing(
    web: httpx.AsyncClient, resources: Resources, body: dict[str, Any], code: str
) -> None:
    async def users() -> int:
        async with resources.db.sessions() as session:
            return len((await session.execute(select(User.id))).all())

    before = await users()
    response = await web.post("/v1/auth/register", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"]
    assert await users() == before


async def test_unknown_email_and_wrong_password_fail_alike(web: httpx.AsyncClient) -> None:
    email = new_email()
    await register(web, email)
    started = time.perf_counter()
    wrong = await web.post("/v1/auth/login", json={"email": email, "password": "wrong password!"})
    wrong_time = time.perf_counter() - started
    started = time.perf_counter()
    unknown = await web.post("/v1/auth/login", json={"email": new_email(), "password": "wrong password!"})
    unknown_time = time.perf_counter() - started
    assert wrong.status_code == unknown.status_code == 401
    for body in (wrong.json(), unknown.json()):
        body["error"].pop("request_id")
    assert wrong.json()["error"] | {"request_id": None} == unknown.json()["error"] | {"request_id": None}
    # Both paths run one argon2 verification, so neither is an order of magnitude faster.
    assert unknown_time > wrong_time / 5 and wrong_time > unknown_time / 5


async def rotated_a_minute_ago(resources: Resources, user_id: str) -> None:
    """Move the user's refresh-token rotations a minute back, past the grace for concurrent refreshes."""
    logins = select(Session.id).where(Session.user_id == uuid.UUID(user_id))
    async with resources.db.sessions() as session:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None), RefreshToken.session_id.in_(logins))
            .values(used_at=func.now() - timedelta(minutes=1))
        )
        await session.commit()


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(
    web: httpx.AsyncClient, resources: Resources
) -> None:
    tokens = await register(web)
    first = await web.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert (await web.get("/v1/account/", headers=bearer(rotated))).status_code == 200

    await rotated_a_minute_ago(resources, tokens["user_id"])  # the replay comes later than two tabs would
    reuse = await web.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.json()["error"]["code"] == "invalid_token"
    # The thief's replay ended the session: the legitimate newest tokens are dead too.
    assert (
        await web.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    ).status_code == 401
    assert (await web.get("/v1/account/", headers=bearer(rotated))).status_code == 401
    assert "auth.refresh_reuse" in await audit_actions(resources, tokens["user_id"])


async def test_two_tabs_refreshing_at_once_both_stay_logged_in(
    web: httpx.AsyncClient, resources: Resources
) -> None:
    tokens = await register(web)
    both = await asyncio.gather(
        *(web.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}) for _ in range(2))
    )
    assert [r.status_code for r in both] == [200, 200]
    first, second = (r.json() for r in both)
    assert first["refresh_token"] != second["refresh_token"]
    for pair in (first, second):  # each tab's new tokens work, and go on rotating
        assert (await web.get("/v1/account/", headers=bearer(pair))).status_code == 200
        again = await web.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert again.status_code == 200
    assert "auth.refresh_reuse" not in await audit_actions(resources, tokens["user_id"])


async def test_logout_ends_the_session_at_once(web: httpx.AsyncClient, resources: Resources) -> None:
    tokens = await register(web)
    assert (await web.post("/v1/auth/logout", headers=bearer(tokens))).status_code == 204
    assert (await web.get("/v1/account/", headers=bearer(tokens))).status_code == 401
    assert (
        await web.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    ).status_code == 401
    assert (await audit_actions(resources, tokens["user_id"]))[-1] == "auth.logout"


async def test_expired_and_tampered_access_tokens_are_refused(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    tokens = await register(web)
    claims = issue_access_token(
        SigningKeys.from_settings(settings), uuid.UUID(tokens["user_id"]), uuid.uuid4(), ttl_seconds=-10
    )
    expired = await web.get("/v1/account/", headers={"Authorization": f"Bearer {claims}"})
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    token = tokens["access_token"]
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert (await web.get("/v1/account/", headers={"Authorization": f"Bearer {tampered}"})).status_code == 401
    assert (await web.get("/v1/account/")).status_code == 401


async def test_signing_keys_rotate_without_logging_anyone_out(database_url: str, redis_url: str) -> None:
    old, new = "a1" * 32, "b2" * 32

    async def server(keys: str) -> RunningServer:
        return RunningServer(
            create_app(Role.WEB, make_settings(database_url, redis_url, JWT_SIGNING_KEYS=keys))
        )

    async with await server(f"old:{old}") as before, httpx.AsyncClient(base_url=before.url) as client:
        tokens = await register(client)
    async with (
        await server(f"new:{new},old:{old}") as during,
        httpx.AsyncClient(base_url=during.url) as client,
    ):
        assert (await client.get("/v1/account/", headers=bearer(tokens))).status_code == 200
        refreshed = (
            await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        ).json()
    async with await server(f"new:{new}") as after, httpx.AsyncClient(base_url=after.url) as client:
        assert (await client.get("/v1/account/", headers=bearer(refreshed))).status_code == 200
        assert (await client.get("/v1/account/", headers=bearer(tokens))).status_code == 401


async def test_login_is_throttled_per_account_with_retry_after(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    email = new_email()
    await register(web, email)
    for _ in range(settings.login_attempts_per_account):
        assert (
            await web.post("/v1/auth/login", json={"email": email, "password": "nope nope nope"})
        ).status_code == 401
    throttled = await web.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "too_many_attempts"
    assert 0 < int(throttled.headers["retry-after"]) <= settings.login_throttle_window_seconds
    # An unknown address is throttled exactly the same way, so the 429 reveals nothing.
    unknown = new_email()
    for _ in range(settings.login_attempts_per_account):
        await web.post("/v1/auth/login", json={"email": unknown, "password": "nope nope nope"})
    assert (
        await web.post("/v1/auth/login", json={"email": unknown, "password": PASSWORD})
    ).status_code == 429


async def test_login_is_throttled_per_ip(database_url: str, redis_url: str) -> None:
    settings = make_settings(
        database_url, redis_url, LOGIN_ATTEMPTS_PER_IP="3", QUEUE_NAME=f"ip-{uuid.uuid4().hex[:6]}"
    )
    await _clear_ip_counter(settings)
    async with (
        RunningServer(create_app(Role.WEB, settings)) as server,
        httpx.AsyncClient(base_url=server.url) as web,
    ):
        for _ in range(3):
            await web.post("/v1/auth/login", json={"email": new_email(), "password": "nope nope nope"})
        response = await web.post("/v1/auth/login", json={"email": new_email(), "password": "nope nope nope"})
        assert response.status_code == 429
    await _clear_ip_counter(settings)


async def _clear_ip_counter(settings: Settings) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(settings.redis_url)
    await redis.delete("poindexter:login-failures:ip:127.0.0.1")
    await redis.aclose()


async def test_email_verification_link_works_once(
    web: httpx.AsyncClient, worker: Any, resources: Resources
) -> None:
    email = new_email()
    tokens = await register(web, email)
    token = await link_in_mail(email.lower(), "/console/verify-email")
    verified = await web.post("/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 200 and verified.json()["email_verified"] is True
    again = await web.post("/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_link"
    assert "auth.email_verified" in await audit_actions(resources, tokens["user_id"])


async def test_password_reset_by_email(web: httpx.AsyncClient, worker: Any) -> None:
    email = new_email()
    tokens = await register(web, email)
    unknown = await web.post("/v1/auth/password-reset", json={"email": new_email()})
    known = await web.post("/v1/auth/password-reset", json={"email": email})
    garbled = await web.post("/v1/auth/password-reset", json={"email": "ada\x00@example.com"})
    assert unknown.status_code == known.status_code == garbled.status_code == 202
    assert unknown.json() == known.json() == garbled.json()
    token = await link_in_mail(email.lower(), "/console/reset-password")
    weak = await web.post("/v1/auth/password-reset/confirm", json={"token": token, "new_password": "short"})
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
    new_password = "a brand new passphrase"
    done = await web.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": new_password}
    )
    assert done.status_code == 200
    assert (await web.get("/v1/account/", headers=bearer(tokens))).status_code == 401  # sessions ended
    assert (await web.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401
    assert (
        await web.post("/v1/auth/login", json={"email": email, "password": new_password})
    ).status_code == 200
    reused = await web.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "x" + new_password}
    )
    assert reused.status_code == 400


async def test_account_update_needs_the_current_password_for_email(web: httpx.AsyncClient) -> None:
    tokens = await register(web)
    renamed = await web.patch("/v1/account/", json={"name": "Ada Lovelace"}, headers=bearer(tokens))
    assert renamed.json()["name"] == "Ada Lovelace"
    refused = await web.patch("/v1/account/", json={"email": new_email()}, headers=bearer(tokens))
    assert refused.status_code == 401
    email = new_email()
    changed = await web.patch(
        "/v1/account/", json={"email": email, "current_password": PASSWORD}, headers=bearer(tokens)
    )
    assert changed.json()["email"] == email.lower() and changed.json()["email_verified"] is False


async def test_export_and_erasure(web: httpx.AsyncClient, worker: Any, resources: Resources) -> None:
    email = new_email()
    tokens = await register(web, email)
    await web.patch("/v1/account/", json={"name": "Grace Hopper"}, headers=bearer(tokens))
    key = (await web.post("/v1/api-keys/", json={"name": "laptop"}, headers=bearer(tokens))).json()
    export = (await web.get("/v1/account/export", headers=bearer(tokens))).json()
    assert export["account"]["email"] == email.lower() and export["account"]["name"] == "Grace Hopper"
    assert export["api_keys"][0]["name"] == "laptop"
    assert export["sessions"][0]["ip"] == "127.0.0.1"

    wrong = await web.request(
        "DELETE", "/v1/account/", json={"password": "not it at all"}, headers=bearer(tokens)
    )
    assert wrong.status_code == 401
    deleted = await web.request("DELETE", "/v1/account/", json={"password": PASSWORD}, headers=bearer(tokens))
    assert deleted.status_code == 202
    assert (await web.get("/v1/account/", headers=bearer(tokens))).status_code == 401
    assert (await web.get("/v1/account/", headers={"x-api-key": key["key"]})).status_code == 401
    assert (await web.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401

    async def erased() -> User | None:
        async with resources.db.sessions() as session:
            user = await session.get(User, uuid.UUID(tokens["user_id"]))
            return user if user is not None and user.name is None and "erased" in user.email else None

    user = await eventually(erased)
    assert email.lower() not in user.email and user.password_hash == "!"
    async with resources.db.sessions() as session:
        ips = (
            (await session.execute(select(AuditEvent.ip).where(AuditEvent.subject_user_id == user.id)))
            .scalars()
            .all()
        )
    assert set(ips) == {None}
    assert "account.deleted" in await audit_actions(resources, tokens["user_id"])
    # The address is free again for a new account.
    await register(web, email)


async def test_api_keys_over_http_secret_once_revoked_everywhere_within_a_second(
    web: httpx.AsyncClient, settings: Settings, resources: Resources
) -> None:
    tokens = await register(web)
    created = await web.post("/v1/api-keys/", json={"name": "dex at home"}, headers=bearer(tokens))
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("pk_test_") and key["prefix"] == key["key"][:12]
    listed = (await web.get("/v1/api-keys/", headers=bearer(tokens))).text
    assert key["prefix"] in listed and key["key"] not in listed
    # A second replica of the web role, with its own cache, has verified the key too.
    async with (
        RunningServer(create_app(Role.WEB, settings)) as other,
        httpx.AsyncClient(base_url=other.url) as replica,
    ):
        assert (await replica.get("/v1/account/", headers={"x-api-key": key["key"]})).status_code == 200
        revoked = await web.delete(f"/v1/api-keys/{key['id']}", headers=bearer(tokens))
        assert revoked.status_code == 204
        started = time.monotonic()

        async def refused() -> bool:
            response = await replica.get("/v1/account/", headers={"x-api-key": key["key"]})
            return response.status_code == 401

        await eventually(refused, within=1.0, interval=0.02)
        assert time.monotonic() - started < 1.0
    assert "api_key.revoked" in await audit_actions(resources, tokens["user_id"])


async def test_rotating_a_key_keeps_the_old_one_for_the_grace_period(
    database_url: str, redis_url: str, smtp_sandbox: Any
) -> None:
    settings = make_settings(database_url, redis_url, API_KEY_ROTATION_GRACE_SECONDS="2")
    async with (
        RunningServer(create_app(Role.WEB, settings)) as server,
        httpx.AsyncClient(base_url=server.url) as web,
    ):
        tokens = await register(web)
        old = (await web.post("/v1/api-keys/", headers=bearer(tokens))).json()
        rotated = (await web.post(f"/v1/api-keys/{old['id']}/rotate", headers=bearer(tokens))).json()
        new_key = rotated["key"]["key"]
        assert rotated["previous_key_expires_at"] is not None
        for secret in (old["key"], new_key):
            assert (await web.get("/v1/account/", headers={"x-api-key": secret})).status_code == 200

        async def old_refused() -> bool:
            return (await web.get("/v1/account/", headers={"x-api-key": old["key"]})).status_code == 401

        await eventually(old_refused, within=5)
        assert (await web.get("/v1/account/", headers={"x-api-key": new_key})).status_code == 200


async def test_a_mistyped_key_is_refused(web: httpx.AsyncClient) -> None:
    tokens = await register(web)
    key = (await web.post("/v1/api-keys/", headers=bearer(tokens))).json()["key"]
    typo = key[:-1] + ("a" if key[-1] != "a" else "b")
    refused = await web.get("/v1/account/", headers={"Authorization": f"Bearer {typo}"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
