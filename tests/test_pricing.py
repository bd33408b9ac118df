"""Upstream costs: hand-computed golden cases, rounding up, and a price table that refuses to be sloppy; and
the overage rule built on them (``billing/overage.py``): what a request past the included tokens bills."""

from __future__ import annotations

import json
import tomllib
from fractions import Fraction
from importlib.resources import files
from math import ceil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from poindexter_cloud.billing import pricing
from poindexter_cloud.billing.overage import Units, request_overage, units_nanodollars
from poindexter_cloud.billing.plans import PLANS
from poindexter_cloud.billing.pricing import (
    PRICE_TABLE_VERSION,
    PRICED_MODELS,
    PriceTableError,
    TokenUsage,
    UnknownModelPrice,
    load_price_table,
    upstream_cost_microdollars,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "pricing.json").read_text())


def test_the_table_is_the_expected_version_and_has_every_model() -> None:
    assert PRICE_TABLE_VERSION == "2026-11-01"
    assert {
        "claude-opus-4-1",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-3.5-turbo-instruct",
        "text-embedding-3-small",
    } == PRICED_MODELS


@pytest.mark.parametrize("case", GOLDEN, ids=[case["name"] for case in GOLDEN])
def test_golden_cost(case: dict[str, Any]) -> None:
    usage = msgspec.convert(case["usage"], TokenUsage)
    assert upstream_cost_microdollars(case["model"], usage) == case["expected_microdollars"]


def test_golden_cases_cover_every_model() -> None:
    assert {case["model"] for case in GOLDEN} == PRICED_MODELS


@pytest.mark.parametrize("case", GOLDEN, ids=[case["name"] for case in GOLDEN])
def test_golden_cost_agrees_with_exact_fractions(case: dict[str, Any]) -> None:
    """An independent computation straight from the TOML text, with exact rationals."""
    text = files("poindexter_cloud.billing").joinpath("prices.toml").read_text(encoding="utf-8")
    rates = tomllib.loads(text, parse_float=Fraction)["models"][case["model"]]
    usage = case["usage"]
    exact = sum(
        Fraction(rates[field]) * usage.get(f"{field}_tokens", 0)
        for field in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
    )
    assert ceil(exact) == case["expected_microdollars"]


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(UnknownModelPrice, match=r"'gpt-9'.*2026-11-01") as caught:
        upstream_cost_microdollars("gpt-9", TokenUsage(input_tokens=1))
    assert caught.value.model == "gpt-9"
    assert isinstance(caught.value, LookupError)


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        upstream_cost_microdollars("gpt-4o", TokenUsage(output_tokens=-1))
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"input_tokens": -5}', type=TokenUsage)


def test_rounds_up_even_the_smallest_fraction() -> None:
    # 0.02 microdollars: any positive cost is at least one microdollar.
    assert upstream_cost_microdollars("text-embedding-3-small", TokenUsage(input_tokens=1)) == 1
    assert pricing.cost_microdollars(pricing.price_of("gpt-4o"), TokenUsage()) == 0


TABLE_HEAD = 'version = "x"\n[models.m]\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "[models.m]\ninput = 1\noutput = 1\ncache_read = 0\ncache_write_5m = 0\ncache_write_1h = 0\n",
            "version",
        ),
        ('version = "x"\n', "models"),
        (TABLE_HEAD + "input = 1\noutput = 1\ncache_read = 0\ncache_write_5m = 0\n", "exactly the fields"),
        (
            TABLE_HEAD
            + "input = 1\noutput = 1\ncache_read = 0\ncache_write_5m = 0\ncache_write_1h = 0\nx = 1\n",
            "exactly the fields",
        ),
        (
            TABLE_HEAD
            + "input = 0.0000001\noutput = 1\ncache_read = 0\ncache_write_5m = 0\ncache_write_1h = 0\n",
            "six decimal places",
        ),
        (
            TABLE_HEAD + "input = -1\noutput = 1\ncache_read = 0\ncache_write_5m = 0\ncache_write_1h = 0\n",
            "negative",
        ),
        (
            TABLE_HEAD + 'input = "1"\noutput = 1\ncache_read = 0\ncache_write_5m = 0\ncache_write_1h = 0\n',
            "expected a number",
        ),
    ],
)
def test_a_malformed_table_is_refused(text: str, problem: str) -> None:
    with pytest.raises(PriceTableError, match=problem):
        load_price_table(text)


