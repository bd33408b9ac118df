"""The numbers for sale: a fixed, deterministic pool of fictional US numbers, ``+1 <area code> 555-01xx`` (the
555-0100..0199 lines are reserved for fiction in every North American area code), minus what the account owns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import invalid
from .store import HELD_STATUSES, State


@dataclass(slots=True, frozen=True)
class Area:
    ndc: str
    locality: str
    state: str
    rate_center: str


AREAS: Final = (
    Area("212", "New York", "NY", "NWYRCYZN01"),
    Area("312", "Chicago", "IL", "CHCGZNIL01"),
    Area("415", "San Francisco", "CA", "SNFC CNTRL"),
    Area("512", "Austin", "TX", "AUSTIN"),
    Area("617", "Boston", "MA", "BOSTON"),
    Area("206", "Seattle", "WA", "SEATTLE"),
)
LINES_PER_AREA: Final = 100
FEATURE_NAMES: Final = (
    "sms",
    "mms",
    "voice",
    "fax",
    "emergency",
    "hd_voice",
    "international_sms",
    "local_calling",
)
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100


@dataclass(slots=True, frozen=True)
class Available:
    phone_number: str
    area: Area
    features: tuple[str, ...]


def _features(line: int) -> tuple[str, ...]:
    # Every line does SMS and voice; every fourth lacks MMS and every other lacks fax, so the features
    # filter has something to filter.
    names = ["sms", "voice", "emergency", "hd_voice", "international_sms", "local_calling"]
    if line % 4 != 3:
        names.append("mms")
    if line % 2 == 0:
        names.append("fax")
    return tuple(sorted(names))


POOL: Final = tuple(
    Available(f"+1{area.ndc}55501{line:02d}", area, _features(line))
    for area in AREAS
    for line in range(LINES_PER_AREA)
)
_BY_NUMBER: Final = {entry.phone_number: entry for entry in POOL}


def lookup(phone_number: str) -> Available | None:
    return _BY_NUMBER.get(phone_number)


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def search(state: State, filters: Mapping[str, Any]) -> tuple[list[Available], int]:
    """Numbers on sale matching ``filter[...]`` (the keys without the ``filter`` wrapper), and how many there
    were before ``limit``. ``best_effort``, ``quickship``, ``reservable`` and ``exclude_held_numbers`` change
    nothing: every number here is an exact, quickship, reservable match."""
    country = str(filters.get("country_code") or "US").upper()
    ndc = filters.get("national_destination_code")
    locality = filters.get("locality")
    area_name = filters.get("administrative_area")
    rate_center = filters.get("rate_center")
    number_type = filters.get("phone_number_type")
    wanted = _feature_list(filters.get("features"))
    unknown = [name for name in wanted if name not in FEATURE_NAMES]
    if unknown:
        raise invalid("filter[features]", f"Unknown feature: {unknown[0]}.")
    pattern = filters.get("phone_number")
    starts = ends = contains = None
    if isinstance(pattern, Mapping):
        starts, ends, contains = (pattern.get(k) for k in ("starts_with", "ends_with", "contains"))
    elif isinstance(pattern, str):
        contains = pattern
    limit = _limit(filters.get("limit"))
    if country != "US" or (number_type not in (None, "", "local")):
        return [], 0
    held = {n.phone_number for n in state.numbers.values() if n.status in HELD_STATUSES}
    found: list[Available] = []
    for entry in POOL:
        national = entry.phone_number[2:]
        subscriber = national[3:]  # pattern filters exclude the NDC when one is given, as Telnyx's do
        target = subscriber if ndc else national
        if (
            entry.phone_number in held
            or (ndc and entry.area.ndc != str(ndc))
            or (locality and entry.area.locality.lower() != str(locality).lower())
            or (area_name and entry.area.state.lower() != str(area_name).lower())
            or (rate_center and entry.area.rate_center.lower() != str(rate_center).lower())
            or not set(wanted) <= set(entry.features)
            or (starts and not target.startswith(_digits(str(starts))))
            or (ends and not target.endswith(_digits(str(ends))))
            or (contains and _digits(str(contains)) not in target)
        ):
            continue
        found.append(entry)
    return found[:limit], len(found)


def _feature_list(value: Any) -> list[str]:
    """``filter[features]=sms,mms`` (what the SDK sends) or ``filter[features][]=sms&...``."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _limit(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise invalid("filter[limit]", "filter[limit] must be an integer.") from None
    if limit < 1:
        raise invalid("filter[limit]", "filter[limit] must be at least 1.")
    return min(limit, MAX_LIMIT)
