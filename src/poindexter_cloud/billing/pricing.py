"""What an AI request cost us upstream, in whole microdollars, from the versioned table in ``prices.toml``.

The table gives USD per million tokens, which is the same number as microdollars per token. To stay exact,
each rate is held as an integer number of *picodollars* per token (rate x 10^6; the table may not have more
than six decimal places, so this never rounds), every token field is priced at its own rate in integers,
and only the total is rounded, **up**, to a whole microdollar: a cost is never under-counted, and a request
is rounded once rather than once per field.

The table is read once, at import, from the installed package (``importlib.resources``), so the wheel must
ship ``billing/*.toml``. ``PRICE_TABLE_VERSION`` goes on every usage event so an old cost stays explainable
after prices change.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from importlib.resources import files
from types import MappingProxyType
from typing import Annotated, Any, Final

import msgspec

PICODOLLARS_PER_MICRODOLLAR: Final = 1_000_000
PRICE_FIELDS: Final = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")

NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class TokenUsage(msgspec.Struct, frozen=True):
    """Tokens of one upstream attempt, one field per rate (cache writes are priced by their TTL)."""

    input_tokens: NonNegative = 0
    output_tokens: NonNegative = 0
    cache_read_tokens: NonNegative = 0
    cache_write_5m_tokens: NonNegative = 0
    cache_write_1h_tokens: NonNegative = 0


class ModelPrice(msgspec.Struct, frozen=True):
    """One model's rates in picodollars per token (USD per million tokens x 10^6)."""

    input: int
    output: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int


class PriceTable(msgspec.Struct, frozen=True):
    version: str
    models: Mapping[str, ModelPrice]


class UnknownModelPrice(LookupError):
    """The model has no upstream price. The proxy serves only priced models, so this is a configuration bug:
    raising beats recording a cost of zero."""

    def __init__(self, model: str, version: str) -> None:
        self.model = model
        self.version = version
        super().__init__(f"no upstream price for model {model!r} in price table {version}")


class PriceTableError(ValueError):
    """prices.toml is malformed (raised at import, so a bad table never reaches production traffic)."""


def _picodollars(model: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise PriceTableError(f"{model}.{field}: expected a number, got {value!r}")
    scaled = Decimal(value) * PICODOLLARS_PER_MICRODOLLAR
    if scaled < 0 or scaled != scaled.to_integral_value():
        raise PriceTableError(f"{model}.{field}: {value} is negative or has more than six decimal places")
    return int(scaled)


def load_price_table(text: str) -> PriceTable:
    """Parse and validate a price table; every model must list exactly the five price fields."""
    raw = tomllib.loads(text, parse_float=Decimal)  # Decimal: 0.075 stays 0.075, not a binary float
    version = raw.get("version")
    models = raw.get("models")
    if not isinstance(version, str) or not version:
        raise PriceTableError("the price table needs a non-empty string `version`")
    if not isinstance(models, dict) or not models:
        raise PriceTableError('the price table needs at least one [models."name"] table')
    parsed: dict[str, ModelPrice] = {}
    for model, prices in models.items():
        if not isinstance(prices, dict) or set(prices) != set(PRICE_FIELDS):
            raise PriceTableError(f"{model}: expected exactly the fields {', '.join(PRICE_FIELDS)}")
        parsed[model] = ModelPrice(
            **{field: _picodollars(model, field, prices[field]) for field in PRICE_FIELDS}
        )
    return PriceTable(version=version, models=MappingProxyType(parsed))


def cost_microdollars(price: ModelPrice, usage: TokenUsage) -> int:
    """Exact cost of ``usage`` at ``price``, rounded up to a whole microdollar."""
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
    )
    if min(counts) < 0:  # msgspec checks this when decoding, not when a struct is built in code
        raise ValueError(f"negative token count in {usage!r}")
    picodollars = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_5m_tokens * price.cache_write_5m
        + usage.cache_write_1h_tokens * price.cache_write_1h
    )
    return -(-picodollars // PICODOLLARS_PER_MICRODOLLAR)  # ceiling division


PRICE_TABLE: Final = load_price_table(
    files("poindexter_cloud.billing").joinpath("prices.toml").read_text(encoding="utf-8")
)
PRICE_TABLE_VERSION: Final[str] = PRICE_TABLE.version
PRICED_MODELS: Final = frozenset(PRICE_TABLE.models)


def price_of(model: str) -> ModelPrice:
    """The model's rates; ``UnknownModelPrice`` if the table has none (lets the proxy check up front)."""
    try:
        return PRICE_TABLE.models[model]
    except KeyError:
        raise UnknownModelPrice(model, PRICE_TABLE_VERSION) from None


def upstream_cost_microdollars(model: str, usage: TokenUsage) -> int:
    """What ``usage`` on ``model`` cost us upstream under ``PRICE_TABLE_VERSION``, rounded up."""
    return cost_microdollars(price_of(model), usage)
