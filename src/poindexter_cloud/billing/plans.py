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

Rate limits of the identity API, per API key and operation (sliding windows of one minute and one day,
enforced across every web replica by `identity/limits.py`; "read" covers listing and fetching):

| operation | basic | pro |
| --- | ---: | ---: |
| email_send | 20/min, 500/day | 60/min, 2,000/day |
| email_read | 120/min | 300/min |
| calendar_read | 120/min | 300/min |
| calendar_write | 30/min | 120/min |
| signal_send | 30/min, 1,000/day | 120/min, 5,000/day |
| signal_read | 120/min | 300/min |
| sms_send | 10/min, 200/day | 10/min, 1,000/day |
| sms_read | 120/min | 300/min |

The daily send limits stay below the providers' own (Google Workspace sends at most 2,000 messages a day per
mailbox, then refuses for 24 hours); 10 SMS a minute is what US carriers allow one long-code number.
"""

from __future__ import annotations

import msgspec


class OperationLimit(msgspec.Struct, frozen=True):
    """How often one API key may do one identity operation: per sliding minute and, if set, per day."""

    per_minute: int
    per_day: int | None = None


class IdentityLimits(msgspec.Struct, frozen=True):
    """A plan's per-key limits on the identity API, one per operation (``identity/limits.py`` names)."""

    email_send: OperationLimit
    email_read: OperationLimit
    calendar_read: OperationLimit
    calendar_write: OperationLimit
    signal_send: OperationLimit
    signal_read: OperationLimit
    sms_send: OperationLimit
    sms_read: OperationLimit


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
    identity_limits: IdentityLimits

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
        identity_limits=IdentityLimits(
            email_send=OperationLimit(20, 500),
            email_read=OperationLimit(120),
            calendar_read=OperationLimit(120),
            calendar_write=OperationLimit(30),
            signal_send=OperationLimit(30, 1_000),
            signal_read=OperationLimit(120),
            sms_send=OperationLimit(10, 200),
            sms_read=OperationLimit(120),
        ),
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
        identity_limits=IdentityLimits(
            email_send=OperationLimit(60, 2_000),
            email_read=OperationLimit(300),
            calendar_read=OperationLimit(300),
            calendar_write=OperationLimit(120),
            signal_send=OperationLimit(120, 5_000),
            signal_read=OperationLimit(300),
            sms_send=OperationLimit(10, 1_000),
            sms_read=OperationLimit(300),
        ),
    ),
}


def plan_named(name: str) -> Plan:
    """The plan called ``name`` (as stored in subscriptions.plan); ValueError for an unknown name."""
    try:
        return PLANS[name]
    except KeyError:
        raise ValueError(f"unknown plan: {name!r}") from None
