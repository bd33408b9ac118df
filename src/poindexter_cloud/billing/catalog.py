"""What Stripe must hold for our plans, derived from ``billing.plans.PLANS``, and the sync that makes it so.

Per plan: one product ("Poindexter Basic"), one licensed monthly price (lookup key
``poindexter_{plan}_monthly``) and two metered prices on the two Billing Meters (lookup keys
``poindexter_{plan}_input_tokens`` / ``_output_tokens``). The meters (``poindexter_input_tokens``,
``poindexter_output_tokens``) sum the ``value`` of meter events naming the customer in
``stripe_customer_id``.

Stripe identifies our objects by lookup key (prices), event name (meters) and metadata (products:
``poindexter_plan``). Prices also carry ``poindexter_plan`` / ``poindexter_component`` metadata, which stays
with a price after its lookup key moves on, so a subscription still on an archived price maps to its plan.

Metered amounts are in **cents per token**: Stripe's ``unit_amount_decimal`` allows 12 decimal places, so
$3 per million tokens is exactly "0.0003". Prices are immutable in Stripe: a changed amount becomes a new
price that takes over the lookup key (``transfer_lookup_key``), and the old one is archived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from poindexter_cloud.billing.plans import PLANS, Plan

if TYPE_CHECKING:  # billing.service (imported by the proxy) reads this module; only the sync needs the SDK
    from poindexter_cloud.billing.stripe_adapter import Meter, Price, Product, StripeAdapter

CURRENCY: Final = "usd"
INTERVAL: Final = "month"
NANODOLLARS_PER_CENT: Final = 10_000_000
PLAN_KEY: Final = "poindexter_plan"  # metadata on products and prices
COMPONENT_KEY: Final = "poindexter_component"  # metadata on prices: subscription, input_tokens, output_tokens
TOKEN_KINDS: Final = ("input", "output")
METER_EVENT_NAMES: Final = {"input": "poindexter_input_tokens", "output": "poindexter_output_tokens"}
METER_CUSTOMER_KEY: Final = "stripe_customer_id"
METER_VALUE_KEY: Final = "value"


def licensed_lookup_key(plan: str) -> str:
    return f"poindexter_{plan}_monthly"


def metered_lookup_key(plan: str, kind: str) -> str:
    return f"poindexter_{plan}_{kind}_tokens"


def subscription_lookup_keys(plan: str) -> tuple[str, str, str]:
    """The three prices a subscription to ``plan`` has: the monthly fee, then input and output tokens."""
    return (licensed_lookup_key(plan), metered_lookup_key(plan, "input"), metered_lookup_key(plan, "output"))


PLAN_BY_LICENSED_LOOKUP_KEY: Final = {licensed_lookup_key(name): name for name in PLANS}


def plan_of_price(lookup_key: str | None, metadata: Mapping[str, str]) -> str | None:
    """The plan a licensed price stands for: by lookup key, else by the metadata it keeps once archived."""
    if lookup_key in PLAN_BY_LICENSED_LOOKUP_KEY:
        return PLAN_BY_LICENSED_LOOKUP_KEY[lookup_key]
    if metadata.get(COMPONENT_KEY) == "subscription" and metadata.get(PLAN_KEY) in PLANS:
        return metadata[PLAN_KEY]
    return None


def metered_price_of(lookup_key: str | None, metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(plan, token kind) of one of our metered prices: by lookup key, else by the metadata it keeps."""
    for plan in PLANS:
        for kind in TOKEN_KINDS:
            if lookup_key == metered_lookup_key(plan, kind):
                return plan, kind
    named, component = metadata.get(PLAN_KEY), metadata.get(COMPONENT_KEY, "")
    kind = component.removesuffix("_tokens")
    if named in PLANS and component.endswith("_tokens") and kind in TOKEN_KINDS:
        return named, kind
    return None


def cents_per_token(nanodollars_per_token: int) -> Decimal:
    return (Decimal(nanodollars_per_token) / NANODOLLARS_PER_CENT).normalize()


# --- the catalog we want --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProductSpec:
    plan: str
    name: str

    @property
    def metadata(self) -> dict[str, str]:
        return {PLAN_KEY: self.plan}


