"""The consumption rule: which tokens a plan includes, and how many billable units the rest are.

**Included tokens.** A plan includes ``Plan.included_tokens`` per billing period (5M Basic, 30M Pro), from
our ``subscriptions`` row's ``current_period_start`` (inclusive) to ``current_period_end`` (exclusive).
Every token of every ``ai_request`` usage event counts against it, one for one, whatever the field:
input, output, prompt-cache reads and both kinds of prompt-cache writes. Events are consumed in request
order, ``usage_events`` ordered by (created_at, request_id, attempt) (then id, which only breaks ties that
cannot occur for real events). An event's tokens are consumed in a fixed order: its input side first
(``input``, ``cache_read``, ``cache_write_5m``, ``cache_write_1h``), then its output. So a request crossing
the line is split exactly: e.g. with 100 included tokens left, a request of 80 input and 50 output tokens
has all its input and 20 output tokens included, and 30 output tokens in overage.

Events count as recorded: a failed attempt (status other than 200) carries zero tokens and so costs
nothing; an estimated event (the client cut a stream) counts with its estimate.

**Billable units.** Overage goes to Stripe on two meters, ``poindexter_input_tokens`` and
``poindexter_output_tokens``, priced per unit at the plan's overage rates (``r_in``, ``r_out``: Basic $3/M
and $15/M, Pro $2.50/M and $12/M). The input meter takes the input side (input and cache fields), the output
meter the output. The units of a side are its tokens, raised where needed to cover what they cost us::

    units(side) = max(tokens(side), ceil(cost(side) / r_side))

where ``tokens(side)`` is the side's overage tokens, and ``cost(side)`` is their upstream cost (each field at
its own rate from ``prices.toml``, in picodollars), rounded **up to a whole microdollar**. So a side usually
bills one unit a token; a model whose tokens cost us more than the plan charges bills more: on Basic, an
Opus 4.1 input token ($15/M) is 5 input units and an output token ($75/M) 5 output units. Cheap tokens
(e.g. cache reads) still bill at least one unit each: ``max`` never goes below the token count.

**No request is charged less than its upstream cost.** For a request entirely in overage, with ``C_in``,
``C_out`` its sides' exact costs in picodollars and ``cost_microdollars = ceil((C_in + C_out) / 10^6)``
(how ``billing.pricing`` computes the recorded cost)::

    U_in * r_in + U_out * r_out  >=  ceil(ceil(C_in / 10^6) * 10^6 / r_in) * r_in  + (same for out)
                                 >=  ceil(C_in / 10^6) * 10^6 + ceil(C_out / 10^6) * 10^6
                                 >=  ceil((C_in + C_out) / 10^6) * 10^6  =  cost_microdollars * 10^6

using ``ceil(x / r) * r >= x`` and ``ceil(a) + ceil(b) >= ceil(a + b)``. The charge is exact (no rounding of
our own after the units), so its price in microdollars is at least ``cost_microdollars``. For a request
crossing the line the same holds for its overage part: the units of the overage tokens cover the upstream
cost of those very tokens.

The rates come from the current price table when the model is in it and pricing the event's tokens there
costs at least the event's recorded ``cost_microdollars`` (always so for events priced under the current
table). Otherwise (a model no longer listed, or an event priced under an older, dearer table) every field
is priced at ``ceil(cost_microdollars * 10^6 / tokens)`` picodollars a token, which costs at least the
recorded cost, so the proof holds for it too. An event with a cost but no tokens (never produced by the
proxy) bills ``ceil(cost * 10^6 / r_in)`` input units once past the line.

Stripe multiplies each meter's period total by the price's cents per unit and rounds the invoice line to a
cent, so an invoice line can differ from the exact sum by at most half a cent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from poindexter_cloud.billing.plans import Plan
from poindexter_cloud.billing.pricing import (
    PICODOLLARS_PER_MICRODOLLAR,
    PRICE_TABLE,
    ModelPrice,
    TokenUsage,
    cost_microdollars,
)

PICODOLLARS_PER_NANODOLLAR: Final = 1_000

# The order in which one event's tokens consume the included allowance: input side, then output.
INPUT_SIDE: Final = ("input", "cache_read", "cache_write_5m", "cache_write_1h")
OUTPUT_SIDE: Final = ("output",)
CONSUMPTION_ORDER: Final = (*INPUT_SIDE, *OUTPUT_SIDE)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def counts(usage: TokenUsage) -> dict[str, int]:
    """The token counts of ``usage`` by price field."""
    return {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write_5m": usage.cache_write_5m_tokens,
        "cache_write_1h": usage.cache_write_1h_tokens,
    }


def total_tokens(usage: TokenUsage) -> int:
    """The tokens an event consumes from the included allowance: every field, one for one."""
    return sum(counts(usage).values())


def rates_for(model: str | None, usage: TokenUsage, recorded_cost: int) -> ModelPrice | None:
    """The per-field rates (picodollars a token) the units of this event are computed at: the price
    table's when it covers the recorded cost, else a flat rate that does. None for an event without tokens."""
    price = PRICE_TABLE.models.get(model) if model else None
    if price is not None and cost_microdollars(price, usage) >= recorded_cost:
        return price
    tokens = total_tokens(usage)
    if tokens == 0:
        return None
    flat = _ceil_div(max(recorded_cost, 0) * PICODOLLARS_PER_MICRODOLLAR, tokens)
    return ModelPrice(input=flat, output=flat, cache_read=flat, cache_write_5m=flat, cache_write_1h=flat)


