"""Billing's rules. Never commits: the caller's unit of work does."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ARRAY, Uuid, any_, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.billing import catalog
from poindexter_cloud.billing.errors import (
    AlreadySubscribed,
    BillingNotConfigured,
    NoBillingAccount,
    StripeObjectMissing,
)
from poindexter_cloud.billing.models import Subscription
from poindexter_cloud.core import audit
from poindexter_cloud.core.db import UnitOfWork, advisory_lock_key
from poindexter_cloud.core.errors import Conflict, NotFound
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.provisioning import service as provisioning

if TYPE_CHECKING:  # the proxy imports this module for entitlements: it need not load the Stripe SDK
    from poindexter_cloud.billing.stripe_adapter import CheckoutSession, StripeAdapter, SubscriptionItem
    from poindexter_cloud.billing.stripe_adapter import Subscription as StripeSubscription

log = logging.getLogger(__name__)


async def ensure_usage_partitions(session: AsyncSession, months_ahead: int) -> int:
    """Create missing monthly partitions up to ``months_ahead`` (the SQL function is in migration 0001)."""
    result = await session.execute(
        text("SELECT ensure_usage_events_partitions(:ahead)"), {"ahead": months_ahead}
    )
    return int(result.scalar_one())


async def drop_usage_partitions_before(session: AsyncSession, cutoff: date) -> list[str]:
    """Drop the monthly usage_events partitions wholly before ``cutoff`` (a month's first day), and delete
    the default partition's rows before it; returns the dropped partitions' names. Monthly totals
    (usage_monthly) and what was billed (meter_event_records) are kept."""
    rows = await session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'usage_events'::regclass AND c.relname ~ '^usage_events_[0-9]{4}_[0-9]{2}$'"
        )
    )
    dropped = []
    for name in sorted(rows.scalars()):
        year, month = int(name[13:17]), int(name[18:20])
        if (year, month) < (cutoff.year, cutoff.month):
            await session.execute(text(f'DROP TABLE "{name}"'))
            dropped.append(name)
    await session.execute(
        text("DELETE FROM usage_events_default WHERE created_at < :cutoff"),
        {"cutoff": datetime(cutoff.year, cutoff.month, 1, tzinfo=UTC)},
    )
    return dropped


# Stripe subscription statuses that grant the service, and those that mean "paid before, failing now".
ENTITLED_STATUSES = frozenset({"active", "trialing"})
SUSPENDED_STATUSES = frozenset({"past_due", "unpaid", "incomplete"})


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What a user may use now: their plan if subscribed, or why not."""

    plan: str | None
    state: str  # active, suspended (payment failing), none (no subscription)
    spend_cap_microdollars: int | None = None


NO_SUBSCRIPTION = Entitlement(None, "none")


_ENTITLEMENT_COLUMNS = (Subscription.plan, Subscription.status, Subscription.spend_cap_microdollars)


async def entitlement(session: AsyncSession, user_id: uuid.UUID) -> Entitlement:
    row = (
        await session.execute(select(*_ENTITLEMENT_COLUMNS).where(Subscription.user_id == user_id))
    ).one_or_none()
    return NO_SUBSCRIPTION if row is None else _entitlement(*row)


async def entitlements(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Entitlement]:
    """Every given user's entitlement, in one query."""
    rows = await session.execute(
        select(Subscription.user_id, *_ENTITLEMENT_COLUMNS).where(
            Subscription.user_id == any_(bindparam("user_ids", list(user_ids), type_=ARRAY(Uuid)))
        )
    )
    found = {user_id: _entitlement(plan, status, cap) for user_id, plan, status, cap in rows}
    return {user_id: found.get(user_id, NO_SUBSCRIPTION) for user_id in user_ids}


def _entitlement(plan: str, status: str, cap: int | None) -> Entitlement:
    if status in ENTITLED_STATUSES:
        return Entitlement(plan, "active", cap)
    if status in SUSPENDED_STATUSES:
        return Entitlement(plan, "suspended", cap)
    return Entitlement(plan, "none", cap)


class NoSubscription(NotFound):
    code = "no_subscription"


async def set_spend_cap(session: AsyncSession, user_id: uuid.UUID, cap_microdollars: int | None) -> None:
    subscription = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id).with_for_update())
    ).scalar_one_or_none()
    if subscription is None:
        raise NoSubscription("There is no subscription to cap yet.")
    subscription.spend_cap_microdollars = cap_microdollars


COMP_PREFIX = "comp_"


