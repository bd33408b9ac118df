"""Webhooks' background work: storing the events held while PostgreSQL was away."""

from __future__ import annotations

from poindexter_cloud.core.queue import Every, background
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.webhooks import inbox

INBOX_SECONDS = 2  # how soon after PostgreSQL is back a held event is stored


@background
def webhook_inbox(resources: Resources) -> Every:
    """Stores the webhook events held in Redis (``webhooks.inbox``)."""
    return Every(INBOX_SECONDS, lambda: inbox.store_held(resources), "webhook inbox")
