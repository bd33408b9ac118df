"""Operators: admin-only routes and the `admin users` CLI, suspension taking effect at once, all audited."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from conftest import QUEUE_NAME
from poindexter_cloud.core.models import AuditEvent
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings
from test_accounts import PASSWORD, bearer, new_email, register


def admin_cli(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.replace("+psycopg", ""),
        "REDIS_URL": settings.redis_url,
        "QUEUE_NAME": QUEUE_NAME,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "poindexter_cloud", "admin", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def operator(web: httpx.AsyncClient, settings: Settings) -> dict[str, Any]:
    email = new_email()
    result = admin_cli(
        settings,
        "users",
        "create-admin",
        email,
        "--password-env",
        "OPERATOR_PASSWORD",
        env={"OPERATOR_PASSWORD": PASSWORD},
    )
    assert result.returncode == 0, result.stderr
    login = await web.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    return dict(login.json())


async def test_admin_routes_refuse_non_admins_and_api_keys(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    user = await register(web)
    refused = await web.get("/v1/admin/users/", headers=bearer(user))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only"
    assert (await web.get("/v1/admin/users/")).status_code == 401
    admin = await operator(web, settings)
    key = (await web.post("/v1/api-keys/", headers=bearer(admin))).json()["key"]
    by_key = await web.get("/v1/admin/users/", headers={"Authorization": f"Bearer {key}"})
    assert by_key.status_code == 403 and by_key.json()["error"]["code"] == "session_required"


async def test_admin_lists_users_with_search_and_paging(web: httpx.AsyncClient, settings: Settings) -> None:
    admin = await operator(web, settings)
    marker = uuid.uuid4().hex[:8]
    emails = sorted(f"{marker}.{i}@example.com" for i in range(3))
    for email in emails:
        await register(web, email)
    page = (await web.get("/v1/admin/users/", params={"q": marker, "limit": 2}, headers=bearer(admin))).json()
    assert page["total"] == 3 and len(page["data"]) == 2
    rest = (
        await web.get(
            "/v1/admin/users/", params={"q": marker, "limit": 2, "offset": 2}, headers=bearer(admin)
        )
    ).json()
    assert sorted(u["email"] for u in page["data"] + rest["data"]) == emails
    for bad_paging in ({"limit": 0}, {"offset": 10**19}):  # past PostgreSQL's bigint: refused, not a 500
        bad = await web.get("/v1/admin/users/", params=bad_paging, headers=bearer(admin))
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


async def test_suspension_stops_tokens_and_keys_at_once(
    web: httpx.AsyncClient, settings: Settings, resources: Resources
) -> None:
    admin = await operator(web, settings)
    user = await register(web)
    key = (await web.post("/v1/api-keys/", headers=bearer(user))).json()["key"]
    assert (await web.get("/v1/account/", headers={"x-api-key": key})).status_code in {200, 403}
    suspended = await web.post(
        f"/v1/admin/users/{user['user_id']}/suspend", json={"reason": "chargeback"}, headers=bearer(admin)
    )
    assert suspended.json()["status"] == "suspended"
    token_refused = await web.get("/v1/account/", headers=bearer(user))
    assert token_refused.status_code == 403 and token_refused.json()["error"]["code"] == "account_suspended"
    key_refused = await web.get("/v1/api-keys/", headers={"x-api-key": key})
    assert key_refused.json()["error"]["code"] == "account_suspended"
    await web.post(f"/v1/admin/users/{user['user_id']}/unsuspend", headers=bearer(admin))
    assert (await web.get("/v1/account/", headers=bearer(user))).status_code == 200
    async with resources.db.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(
                        AuditEvent.subject_user_id == uuid.UUID(user["user_id"]),
                        AuditEvent.action.like("admin.%"),
                    )
                    .order_by(AuditEvent.created_at)
                )
            )
            .scalars()
            .all()
        )
    assert [(row.action, str(row.actor_user_id)) for row in rows] == [
        ("admin.user_suspended", admin["user_id"]),
        ("admin.user_unsuspended", admin["user_id"]),
    ]
    assert all(row.request_id and row.ip == "127.0.0.1" for row in rows)


async def test_admin_users_cli(web: httpx.AsyncClient, settings: Settings) -> None:
    email = new_email()
    user = await register(web, email)
    listing = admin_cli(settings, "users", "list", "--search", email.split("@")[0].lower())
    assert listing.returncode == 0 and email.lower() in listing.stdout
    shown = admin_cli(settings, "users", "show", email)
    assert user["user_id"] in shown.stdout
    assert admin_cli(settings, "users", "suspend", email, "--reason", "abuse").returncode == 0
    assert (await web.get("/v1/account/", headers=bearer(user))).status_code == 403
    assert admin_cli(settings, "users", "unsuspend", user["user_id"]).returncode == 0
    assert (await web.get("/v1/account/", headers=bearer(user))).status_code == 200
    missing = admin_cli(settings, "users", "show", "nobody@example.com")
    assert missing.returncode == 1 and "No such user" in missing.stderr