async def grant_complimentary(uow: UnitOfWork, user_id: uuid.UUID, plan: str) -> Subscription:
    """An operator-granted subscription outside Stripe (staff, partners, a newcomer's dev setup). Like a
    paid one, its first activation starts provisioning the identity.

    Its id starts with ``comp_`` so Stripe synchronisation leaves it alone."""
    from poindexter_cloud.billing.plans import plan_named

    session = uow.session
    plan_named(plan)  # refuses an unknown plan
    subscription = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id).with_for_update())
    ).scalar_one_or_none()
    if subscription is None:
        subscription = Subscription(
            user_id=user_id,
            stripe_subscription_id=f"{COMP_PREFIX}{uuid.uuid4().hex}",
            stripe_price_id=f"{COMP_PREFIX}{plan}",
            plan=plan,
            status="active",
        )
        session.add(subscription)
    elif not subscription.stripe_subscription_id.startswith(COMP_PREFIX):
        raise Conflict("This user pays through Stripe; change the plan there.")
    else:
        subscription.plan, subscription.status = plan, "active"
    await session.flush()
    await on_first_activation(uow, user_id)
    return subscription


# --- Stripe: the subscriber's view, checkout and the portal ----------------------------------------------

# Stripe statuses of a subscription that has ended for good, and of one that never got paid for.
TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
NEVER_STARTED_STATUSES = frozenset({"incomplete", "incomplete_expired"})
PAYMENT_FAILED_REASON = "payment failed"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A subscription in our terms: active, suspended (with the reason), canceled or none."""

    plan: str | None
    status: str
    reason: str | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    spend_cap_microdollars: int | None = None
    complimentary: bool = False


def our_status(stripe_status: str) -> str:
    if stripe_status in ENTITLED_STATUSES:
        return "active"
    if stripe_status in SUSPENDED_STATUSES:
        return "suspended"
    if stripe_status in TERMINAL_STATUSES:
        return "canceled"
    return "none"


async def subscription_state(session: AsyncSession, user_id: uuid.UUID) -> SubscriptionState:
    row = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id))
    ).scalar_one_or_none()
    if row is None:
        return SubscriptionState(None, "none")
    status = our_status(row.status)
    return SubscriptionState(
        plan=row.plan,
        status=status,
        reason=(row.suspended_reason or PAYMENT_FAILED_REASON) if status == "suspended" else None,
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        cancel_at_period_end=row.cancel_at_period_end,
        spend_cap_microdollars=row.spend_cap_microdollars,
        complimentary=row.stripe_subscription_id.startswith(COMP_PREFIX),
    )


def billing_page_url(settings: Settings, outcome: str | None = None) -> str:
    base = f"{settings.web_base_url}/console/billing"
    return base if outcome is None else f"{base}?checkout={outcome}"


async def start_checkout(
    uow: UnitOfWork,
    accounts: Accounts,
    stripe: StripeAdapter,
    settings: Settings,
    user_id: uuid.UUID,
    plan: str,
) -> CheckoutSession:
    """A Stripe Checkout page for ``plan``: the monthly fee plus the plan's two metered token prices.

    The Stripe customer is created once per user (under the user row's lock, with an idempotency key so a
    retried request finds the same customer) and stored by accounts. Nothing is granted here: the
    subscription exists for us only once Stripe's webhook says so. A user who already has a live
    subscription (ours, complimentary, or one Stripe knows and the webhook has not told us yet) is sent
    to the portal instead."""
    from poindexter_cloud.billing.plans import plan_named
    from poindexter_cloud.billing.stripe_adapter import LineItem

    plan_named(plan)
    row = (
        await uow.session.execute(select(Subscription).where(Subscription.user_id == user_id))
    ).scalar_one_or_none()
    if row is not None and row.stripe_subscription_id.startswith(COMP_PREFIX) and row.status == "active":
        raise AlreadySubscribed("You have a complimentary plan; ask us to change it.")
    if row is not None and row.status not in TERMINAL_STATUSES:
        raise AlreadySubscribed(
            "You already have a subscription; change or cancel it in the billing portal "
            "(POST /v1/billing/portal)."
        )
    customer = await accounts.stripe_customer_id(uow.session, user_id, for_update=True)
    if customer is None:
        user = await accounts.get_user(uow.session, user_id)
        fingerprint = hashlib.sha256(user.email.encode()).hexdigest()[:16]
        customer = await stripe.create_customer(
            email=user.email,
            user_id=str(user_id),
            idempotency_key=f"poindexter-customer-{user_id}-{fingerprint}",
        )
        await accounts.set_stripe_customer_id(uow.session, user_id, customer)
    elif any(s.status not in TERMINAL_STATUSES for s in await stripe.customer_subscriptions(customer)):
        raise AlreadySubscribed(
            "You already have a subscription; change or cancel it in the billing portal "
            "(POST /v1/billing/portal)."
        )
    keys = catalog.subscription_lookup_keys(plan)
    prices = await stripe.prices_by_lookup_keys(keys)
    if any(key not in prices or not prices[key].active for key in keys):
        log.error("stripe catalog incomplete", extra={"missing": [k for k in keys if k not in prices]})
        raise BillingNotConfigured("Subscriptions are not available yet; please try again later.")
    licensed, *metered = keys
    checkout = await stripe.create_checkout_session(
        customer=customer,
        line_items=[LineItem(prices[licensed].id, 1), *(LineItem(prices[key].id) for key in metered)],
        success_url=billing_page_url(settings, "success"),
        cancel_url=billing_page_url(settings, "cancelled"),
        client_reference_id=str(user_id),
        metadata={"user_id": str(user_id), "plan": plan},
    )
    audit.record(
        uow.session,
        "billing.checkout_started",
        actor=user_id,
        subject=user_id,
        plan=plan,
        checkout_session=checkout.id,
    )
    return checkout


async def portal_url(
    session: AsyncSession, accounts: Accounts, stripe: StripeAdapter, settings: Settings, user_id: uuid.UUID
) -> str:
    """A Stripe Customer Portal session, where the subscriber changes plan, card or cancels."""
    customer = await accounts.stripe_customer_id(session, user_id)
    if customer is None:
        raise NoBillingAccount(
            "There is no billing account yet: subscribe first (POST /v1/billing/subscribe)."
        )
    return await stripe.create_portal_session(customer=customer, return_url=billing_page_url(settings))


# --- Stripe: acting on webhook events --------------------------------------------------------------------

# The events after which a subscription's state is read back from Stripe.
SUBSCRIPTION_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
    }
)


@dataclass(frozen=True, slots=True)
class EventReference:
    """Which subscription an event is about, and who it may belong to."""

    subscription_id: str
    customer_id: str | None
    user_hints: tuple[str, ...]  # our user id, from the metadata we set at checkout


def _obj_id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def stripe_event_reference(event_type: str, payload: dict[str, Any]) -> EventReference | None:
    """The subscription an event concerns, or None if we do not act on it."""
    if event_type not in SUBSCRIPTION_EVENTS:
        return None
    obj = _dig(payload, "data", "object")
    if not isinstance(obj, dict):
        return None
    hints: list[Any] = []
    if event_type == "checkout.session.completed":
        if obj.get("mode") != "subscription":
            return None
        subscription = _obj_id(obj.get("subscription"))
        hints = [_dig(obj, "metadata", "user_id"), obj.get("client_reference_id")]
    elif event_type.startswith("customer.subscription."):
        subscription = _obj_id(obj.get("id"))
        hints = [_dig(obj, "metadata", "user_id")]
    else:  # invoices: the subscription moved under parent.subscription_details in 2025-03-31
        details = _dig(obj, "parent", "subscription_details") or obj.get("subscription_details") or {}
        subscription = _obj_id(obj.get("subscription")) or _obj_id(_dig(details, "subscription"))
        hints = [_dig(details, "metadata", "user_id")]
    if subscription is None:
        return None
    return EventReference(
        subscription, _obj_id(obj.get("customer")), tuple(h for h in hints if isinstance(h, str) and h)
    )


# What a processed Stripe event keeps of its object: the references we act on and the state, none of the
# customer's personal data (Checkout's customer_details, invoices' customer_email, names, addresses, lines).
KEPT_OBJECT_FIELDS: Final[tuple[str, ...]] = (
    "id",
    "object",
    "status",
    "mode",
    "customer",
    "subscription",
    "client_reference_id",
)
KEPT_EVENT_FIELDS: Final[tuple[str, ...]] = ("id", "object", "type", "created", "api_version")


def stripe_event_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """The stored event once processed: enough to see what it was about, without personal data."""
    obj = _dig(payload, "data", "object")
    kept: dict[str, Any] = {}
    if isinstance(obj, dict):
        kept = {name: obj[name] for name in KEPT_OBJECT_FIELDS if name in obj}
        user_id = _dig(obj, "metadata", "user_id")
        if user_id is not None:
            kept["metadata"] = {"user_id": user_id}
        details = _dig(obj, "parent", "subscription_details") or obj.get("subscription_details")
        if isinstance(details, dict) and "subscription" in details:
            kept["parent"] = {"subscription_details": {"subscription": details["subscription"]}}
    top: dict[str, Any] = {name: payload[name] for name in KEPT_EVENT_FIELDS if name in payload}
    return {**top, "data": {"object": kept}}


@dataclass(frozen=True, slots=True)
class Applied:
    """What processing an event did: the user it concerned (if any) and whether their row changed."""

    user_id: uuid.UUID | None
    changed: bool
    note: str


async def lock_stripe_customer(session: AsyncSession, key: str) -> None:
    """Serialise the processing of one customer's events until this transaction ends, so the state read
    from Stripe by the later transaction is the one that stays."""
    await session.execute(select(func.pg_advisory_xact_lock(advisory_lock_key(f"stripe:{key}"))))


async def apply_stripe_event(
    uow: UnitOfWork,
    accounts: Accounts,
    stripe: StripeAdapter,
    settings: Settings,
    event_type: str,
    payload: dict[str, Any],
) -> Applied:
    """Act on one Stripe event by reading its subscription's *current* state from Stripe, so duplicates,
    reordered and late deliveries all end in Stripe's state. Idempotent."""
    ref = stripe_event_reference(event_type, payload)
    if ref is None:
        return Applied(None, False, "ignored")
    if ref.subscription_id.startswith(COMP_PREFIX):
        return Applied(None, False, "complimentary")
    await lock_stripe_customer(uow.session, ref.customer_id or ref.subscription_id)
    try:
        subscription = await stripe.retrieve_subscription(ref.subscription_id)
    except StripeObjectMissing:
        log.warning("stripe event for an unknown subscription", extra={"subscription": ref.subscription_id})
        return Applied(None, False, "unknown subscription")
    user_id = await _user_of(uow.session, accounts, subscription, ref)
    if user_id is None:
        log.warning(
            "stripe subscription of no known user",
            extra={"subscription": subscription.id, "customer": subscription.customer},
        )
        return Applied(None, False, "unknown customer")
    subscription = await align_metered_prices(stripe, subscription)
    changed = await apply_stripe_subscription(uow, user_id, subscription, settings.deprovision_grace_days)
    return Applied(user_id, changed, "applied" if changed else "unchanged")