@dataclass(frozen=True, slots=True)
class MeterSpec:
    kind: str  # input, output
    event_name: str
    display_name: str


@dataclass(frozen=True, slots=True)
class PriceSpec:
    lookup_key: str
    plan: str
    component: str  # subscription, input_tokens, output_tokens
    nickname: str
    usage_type: str  # licensed, metered
    unit_amount: int | None = None  # cents, licensed prices
    unit_amount_decimal: Decimal | None = None  # cents per token, metered prices
    meter_kind: str | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return {PLAN_KEY: self.plan, COMPONENT_KEY: self.component}


@dataclass(frozen=True, slots=True)
class Catalog:
    products: tuple[ProductSpec, ...]
    meters: tuple[MeterSpec, ...]
    prices: tuple[PriceSpec, ...]


def desired_catalog(plans: Mapping[str, Plan] = PLANS) -> Catalog:
    products = tuple(ProductSpec(name, f"Poindexter {name.capitalize()}") for name in plans)
    meters = tuple(
        MeterSpec(kind, METER_EVENT_NAMES[kind], f"Poindexter {kind} tokens") for kind in TOKEN_KINDS
    )
    prices: list[PriceSpec] = []
    for name, plan in plans.items():
        title = name.capitalize()
        prices.append(
            PriceSpec(
                licensed_lookup_key(name),
                name,
                "subscription",
                f"Poindexter {title} monthly",
                "licensed",
                unit_amount=plan.monthly_price_cents,
            )
        )
        rates = {
            "input": plan.overage_input_nanodollars_per_token,
            "output": plan.overage_output_nanodollars_per_token,
        }
        for kind in TOKEN_KINDS:
            prices.append(
                PriceSpec(
                    metered_lookup_key(name, kind),
                    name,
                    f"{kind}_tokens",
                    f"Poindexter {title} {kind} tokens",
                    "metered",
                    unit_amount_decimal=cents_per_token(rates[kind]),
                    meter_kind=kind,
                )
            )
    return Catalog(products, meters, tuple(prices))


# --- the sync ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncRow:
    kind: str  # product, meter, price
    key: str  # plan, meter event name, price lookup key
    stripe_id: str
    action: str  # created, updated, replaced, unchanged
    note: str = ""


def _same_terms(price: Price, spec: PriceSpec, product_id: str, meter_id: str | None) -> bool:
    """Whether an existing price charges what the spec says (the parts Stripe never lets us change)."""
    if (price.currency, price.product, price.interval, price.usage_type) != (
        CURRENCY,
        product_id,
        INTERVAL,
        spec.usage_type,
    ):
        return False
    if spec.usage_type == "metered":
        return price.meter == meter_id and price.unit_amount_decimal == spec.unit_amount_decimal
    return price.unit_amount == spec.unit_amount


async def _sync_products(
    stripe: StripeAdapter, specs: tuple[ProductSpec, ...]
) -> tuple[dict[str, str], list[SyncRow]]:
    existing: dict[str, Product] = {}
    for product in await stripe.list_products():
        plan = product.metadata.get(PLAN_KEY)
        # Prefer an active product if an archived one carries the same plan.
        if plan is not None and (plan not in existing or (product.active and not existing[plan].active)):
            existing[plan] = product
    ids: dict[str, str] = {}
    rows: list[SyncRow] = []
    for spec in specs:
        found = existing.get(spec.plan)
        if found is None:
            created = await stripe.create_product(spec.name, spec.metadata)
            ids[spec.plan] = created.id
            rows.append(SyncRow("product", spec.plan, created.id, "created", spec.name))
        elif found.name != spec.name or not found.active or _lacks(found.metadata, spec.metadata):
            await stripe.update_product(found.id, spec.name, spec.metadata)
            ids[spec.plan] = found.id
            rows.append(SyncRow("product", spec.plan, found.id, "updated", spec.name))
        else:
            ids[spec.plan] = found.id
            rows.append(SyncRow("product", spec.plan, found.id, "unchanged", spec.name))
    return ids, rows