def test_six_decimal_places_are_exact() -> None:
    table = load_price_table(
        TABLE_HEAD
        + "input = 0.000001\noutput = 0.075\ncache_read = 0\ncache_write_5m = 0\ncache_write_1h = 0\n"
    )
    assert table.models["m"].input == 1  # one picodollar per token
    assert table.models["m"].output == 75_000


# --- the overage rule -------------------------------------------------------------------------------------

BASIC = PLANS["basic"]  # 5M included; $3/M input units, $15/M output units


def overage(model: str, usage: TokenUsage, left: int = 0, cost: int | None = None) -> tuple[int, Units]:
    """(tokens included, units) of one Basic request with ``left`` included tokens still unused."""
    recorded = upstream_cost_microdollars(model, usage) if cost is None else cost
    share = request_overage(BASIC, model, usage, recorded, BASIC.included_tokens - left)
    return share.included, share.units


def test_tokens_dearer_upstream_than_the_plan_bill_more_units() -> None:
    # Opus 4.1: input $15/M and cache reads $1.50/M against Basic's $3/M, output $75/M against $15/M.
    usage = TokenUsage(input_tokens=1_000, output_tokens=100, cache_read_tokens=2_000)
    assert overage("claude-opus-4-1", usage) == (0, Units(input=6_000, output=500))  # $0.018, $0.0075
    # Sonnet 4.5 costs what Basic charges: one unit a token; its cheap cache reads still bill one each.
    assert overage("claude-sonnet-4-5", usage) == (0, Units(input=3_000, output=100))


def test_a_request_crossing_the_line_bills_only_its_overage_tokens() -> None:
    usage = TokenUsage(input_tokens=80, output_tokens=50)
    assert overage("claude-opus-4-1", usage, left=100) == (100, Units(output=150))  # 30 output tokens x 5
    assert overage("claude-opus-4-1", usage, left=130) == (130, Units())
    assert overage("claude-opus-4-1", usage, left=10**9) == (130, Units())


def test_an_event_priced_dearer_than_todays_table_bills_its_recorded_cost() -> None:
    # 1,000 Sonnet input tokens recorded at $0.01 (under an older table) instead of today's $0.003.
    included, units = overage("claude-sonnet-4-5", TokenUsage(input_tokens=1_000), cost=10_000)
    assert (included, units) == (0, Units(input=3_334))
    assert units_nanodollars(BASIC, units) >= 10_000 * 1_000


@pytest.mark.parametrize("plan", sorted(PLANS))
@pytest.mark.parametrize("model", sorted(PRICED_MODELS))
def test_no_request_past_the_line_is_charged_less_than_its_upstream_cost(plan: str, model: str) -> None:
    usages = [
        TokenUsage(input_tokens=1),
        TokenUsage(output_tokens=1),
        TokenUsage(input_tokens=7, output_tokens=3, cache_read_tokens=11),
        TokenUsage(cache_write_5m_tokens=333, cache_write_1h_tokens=777),
        TokenUsage(123_457, 65_537, 1_000_003, 4_099, 99_991),
    ]
    for usage in usages:
        cost = upstream_cost_microdollars(model, usage)
        share = request_overage(PLANS[plan], model, usage, cost, PLANS[plan].included_tokens)
        assert share.included == 0
        assert units_nanodollars(PLANS[plan], share.units) >= cost * 1_000, usage
