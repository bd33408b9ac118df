"""Secrets and personal data, end to end: a subscriber's whole life with known values (password, tokens, API
keys, email links, card, name, address), then every log line and every table searched for them in plain
text. Secrets may only remain hashed; personal data never reaches a log line, and after erasure only what
billing law requires remains, anonymised."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import anthropic
import psycopg
from sqlalchemy import select

from conftest import Billing, eventually
from poindexter_cloud.accounts.models import User
from poindexter_cloud.core.settings import Settings
from test_accounts import bearer, link_in_mail
from test_billing import GOOD_CARD, pay, start_checkout, status_becomes

PASSWORD = "my-very-own-passphrase-71"
NEW_PASSWORD = "another-own-passphrase-72"
NAME = "Hedy Lamarr-Markey"


def all_rows(database_url: str) -> dict[str, str]:
    """Every table's rows as text, whole."""
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        return {
            table: "\n".join(str(row[0]) for row in connection.execute(f'SELECT t::text FROM "{table}" t'))
            for table in tables
        }


SIMULATORS = ("mail.log", "poindexter_cloud.sandbox")  # the providers' stand-ins (aiosmtpd logs addresses)


def our_log_lines(stream: io.StringIO) -> str:
    """The service's own log lines (the sandbox providers' are not ours: production has none of them)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return "\n".join(json.dumps(line) for line in lines if not line["logger"].startswith(SIMULATORS))


def holding(texts: dict[str, str], *needles: str) -> dict[str, list[str]]:
    """Which of ``texts`` (table or source -> text) contain which needle, case-insensitively."""
    found: dict[str, list[str]] = {}
    for needle in needles:
        places = [where for where, text in texts.items() if needle.lower() in text.lower()]
        if places:
            found[needle] = places
    return found


async def test_no_secret_is_stored_or_logged_and_erasure_leaves_no_personal_data(
    billing: Billing, settings: Settings, worker: Any, json_logs: io.StringIO
) -> None:
    b = billing
    email = f"Hedy.{uuid.uuid4().hex[:10]}@Example.org"
    registered = (
        await b.web.post("/v1/auth/register", json={"email": email, "password": PASSWORD, "name": NAME})
    ).json()
    login = (await b.web.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).json()
    refreshed = (await b.web.post("/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})).json()
    verify_link = await link_in_mail(email.lower(), "/console/verify-email")
    assert (await b.web.post("/v1/auth/verify-email", json={"token": verify_link})).status_code == 200
    key = (await b.web.post("/v1/api-keys/", json={"name": "home"}, headers=bearer(refreshed))).json()
    rotated = (await b.web.post(f"/v1/api-keys/{key['id']}/rotate", headers=bearer(refreshed))).json()

    started = await start_checkout(b, refreshed, "basic")
    assert (await pay(b, started["url"], GOOD_CARD)).status_code == 303
    await status_becomes(b, refreshed, "active")
    for secret in (key["key"], rotated["key"]["key"]):
        reply = await anthropic.AsyncAnthropic(
            base_url=str(b.proxy.base_url), api_key=secret, max_retries=0
        ).messages.create(
            model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hello"}]
        )
        assert reply.content

    await b.web.post("/v1/auth/password-reset", json={"email": email})
    reset_link = await link_in_mail(email.lower(), "/console/reset-password")
    confirmed = await b.web.post(
        "/v1/auth/password-reset/confirm", json={"token": reset_link, "new_password": NEW_PASSWORD}
    )
    assert confirmed.status_code == 200

    secrets = (
        PASSWORD,
        NEW_PASSWORD,
        registered["access_token"],
        registered["refresh_token"],
        login["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        key["key"],
        rotated["key"]["key"],
        verify_link,
        reset_link,
        GOOD_CARD,
        b.settings.stripe_secret_key or "",
        b.settings.stripe_webhook_secret or "",
        settings.secret_key,
    )
    logs = {"logs": our_log_lines(json_logs)}
    assert logs["logs"].count("\n") > 50  # the flows above were logged
    assert holding(all_rows(settings.database_url), *secrets) == {}
    assert holding(logs, *secrets, email, NAME) == {}

    # Erasure: the account, then once its identity is deprovisioned, its personal data.
    login = (await b.web.post("/v1/auth/login", json={"email": email, "password": NEW_PASSWORD})).json()
    deleted = await b.web.request(
        "DELETE", "/v1/account/", json={"password": NEW_PASSWORD}, headers=bearer(login)
    )
    assert deleted.status_code == 202

    async def erased() -> bool:
        async with b.resources.db.sessions() as session:
            user = await session.get(User, uuid.UUID(registered["user_id"]))
        return user is not None and user.email.startswith("erased")

    await eventually(erased, within=30)
    rows = all_rows(settings.database_url)
    assert holding(rows, email, NAME) == {}
    async with b.resources.db.sessions() as session:
        kept = (
            await session.execute(select(User).where(User.id == uuid.UUID(registered["user_id"])))
        ).scalar_one()
    assert kept.stripe_customer_id and kept.stripe_customer_id.startswith("cus_")  # billing records
    assert holding({"logs": our_log_lines(json_logs)}, email, NAME) == {}
