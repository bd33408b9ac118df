"""The subscription plans: price, included tokens, overage prices and the AI proxy's rate limits.

| plan | price/month | included tokens | overage input | overage output |
| --- | ---: | ---: | ---: | ---: |
| basic | $50 | 5M | $3.00/M | $15.00/M |
| pro | $250 | 30M | $2.50/M | $12.00/M |

Overage prices are integers in **nano-dollars per token** ($3/M tokens = 3,000 n$/token), so they are exact
and cost arithmetic stays in integers; costs elsewhere (usage_events, usage_monthly, spend caps) are in
micro-dollars, and `Plan.overage_microdollars` converts, rounding up.

Rate limits of the AI proxy (sliding one-minute windows, enforced across every replica by
`proxy/limits.py`; "tokens" are input tokens plus the request's max_tokens of output while in flight, the
real usage once settled):

| plan | requests/min per key | requests/min per user | tokens/min per key | tokens/min per user |
| --- | ---: | ---: | ---: | ---: |
| basic | 60 | 120 | 200,000 | 400,000 |
| pro | 300 | 600 | 1,000,000 | 2,000,000 |

A user's keys share the per-user limits, so a second key doubles the burst room of one Dex instance but not
the user's total. A single request whose estimate alone exceeds the per-key token limit (on Basic, input
plus max_tokens above 200k) is refused as permanently too large rather than rate limited.
"""

from __future__ import annotations

import msgspec


class Plan(msgspec.Struct, frozen=True):
    name: str
    monthly_price_cents: int
    included_tokens: int
    overage_input_nanodollars_per_token: int
    overage_output_nanodollars_per_token: int
    requests_per_minute_per_key: int
    requests_per_minute_per_user: int
    tokens_per_minute_per_key: int
    tokens_per_minute_per_user: int

    def overage_microdollars(self, input_tokens: int, output_tokens: int) -> int:
        """The overage price of these tokens in micro-dollars, rounded up to a whole micro-dollar."""
        nanodollars = (
            input_tokens * self.overage_input_nanodollars_per_token
            + output_tokens * self.overage_output_nanodollars_per_token
        )
        return -(-nanodollars // 1000)


PLANS: dict[str, Plan] = {
    "basic": Plan(
        name="basic",
        monthly_price_cents=5_000,
        included_tokens=5_000_000,
        overage_input_nanodollars_per_token=3_000,
        overage_output_nanodollars_per_token=15_000,
        requests_per_minute_per_key=60,
        requests_per_minute_per_user=120,
        tokens_per_minute_per_key=200_000,
        tokens_per_minute_per_user=400_000,
    ),
    "pro": Plan(
        name="pro",
        monthly_price_cents=25_000,
        included_tokens=30_000_000,
        overage_input_nanodollars_per_token=2_500,
        overage_output_nanodollars_per_token=12_000,
        requests_per_minute_per_key=300,
        requests_per_minute_per_user=600,
        tokens_per_minute_per_key=1_000_000,
        tokens_per_minute_per_user=2_000_000,
    ),
}


def plan_named(name: str) -> Plan:
    """The plan called ``name`` (as stored in subscriptions.plan); ValueError for an unknown name."""
    try:
        return PLANS[name]
    except KeyError:
        raise ValueError(f"unknown plan: {name!r}") from None
