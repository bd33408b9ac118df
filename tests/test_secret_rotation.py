"""Rotating SECRET_KEY without downtime: a web role with the new SECRET_KEY and the old one as
SECRET_KEY_PREVIOUS accepts every key, token and link the old secret made, re-hashes the API keys it sees,
and a role that only knows the new secret then accepts those (and nothing else of the old secret's)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from conftest import RunningServer, make_settings
from poindexter_cloud.core.http import create_app
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Role, Settings
from test_accounts import PASSWORD, bearer, link_in_mail, new_email, register


@asynccontextmanager
async def web_role(settings: Settings, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    """Another web role on the session's database and Redis, with its own secrets and caches."""
    own = make_settings(
        settings.database_url,
        settings.redis_url,
        SANDBOX_URL=settings.sandbox_url,
        SMTP_PORT=str(settings.smtp_port),
        **env,
    )
    resources = await Resources.open(own)
    try:
        async with (
            RunningServer(create_app(Role.WEB, own, resources)) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            yield client
    finally:
        await resources.close()


async def test_everything_the_old_secret_made_works_through_a_rotation(
    web: httpx.AsyncClient, settings: Settings, worker: Any
) -> None:
    old, new = settings.secret_key, secrets.token_hex(32)
    email = new_email()
    tokens = await register(web, email)  # made under the old secret
    used_key = (await web.post("/v1/api-keys/", json={"name": "used"}, headers=bearer(tokens))).json()
    idle_key = (await web.post("/v1/api-keys/", json={"name": "idle"}, headers=bearer(tokens))).json()
    await web.post("/v1/auth/password-reset", json={"email": email})
    link = await link_in_mail(email.lower(), "/console/reset-password")

    async with (
        web_role(settings, SECRET_KEY=new, SECRET_KEY_PREVIOUS=old) as rotating,
        web_role(settings, SECRET_KEY=new) as rotated,
    ):
        # The new secret alone knows nothing of the old one's.
        assert (await rotated.get("/v1/account/", headers=bearer(tokens))).status_code == 401
        assert (await rotated.get("/v1/account/", headers={"x-api-key": used_key["key"]})).status_code == 401

        # During the rotation: the old access token, API key, refresh token and emailed link all work.
        assert (await rotating.get("/v1/account/", headers=bearer(tokens))).status_code == 200
        assert (await rotating.get("/v1/account/", headers={"x-api-key": used_key["key"]})).status_code == 200
        refreshed = await rotating.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 200
        reset = await rotating.post(
            "/v1/auth/password-reset/confirm", json={"token": link, "new_password": "a rotated passphrase"}
        )
        assert reset.status_code == 200
        login = await rotating.post(
            "/v1/auth/login", json={"email": email, "password": "a rotated passphrase"}
        )
        assert login.status_code == 200

        # What the rotating role issued, and the key it re-hashed, work with the new secret alone; the
        # key never seen during the rotation does not, and neither does the old password.
        assert (await rotated.get("/v1/account/", headers=bearer(login.json()))).status_code == 200
        assert (await rotated.get("/v1/account/", headers={"x-api-key": used_key["key"]})).status_code == 200
        assert (await rotated.get("/v1/account/", headers={"x-api-key": idle_key["key"]})).status_code == 401
        assert (
            await rotated.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        ).status_code == 401
