"""The hosted pages a browser visits: Checkout (``/stripe/checkout/{id}``) and the customer portal
(``/stripe/portal/{id}``). Plain HTML forms, no script.

Checkout: ``GET`` shows the plan, the amount due today and a ``card_number`` field; ``POST`` (``card_number``,
plus ``email``/``name`` when the session has no customer) pays. 4242 4242 4242 4242 (and Stripe's other
succeeding test cards) completes the session and answers 303 to ``success_url`` with ``{CHECKOUT_SESSION_ID}``
filled in; 4000 0000 0000 0341 (attaches, every charge fails) and 4000 0000 0000 0002 are declined: the page
comes back with status 402 and "Your card was declined.", and nothing is created. An unknown number is "Your
card number is incorrect.". The back link goes to ``cancel_url``.

Portal: ``GET`` lists the customer's subscriptions, invoices and card; each button ``POST``s ``action``
(``switch`` with ``subscription`` and ``price``: any other active licensed recurring price with a lookup key
in the same currency; ``cancel_at_period_end``; ``renew`` to withdraw that; ``cancel_now``; ``update_card``
with ``card_number``) and answers 303 to the session's ``return_url`` (or back to the portal without one). A
card that fails charges (0341) is saved, so the next invoice fails; a new good card retries open invoices at
once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any, Final

from litestar import Request, Response, get, post

from . import billing, render
from .errors import StripeError
from .forms import decode_form
from .store import STATE, CheckoutSession, Customer, PortalSession, Price, Subscription

HTML: Final = "text/html; charset=utf-8"
state = STATE

_STYLE: Final = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f6f9fc;color:#1a1f36;margin:0}
main{max-width:34rem;margin:3rem auto;background:#fff;border-radius:8px;padding:2rem;
box-shadow:0 2px 8px rgba(50,50,93,.1)}
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.muted{color:#697386;font-size:.9rem}.total{font-size:1.6rem;font-weight:600;margin:1rem 0}
table{width:100%;border-collapse:collapse}td{padding:.35rem 0;border-bottom:1px solid #e3e8ee}
td.amount{text-align:right}label{display:block;margin:.75rem 0 .25rem;font-size:.9rem}
input,select{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #cfd7df;border-radius:6px;
font-size:1rem}button{margin-top:1rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#635bff;
color:#fff;font-size:1rem;cursor:pointer}
button.secondary{background:#fff;color:#635bff;border:1px solid #635bff}button.danger{background:#df1b41}
.error{background:#fde8ec;color:#a41c4e;padding:.75rem;border-radius:6px;margin:1rem 0}
.notice{background:#e6f4ea;color:#1e6b34;padding:.75rem;border-radius:6px;margin:1rem 0}
.badge{font-size:.75rem;background:#e3e8ee;border-radius:4px;padding:.1rem .4rem;margin-left:.4rem}
section{border:1px solid #e3e8ee;border-radius:8px;padding:1rem;margin:1rem 0}
"""


def page(title: str, body: str, status: int = 200) -> Response[str]:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><p class=muted>Stripe sandbox · test mode</p>{body}</main></body></html>"
    )
    return Response(content=document, status_code=status, media_type=HTML)


def redirect(url: str) -> Response[str]:
    return Response(content="", status_code=303, headers={"Location": url}, media_type=HTML)


def day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%B %-d, %Y")


