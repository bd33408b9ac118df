"""The "connect your Dex" check, run from our side: is the plan active, does the chosen key work, does the
proxy answer, and has a Dex used the key yet. We never hold a key's secret, so the key is checked by its
record (live: neither revoked nor past a rotation's grace period) and its last use as the proxy saw it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.accounts import api_keys
from poindexter_cloud.billing import service as billing
from poindexter_cloud.console.pages import when
from poindexter_cloud.core.settings import Settings

PROXY_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Check:
    label: str
    outcome: Literal["ok", "problem", "waiting"]
    detail: str


async def proxy_answers(base_url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT_SECONDS)) as http,
            http.get(f"{base_url}/healthz") as response,
        ):
            return response.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


async def check_connection(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID, key_id: uuid.UUID
) -> list[Check]:
    proxy_url = settings.proxy_base_url
    proxy = (
        Check("AI proxy", "ok", f"{proxy_url} answers.")
        if await proxy_answers(proxy_url)
        else Check("AI proxy", "problem", f"{proxy_url} does not answer right now; try again in a minute.")
    )
    return [await _plan(session, user_id), proxy, *await _key(session, user_id, key_id)]


async def _plan(session: AsyncSession, user_id: uuid.UUID) -> Check:
    entitlement = await billing.entitlement(session, user_id)
    if entitlement.state == "active":
        return Check("Plan", "ok", f"{(entitlement.plan or '').title()} is active.")
    if entitlement.state == "suspended":
        return Check("Plan", "problem", "The last payment failed: update your card in Billing.")
    return Check("Plan", "problem", "No active plan: the proxy refuses requests until you choose one.")


async def _key(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> list[Check]:
    key = next((k for k in await api_keys.list_keys(session, user_id) if k.id == key_id), None)
    if key is None:
        return [Check("API key", "problem", "That key was revoked or has expired: create a new one.")]
    until = f", until {when(key.expires_at)} (it was rotated)" if key.expires_at else ""
    works = Check("API key", "ok", f"{key.name or 'Unnamed key'} ({key.key_prefix}…) works{until}.")
    if key.last_used_at is None:
        return [
            works,
            Check("Your Dex", "waiting", "No request with this key yet: paste the settings, then ask Dex."),
        ]
    seen = f"Last request {when(key.last_used_at)} from {key.last_used_ip or 'an unknown address'}."
    return [works, Check("Your Dex", "ok", seen)]
