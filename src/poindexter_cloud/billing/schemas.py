"""The billing API contract."""

from __future__ import annotations

from typing import Annotated

import msgspec


class SpendCap(msgspec.Struct, forbid_unknown_fields=True):
    """A monthly cap on AI spend in US dollars; null removes it."""

    monthly_cap_usd: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None
