"""The webhooks API contract: what a provider gets back."""

from __future__ import annotations

import msgspec


class Acknowledged(msgspec.Struct):
    """The event is stored (now, or by an earlier delivery of the same id) and will be processed."""

    received: bool
    duplicate: bool
