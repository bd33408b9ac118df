"""Webhook receivers on the web role. Thin: verify, store once, defer the processing, commit, acknowledge
(or, with PostgreSQL away, hold the event in Redis and acknowledge)."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.status_codes import HTTP_200_OK

from poindexter_cloud.core.db import UnitOfWork
from poindexter_cloud.core.errors import DATABASE_DOWN
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.integrations.telnyx import webhook_public_key
from poindexter_cloud.webhooks import inbox, service
from poindexter_cloud.webhooks.schemas import Acknowledged


@post("/webhooks/stripe", status_code=HTTP_200_OK, tags=["webhooks"])
async def stripe_webhook(
    request: Request[Any, Any, Any], uow: UnitOfWork, resources: Resources
) -> Acknowledged:
    """Stripe's events. A forged or stale ``Stripe-Signature`` is refused with 400 and nothing is stored; a
    redelivered event is acknowledged again without being stored or processed twice."""
    secret = resources.settings.stripe_webhook_secret or ""
    event = service.verify_stripe(await request.body(), request.headers.get("stripe-signature"), secret)
    return await _take(uow, resources, event)


@post("/webhooks/telnyx", status_code=HTTP_200_OK, tags=["webhooks"])
async def telnyx_webhook(
    request: Request[Any, Any, Any], uow: UnitOfWork, resources: Resources
) -> Acknowledged:
    """Telnyx's messaging events (API v2, Ed25519-signed). A forged signature or a timestamp more than five
    minutes off is refused with 400 and nothing is stored; a redelivered event is acknowledged again without
    being stored or processed twice."""
    key = await webhook_public_key(resources.settings)
    event = service.verify_telnyx(await request.body(), request.headers, key)
    if event is None:
        return Acknowledged(received=True, duplicate=False)
    return await _take(uow, resources, event)


async def _take(uow: UnitOfWork, resources: Resources, event: service.ProviderEvent) -> Acknowledged:
    """Store the event and commit; with PostgreSQL unreachable, hold it in Redis for the worker instead."""
    try:
        received = await service.store(uow, event)
        await uow.commit()
    except DATABASE_DOWN:
        await inbox.hold(resources.redis, resources.settings, event)
        return Acknowledged(received=True, duplicate=False)
    return Acknowledged(received=True, duplicate=received.duplicate)


ROUTES = [stripe_webhook, telnyx_webhook]