def _lacks(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return any(have.get(key) != value for key, value in want.items())


def _meter_definition_differs(meter: Meter) -> bool:
    return (meter.formula, meter.customer_payload_key, meter.value_payload_key) != (
        "sum",
        METER_CUSTOMER_KEY,
        METER_VALUE_KEY,
    )


async def _sync_meters(
    stripe: StripeAdapter, specs: tuple[MeterSpec, ...]
) -> tuple[dict[str, str], list[SyncRow]]:
    existing: dict[str, Meter] = {}
    for meter in await stripe.list_meters():
        if meter.event_name not in existing or meter.status == "active":
            existing[meter.event_name] = meter
    ids: dict[str, str] = {}
    rows: list[SyncRow] = []
    for spec in specs:
        found = existing.get(spec.event_name)
        if found is None:
            created = await stripe.create_meter(
                event_name=spec.event_name,
                display_name=spec.display_name,
                customer_payload_key=METER_CUSTOMER_KEY,
                value_payload_key=METER_VALUE_KEY,
            )
            ids[spec.kind] = created.id
            rows.append(SyncRow("meter", spec.event_name, created.id, "created"))
            continue
        ids[spec.kind] = found.id
        # A meter's aggregation and mappings cannot change in Stripe: say so rather than guess.
        note = "definition differs: fix it in Stripe" if _meter_definition_differs(found) else ""
        action = "unchanged"
        if found.status != "active":
            await stripe.reactivate_meter(found.id)
            action = "updated"
        if found.display_name != spec.display_name:
            await stripe.update_meter(found.id, spec.display_name)
            action = "updated"
        rows.append(SyncRow("meter", spec.event_name, found.id, action, note))
    return ids, rows


async def _sync_prices(
    stripe: StripeAdapter,
    specs: tuple[PriceSpec, ...],
    products: Mapping[str, str],
    meters: Mapping[str, str],
) -> list[SyncRow]:
    existing = await stripe.prices_by_lookup_keys([spec.lookup_key for spec in specs])
    rows: list[SyncRow] = []
    for spec in specs:
        product_id = products[spec.plan]
        meter_id = meters[spec.meter_kind] if spec.meter_kind else None
        found = existing.get(spec.lookup_key)
        amount = (
            str(spec.unit_amount) if spec.unit_amount is not None else f"{spec.unit_amount_decimal}/token"
        )
        if found is not None and _same_terms(found, spec, product_id, meter_id):
            if found.active and found.nickname == spec.nickname and not _lacks(found.metadata, spec.metadata):
                rows.append(SyncRow("price", spec.lookup_key, found.id, "unchanged", amount))
            else:
                await stripe.update_price(
                    found.id, active=True, nickname=spec.nickname, metadata=spec.metadata
                )
                rows.append(SyncRow("price", spec.lookup_key, found.id, "updated", amount))
            continue
        created = await stripe.create_price(
            product=product_id,
            lookup_key=spec.lookup_key,
            nickname=spec.nickname,
            metadata=spec.metadata,
            currency=CURRENCY,
            interval=INTERVAL,
            usage_type=spec.usage_type,
            unit_amount=spec.unit_amount,
            unit_amount_decimal=spec.unit_amount_decimal,
            meter=meter_id,
            transfer_lookup_key=found is not None,
        )
        if found is None:
            rows.append(SyncRow("price", spec.lookup_key, created.id, "created", amount))
        else:
            # Subscriptions already on the old price keep it; archiving only stops new ones using it.
            if found.active:
                await stripe.update_price(found.id, active=False)
            rows.append(
                SyncRow("price", spec.lookup_key, created.id, "replaced", f"{amount}; archived {found.id}")
            )
    return rows


async def sync_catalog(stripe: StripeAdapter, catalog: Catalog | None = None) -> list[SyncRow]:
    """Create or update, idempotently, everything ``catalog`` (default: from PLANS) needs in Stripe."""
    catalog = catalog or desired_catalog()
    products, product_rows = await _sync_products(stripe, catalog.products)
    meters, meter_rows = await _sync_meters(stripe, catalog.meters)
    price_rows = await _sync_prices(stripe, catalog.prices, products, meters)
    return [*product_rows, *meter_rows, *price_rows]
