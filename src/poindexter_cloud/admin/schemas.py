"""The admin API contract."""

from __future__ import annotations

from typing import Annotated

import msgspec


class Suspension(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=r"^[^\x00]*$")]  # no NUL: jsonb