async def align_metered_prices(stripe: StripeAdapter, subscription: StripeSubscription) -> StripeSubscription:
    """After a plan change (the portal swaps only the monthly price), put the token items on the new plan's
    metered prices, so overage is billed at the plan's rates; the subscription as it now is.

    Only items priced for *another plan* move: a subscriber on an archived price of the same plan keeps it
    (a price change reaches existing subscribers only when an operator decides so). Idempotent: once aligned,
    nothing is called; the update's own webhook finds it aligned."""
    found = _licensed_item(subscription)
    if found is None or subscription.status in TERMINAL_STATUSES:
        return subscription
    plan = found[1]
    wrong: dict[str, str] = {}  # item id -> the lookup key it should be on
    for item in subscription.items:
        metered = catalog.metered_price_of(item.price.lookup_key, item.price.metadata)
        if metered is not None and metered[0] != plan:
            wrong[item.id] = catalog.metered_lookup_key(plan, metered[1])
    if not wrong:
        return subscription
    prices = await stripe.prices_by_lookup_keys(sorted(set(wrong.values())))
    missing = sorted(key for key in set(wrong.values()) if key not in prices or not prices[key].active)
    if missing:
        log.error("stripe catalog incomplete", extra={"missing": missing, "subscription": subscription.id})
        return subscription
    log.info("moving token prices to the new plan", extra={"subscription": subscription.id, "plan": plan})
    return await stripe.change_item_prices(
        subscription.id, {item_id: prices[key].id for item_id, key in wrong.items()}
    )


