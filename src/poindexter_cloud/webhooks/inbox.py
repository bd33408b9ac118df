"""Verified webhook events held in Redis while PostgreSQL is unreachable, stored once it is back.

Stripe retries a failed delivery for days, but Telnyx tries a URL three times within seconds and gives up:
an inbound SMS (a Signal registration code among them) that arrived during a PostgreSQL outage was lost.
The receiver therefore acknowledges a verified event it cannot store, after appending it to a Redis stream;
the worker's ``webhook_inbox`` loop stores each held event through ``service.store`` (the same once-by-id
insert and job as a live delivery) and deletes it from the stream after the commit. Storing is idempotent,
so an event held and also delivered again, or stored by two workers at once, is stored and processed once.
One that fails for another reason (it would fail a live delivery too) is logged and moved to ``…:dead``.
"""

from __future__ import annotations

import logging
from typing import Final, cast

import msgspec
from redis.asyncio import Redis

from poindexter_cloud.core.errors import DATABASE_DOWN
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.webhooks import service
from poindexter_cloud.webhooks.service import ProviderEvent

log = logging.getLogger(__name__)

BATCH: Final = 100
_FIELD: Final = b"e"


def inbox_key(settings: Settings) -> str:
    return f"poindexter:webhooks:inbox:{settings.queue_name}"


async def hold(redis: Redis, settings: Settings, event: ProviderEvent) -> None:
    """Append the event; a Redis error propagates (the receiver then answers 503 and the provider retries)."""
    await redis.xadd(inbox_key(settings), {_FIELD: msgspec.json.encode(event)})


async def store_held(resources: Resources) -> int:
    """Store the held events, oldest first, each in its own transaction; how many were stored. With
    PostgreSQL still away it stops quietly: the next round tries again."""
    key = inbox_key(resources.settings)
    stored = 0
    held = cast(list[tuple[bytes, dict[bytes, bytes]]], await resources.redis.xrange(key, count=BATCH))
    for entry_id, fields in held:
        event = msgspec.json.decode(fields[_FIELD], type=ProviderEvent)
        try:
            async with resources.unit_of_work() as uow:
                await service.store(uow, event)
                await uow.commit()
        except DATABASE_DOWN:
            break
        except Exception:  # it would fail a live delivery too: set aside, so it does not block the rest
            log.exception("held webhook event could not be stored", extra={"event_id": event.event_id})
            await resources.redis.xadd(f"{key}:dead", {_FIELD: fields[_FIELD]})
        else:
            stored += 1
        await resources.redis.xdel(key, entry_id)
    return stored