def side_units(
    tokens: dict[str, int], fields: Sequence[str], rates: ModelPrice, unit_picodollars: int
) -> int:
    """``max(tokens, ceil(cost rounded up to a microdollar / unit price))`` for one side."""
    raw = sum(tokens[field] for field in fields)
    if raw == 0:
        return 0
    picodollars = sum(tokens[field] * getattr(rates, field) for field in fields)
    microdollars = _ceil_div(picodollars, PICODOLLARS_PER_MICRODOLLAR)
    return max(raw, _ceil_div(microdollars * PICODOLLARS_PER_MICRODOLLAR, unit_picodollars))


@dataclass(frozen=True, slots=True)
class Units:
    """Billable overage units on the two meters."""

    input: int = 0
    output: int = 0

    def __add__(self, other: Units) -> Units:
        return Units(self.input + other.input, self.output + other.output)


@dataclass(frozen=True, slots=True)
class RequestOverage:
    """One event's share: how many of its tokens the plan included, which ones are overage, and their
    units."""

    included: int
    overage_tokens: TokenUsage
    units: Units


def split(usage: TokenUsage, remaining: int) -> tuple[int, TokenUsage]:
    """(tokens included, the overage tokens by field) when ``remaining`` included tokens are left."""
    left = max(remaining, 0)
    by_field = counts(usage)
    over: dict[str, int] = {}
    for field in CONSUMPTION_ORDER:
        count = by_field[field]
        taken = min(count, left)
        left -= taken
        over[field] = count - taken
    included = total_tokens(usage) - sum(over.values())
    return included, TokenUsage(
        input_tokens=over["input"],
        output_tokens=over["output"],
        cache_read_tokens=over["cache_read"],
        cache_write_5m_tokens=over["cache_write_5m"],
        cache_write_1h_tokens=over["cache_write_1h"],
    )


def request_overage(
    plan: Plan, model: str | None, usage: TokenUsage, recorded_cost: int, consumed_before: int
) -> RequestOverage:
    """One event under the rule, given how many tokens the period had consumed before it."""
    included, over = split(usage, plan.included_tokens - consumed_before)
    unit_in = plan.overage_input_nanodollars_per_token * PICODOLLARS_PER_NANODOLLAR
    unit_out = plan.overage_output_nanodollars_per_token * PICODOLLARS_PER_NANODOLLAR
    rates = rates_for(model, usage, recorded_cost)
    if rates is None:  # no tokens: only a (never expected) cost without tokens past the line bills
        if recorded_cost > 0 and consumed_before >= plan.included_tokens:
            units = Units(_ceil_div(recorded_cost * PICODOLLARS_PER_MICRODOLLAR, unit_in), 0)
            return RequestOverage(0, over, units)
        return RequestOverage(0, over, Units())
    tokens = counts(over)
    units = Units(
        side_units(tokens, INPUT_SIDE, rates, unit_in), side_units(tokens, OUTPUT_SIDE, rates, unit_out)
    )
    return RequestOverage(included, over, units)


# --- prices of units -------------------------------------------------------------------------------------


def units_nanodollars(plan: Plan, units: Units) -> int:
    """The exact price of ``units`` at the plan's overage rates, in nanodollars."""
    return (
        units.input * plan.overage_input_nanodollars_per_token
        + units.output * plan.overage_output_nanodollars_per_token
    )


def exact_decimal(amount: int, scale: int) -> Decimal:
    """``amount / 10**scale`` written without an exponent or trailing zeros (``"0"``, ``"1.5"``)."""
    whole, fraction = divmod(amount, 10**scale)
    text = f"{whole}.{fraction:0{scale}d}".rstrip("0").rstrip(".") if scale else str(whole)
    return Decimal(text)


def nanodollars_to_cents(nanodollars: int) -> Decimal:
    return exact_decimal(nanodollars, 7)


def microdollars_to_usd(microdollars: int) -> Decimal:
    return exact_decimal(microdollars, 6)