_ADVERBS: Final = {"day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}


def price_text(price: Price) -> str:
    unit = render.money(price.unit_amount_decimal, price.currency)
    interval = render.interval_text(price.interval or "month", price.interval_count)
    if price.metered:
        meter = state.meters.get(price.meter or "")
        what = f" of {meter.display_name}" if meter is not None else ""
        billed = _ADVERBS[price.interval or "month"] if price.interval_count == 1 else interval
        return f"{unit} per unit{what}, billed {billed} for usage"
    return f"{unit} / {interval}"


def plan_name(price: Price) -> str:
    product = state.products[price.product]
    return product.name + (f" ({price.nickname})" if price.nickname else "")


async def form(request: Request[Any, Any, Any]) -> dict[str, str]:
    data = decode_form(await request.body())
    return {k: v for k, v in data.items() if isinstance(v, str)}


# ---------------------------------------------------------------------------------------------- checkout


def checkout_page(session: CheckoutSession, error: str | None = None, status: int = 200) -> Response[str]:
    if session.status != "open":
        message = (
            "This Checkout Session is complete."
            if session.status == "complete"
            else "This Checkout Session is no longer active."
        )
        link = session.success_url if session.status == "complete" else session.cancel_url
        extra = f'<p><a href="{escape(link)}">Continue</a></p>' if link else ""
        return page("Checkout", f"<h1>Checkout</h1><p class=notice>{message}</p>{extra}", status)
    rows = []
    total = 0
    for line in session.lines:
        price = state.prices[line.price]
        amount = render.round_amount(price.unit_amount_decimal * (line.quantity or 0))
        total += amount
        quantity = f" \N{MULTIPLICATION SIGN} {line.quantity}" if line.quantity and line.quantity != 1 else ""
        shown = "usage" if price.metered else render.money(amount, price.currency)
        rows.append(
            f"<tr><td><strong>{escape(plan_name(price))}</strong>{quantity}<br>"
            f"<span class=muted>{escape(price_text(price))}</span></td><td class=amount>{shown}</td></tr>"
        )
    customer = state.customer(session.customer or "")
    who = customer.email if customer is not None else session.customer_email
    fields = []
    if who:
        fields.append(f"<p class=muted>Paying as {escape(who)}</p>")
    else:
        fields.append("<label for=email>Email</label><input id=email name=email type=email required>")
        fields.append("<label for=name>Name</label><input id=name name=name autocomplete=name>")
    fields.append(
        "<label for=card_number>Card number</label>"
        "<input id=card_number name=card_number inputmode=numeric autocomplete=cc-number "
        'placeholder="4242 4242 4242 4242" required>'
    )
    back = f'<p><a href="{escape(session.cancel_url)}">← Back</a></p>' if session.cancel_url else ""
    problem = f"<p class=error role=alert>{escape(error)}</p>" if error else ""
    body = (
        f"{back}<h1>Subscribe</h1><table>{''.join(rows)}</table>"
        f"<p class=muted>Total due today</p><p class=total>{render.money(total, session.currency)}</p>"
        f"{problem}<form method=post>{''.join(fields)}<button type=submit>Pay</button></form>"
    )
    return page("Checkout", body, status)


def _session(session_id: str) -> CheckoutSession | None:
    billing.tick(state)
    return state.checkout_sessions.get(session_id)


@get("/checkout/{session_id:str}", include_in_schema=False)
async def checkout_get(session_id: str) -> Response[str]:
    session = _session(session_id)
    if session is None:
        return page("Checkout", "<h1>Not found</h1><p>No such Checkout Session.</p>", 404)
    return checkout_page(session)


@post("/checkout/{session_id:str}", include_in_schema=False, status_code=200)
async def checkout_post(request: Request[Any, Any, Any], session_id: str) -> Response[str]:
    session = _session(session_id)
    if session is None:
        return page("Checkout", "<h1>Not found</h1><p>No such Checkout Session.</p>", 404)
    if session.status != "open":
        return checkout_page(session, status=409)
    fields = await form(request)
    card = fields.get("card_number", "").strip()
    email = fields.get("email", "").strip() or None
    name = fields.get("name", "").strip() or None
    if not card:
        return checkout_page(session, "Your card number is incomplete.", 400)
    if session.customer is None and session.customer_email is None and not email:
        return checkout_page(session, "Enter your email address.", 400)
    try:
        billing.complete_checkout(state, session, card, email, name)
    except StripeError as error:
        return checkout_page(session, error.message, error.status)
    if session.success_url:
        return redirect(session.success_url.replace("{CHECKOUT_SESSION_ID}", session.id))
    return checkout_page(session)


# ---------------------------------------------------------------------------------------------- portal


def _switch_targets(sub: Subscription) -> list[Price]:
    """Other plans: active licensed recurring prices with a lookup key, same currency, and the same interval
    as the subscription's other items (if it has any)."""
    current = {item.price for item in sub.items}
    others = [state.prices[i.price] for i in sub.items if state.prices[i.price].metered]
    return [
        p
        for p in state.prices.values()
        if p.active
        and p.lookup_key
        and p.interval is not None
        and not p.metered
        and p.currency == sub.currency
        and p.id not in current
        and all((o.interval, o.interval_count) == (p.interval, p.interval_count) for o in others)
    ]


def _button(
    portal_id: str, sub: Subscription, action: str, label: str, kind: str = "", extra: str = ""
) -> str:
    css = f" class={kind}" if kind else ""
    return (
        f'<form method=post action="/stripe/portal/{escape(portal_id)}">'
        f'<input type=hidden name=action value="{action}">'
        f'<input type=hidden name=subscription value="{escape(sub.id)}">{extra}'
        f"<button type=submit{css}>{escape(label)}</button></form>"
    )


def _subscription_section(portal: PortalSession, sub: Subscription) -> str:
    prices = [state.prices[i.price] for i in sub.items]
    names = ", ".join(dict.fromkeys(escape(plan_name(p)) for p in prices if not p.metered)) or "Usage"
    details = "".join(f"<li>{escape(plan_name(p))}: {escape(price_text(p))}</li>" for p in prices)
    if sub.status == "canceled":
        when = f"Canceled {day(sub.ended_at or sub.canceled_at or sub.created)}"
    elif sub.cancel_at is not None:
        when = f"Cancels {day(sub.cancel_at)}"
    else:
        when = f"Renews {day(sub.period_end)}"
    parts = [f"<h2>{names}<span class=badge>{escape(sub.status)}</span></h2><ul>{details}</ul>"]
    parts.append(f"<p class=muted>{when}</p>")
    if sub.status not in ("canceled", "incomplete_expired"):
        for target in _switch_targets(sub):
            extra = f'<input type=hidden name=price value="{escape(target.id)}">'
            label = f"Switch to {plan_name(target)} ({price_text(target)})"
            parts.append(_button(portal.id, sub, "switch", label, "secondary", extra))
        if sub.cancel_at is None:
            parts.append(
                _button(portal.id, sub, "cancel_at_period_end", "Cancel at end of period", "secondary")
            )
        else:
            parts.append(_button(portal.id, sub, "renew", "Don't cancel", "secondary"))
        parts.append(_button(portal.id, sub, "cancel_now", "Cancel now", "danger"))
    return f"<section>{''.join(parts)}</section>"


def portal_page(portal: PortalSession, error: str | None = None, status: int = 200) -> Response[str]:
    customer = state.customers[portal.customer]
    subs = [s for s in reversed(state.subscriptions.values()) if s.customer == customer.id]
    live = [s for s in subs if s.status != "canceled"] or subs[:1]
    pm = state.payment_methods.get(customer.default_payment_method or "")
    card = f"{pm.brand.title()} •••• {pm.last4}" if pm is not None else "No card on file"
    invoices = [i for i in reversed(state.invoices.values()) if i.customer == customer.id][:12]
    rows = "".join(
        f"<tr><td>{day(i.created)} · {escape(i.number or i.id)}</td>"
        f"<td class=amount>{render.money(i.total, i.currency)} · {escape(i.status)}</td></tr>"
        for i in invoices
    )
    back = f'<p><a href="{escape(portal.return_url)}">← Return</a></p>' if portal.return_url else ""
    problem = f"<p class=error role=alert>{escape(error)}</p>" if error else ""
    card_form = (
        f'<form method=post action="/stripe/portal/{escape(portal.id)}">'
        "<input type=hidden name=action value=update_card>"
        "<label for=card_number>New card number</label>"
        "<input id=card_number name=card_number inputmode=numeric autocomplete=cc-number "
        'placeholder="4242 4242 4242 4242" required>'
        "<button type=submit class=secondary>Update card</button></form>"
    )
    body = (
        f"{back}<h1>Billing</h1><p class=muted>{escape(customer.email or customer.id)}</p>{problem}"
        + ("".join(_subscription_section(portal, s) for s in live) or "<p>No subscriptions.</p>")
        + f"<h2>Payment method</h2><p>{escape(card)}</p>{card_form}"
        + (f"<h2>Invoice history</h2><table>{rows}</table>" if rows else "")
    )
    return page("Billing", body, status)


@get("/portal/{portal_id:str}", include_in_schema=False)
async def portal_get(portal_id: str) -> Response[str]:
    billing.tick(state)
    portal = state.portal_sessions.get(portal_id)
    if portal is None or state.customer(portal.customer) is None:
        return page("Billing", "<h1>Not found</h1><p>No such portal session.</p>", 404)
    return portal_page(portal)


@post("/portal/{portal_id:str}", include_in_schema=False, status_code=200)
async def portal_post(request: Request[Any, Any, Any], portal_id: str) -> Response[str]:
    billing.tick(state)
    portal = state.portal_sessions.get(portal_id)
    customer = state.customer(portal.customer) if portal is not None else None
    if portal is None or customer is None:
        return page("Billing", "<h1>Not found</h1><p>No such portal session.</p>", 404)
    fields = await form(request)
    try:
        _portal_action(customer, fields)
    except StripeError as error:
        return portal_page(portal, error.message, error.status)
    return redirect(portal.return_url or f"/stripe/portal/{portal.id}")


def _portal_action(customer: Customer, fields: dict[str, str]) -> None:
    action = fields.get("action", "")
    now = state.now(customer)
    if action == "update_card":
        billing.update_card(state, customer, fields.get("card_number", ""), now)
        return
    sub = state.subscriptions.get(fields.get("subscription", ""))
    if sub is None or sub.customer != customer.id:
        raise StripeError(400, "No such subscription.")
    if sub.status in ("canceled", "incomplete_expired"):
        raise StripeError(400, "This subscription is already canceled.")
    if action == "switch":
        target = next((p for p in _switch_targets(sub) if p.id == fields.get("price")), None)
        if target is None:
            raise StripeError(400, "That plan is not available.")
        item = next((i for i in sub.items if not state.prices[i.price].metered), sub.items[0])
        billing.change_price(state, sub, item, target, now)
    elif action == "cancel_at_period_end":
        if sub.cancel_at is None:
            billing.set_cancel_at_period_end(state, sub, True, now)
    elif action == "renew":
        if sub.cancel_at is not None:
            billing.set_cancel_at_period_end(state, sub, False, now)
    elif action == "cancel_now":
        billing.cancel(state, sub, now)
    else:
        raise StripeError(400, f"Unknown action: {action}")


HANDLERS: Final = [checkout_get, checkout_post, portal_get, portal_post]