async def _user_of(
    session: AsyncSession, accounts: Accounts, subscription: StripeSubscription, ref: EventReference
) -> uuid.UUID | None:
    user_id = await accounts.user_for_stripe_customer(session, subscription.customer)
    if user_id is not None:
        return user_id
    # The customer is stored before checkout starts, so this is only a fallback: our own metadata.
    for hint in (subscription.metadata.get("user_id"), *ref.user_hints):
        try:
            candidate = uuid.UUID(hint or "")
            current = await accounts.stripe_customer_id(session, candidate, for_update=True)
        except (ValueError, NotFound):
            continue
        if current is None:
            await accounts.set_stripe_customer_id(session, candidate, subscription.customer)
            return candidate
        log.warning(
            "stripe metadata names a user with another customer",
            extra={"user_id": str(candidate), "customer": subscription.customer},
        )
    return None


def _licensed_item(subscription: StripeSubscription) -> tuple[SubscriptionItem, str] | None:
    for item in subscription.items:
        plan = catalog.plan_of_price(item.price.lookup_key, item.price.metadata)
        if plan is not None and item.price.usage_type != "metered":
            return item, plan
    return None


def _assign(row: Subscription, changes: dict[str, Any]) -> bool:
    changed = False
    for name, value in changes.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


async def apply_stripe_subscription(
    uow: UnitOfWork, user_id: uuid.UUID, subscription: StripeSubscription, grace_days: int
) -> bool:
    """Make the user's subscriptions row match Stripe's subscription; True if anything changed."""
    found = _licensed_item(subscription)
    if found is None:
        log.warning(
            "stripe subscription without a poindexter plan price", extra={"subscription": subscription.id}
        )
        return False
    item, plan = found
    session = uow.session
    row = (
        await session.execute(select(Subscription).where(Subscription.user_id == user_id).with_for_update())
    ).scalar_one_or_none()
    status = subscription.status
    if row is not None and row.stripe_subscription_id.startswith(COMP_PREFIX):
        log.warning("stripe subscription for a user on a complimentary plan", extra={"user_id": str(user_id)})
        return False
    if row is None:
        if status in NEVER_STARTED_STATUSES:
            return False  # a checkout that was never paid grants (and records) nothing
        row = Subscription(
            user_id=user_id, stripe_subscription_id=subscription.id, cancel_at_period_end=False
        )
        session.add(row)
        created = True
    elif row.stripe_subscription_id != subscription.id:
        # Another Stripe subscription of the same user: a new one after a cancellation replaces the row; an
        # old or abandoned one never overwrites a live one.
        if status in NEVER_STARTED_STATUSES or (
            status in TERMINAL_STATUSES and row.status not in TERMINAL_STATUSES
        ):
            return False
        if row.status not in TERMINAL_STATUSES and status not in TERMINAL_STATUSES:
            log.warning(
                "user has two live stripe subscriptions",
                extra={"user_id": str(user_id), "kept": subscription.id, "other": row.stripe_subscription_id},
            )
        row.stripe_subscription_id = subscription.id
        row.activated_at = None  # a new subscription is provisioned again (provisioning is idempotent)
        row.deprovision_after = None
        created = True
    else:
        created = False
    before = None if created else our_status(row.status)
    changes: dict[str, Any] = {
        "status": status,
        "plan": plan,
        "stripe_price_id": item.price.id,
        "current_period_start": item.current_period_start or subscription.current_period_start,
        "current_period_end": item.current_period_end or subscription.current_period_end,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "canceled_at": subscription.canceled_at,
        "suspended_reason": PAYMENT_FAILED_REASON if status in SUSPENDED_STATUSES else None,
    }
    if status in TERMINAL_STATUSES:
        ended = subscription.ended_at or subscription.canceled_at
        if ended is not None:
            changes["deprovision_after"] = ended + timedelta(days=grace_days)
        elif row.deprovision_after is None:
            changes["deprovision_after"] = _now() + timedelta(days=grace_days)
    else:
        changes["deprovision_after"] = None
    changed = _assign(row, changes) or created
    await session.flush()
    if status in ENTITLED_STATUSES and row.activated_at is None:
        await on_first_activation(uow, user_id)
        changed = True
    await _identity_follows(uow, user_id, before, our_status(status))
    if changed:
        audit.record(
            session,
            "billing.subscription_synced",
            subject=user_id,
            subscription=subscription.id,
            status=status,
            plan=plan,
        )
    return changed


async def _identity_follows(uow: UnitOfWork, user_id: uuid.UUID, before: str | None, after: str) -> None:
    """A failing payment suspends the identity, a paid one resumes it (provisioning acts after the commit;
    an ended subscription is deprovisioned after ``deprovision_after`` by provisioning's cron)."""
    if after == "suspended" and before != "suspended":
        await provisioning.request_suspension(uow, user_id)
    elif before == "suspended" and after == "active":
        await provisioning.request_resumption(uow, user_id)


async def users_to_deprovision(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Users whose subscription has ended and whose grace period (``deprovision_after``) is over."""
    rows = await session.execute(
        select(Subscription.user_id).where(
            Subscription.deprovision_after <= now, Subscription.status.in_(TERMINAL_STATUSES)
        )
    )
    return list(rows.scalars())


async def on_first_activation(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    """The user's subscription grants the service for the first time: record when (``activated_at``) and
    start provisioning the identity, in this same transaction (so it runs only if the activation commits).
    """
    row = (
        await uow.session.execute(
            select(Subscription).where(Subscription.user_id == user_id).with_for_update()
        )
    ).scalar_one()
    if row.activated_at is not None:
        return
    row.activated_at = _now()
    audit.record(uow.session, "billing.subscription_activated", subject=user_id, plan=row.plan)
    await provisioning.request_provisioning(uow, user_id)
