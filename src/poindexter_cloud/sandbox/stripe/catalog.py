"""Customers, payment methods, products and prices."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Final

from . import billing, render
from .api import (
    SANDBOX_ONLY,
    Call,
    api,
    check_email,
    created_filter,
    get_clock,
    get_customer,
    get_meter,
    get_price,
    get_product,
    newest,
    state,
)
from .errors import StripeError, invalid, missing, no_such
from .forms import Params, apply_metadata
from .store import (
    Price,
    Product,
    new_id,
    real_now,
)

_CURRENCY_RE: Final = re.compile(r"^[a-z]{3}$")
TEST_CLOCK_CUSTOMERS: Final = 3

# ---------------------------------------------------------------------------------------------- customers

CUSTOMER_IGNORED: Final = (
    "address",
    "balance",
    "business_name",
    "cash_balance",
    "individual_name",
    "preferred_locales",
    "shipping",
    "source",
    "tax",
    "tax_exempt",
    "tax_id_data",
    "validate",
    "next_invoice_sequence",
    "default_source",
)


@api("POST", "/v1/customers")
def create_customer(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(CUSTOMER_IGNORED)
    email = p.string("email", max_length=512)
    check_email(email)
    name = p.string("name", max_length=256)
    description = p.string("description")
    phone = p.string("phone", max_length=20)
    metadata = apply_metadata({}, p.metadata())
    prefix = p.string("invoice_prefix", max_length=12)
    clock_id = p.string("test_clock")
    pm_id = p.string("payment_method")
    settings = p.obj("invoice_settings", ignored=("custom_fields", "footer", "rendering_options"))
    default_pm = settings.string("default_payment_method") if settings is not None else None
    if settings is not None:
        settings.finish()
    clock = get_clock(clock_id, "test_clock", 400) if clock_id else None
    if clock is not None:
        attached = sum(1 for c in state.customers.values() if c.test_clock == clock.id and not c.deleted)
        if attached >= TEST_CLOCK_CUSTOMERS:
            raise invalid(
                "test_clock",
                f"You can only attach up to {TEST_CLOCK_CUSTOMERS} customers to a test clock.",
                "test_clock_customers_limit",
            )
    for key, value in (("payment_method", pm_id), ("invoice_settings[default_payment_method]", default_pm)):
        if value and value not in state.payment_methods:
            raise no_such("PaymentMethod", value, key, 400)
    paths = p.expand()
    p.finish()
    at = clock.frozen_time if clock is not None else real_now()
    customer = billing.create_customer(
        state,
        at,
        email=email or None,
        name=name or None,
        description=description or None,
        phone=phone or None,
        metadata=metadata,
        test_clock=clock.id if clock is not None else None,
        invoice_prefix=prefix or None,
    )
    for value in (pm_id, default_pm):
        if value:
            state.payment_methods[value].customer = customer.id
    if default_pm:
        customer.default_payment_method = default_pm
    return render.expand(state, render.customer(customer), paths, version=call.version)


@api("GET", "/v1/customers/{id}")
def retrieve_customer(call: Call, m: re.Match[str]) -> dict[str, Any]:
    found = state.customers.get(m.group(1))
    if found is None:
        raise no_such("customer", m.group(1))
    return call.out(render.customer(found))


@api("POST", "/v1/customers/{id}")
def update_customer(call: Call, m: re.Match[str]) -> dict[str, Any]:
    customer = get_customer(m.group(1))
    p = call.params
    p.seen.update(CUSTOMER_IGNORED)
    before = render.customer(customer)
    changes: dict[str, Any] = {}
    for key, limit in (("email", 512), ("name", 256), ("description", 5000), ("phone", 20)):
        given, value = p.nullable_str(key, limit)
        if given:
            if key == "email":
                check_email(value)
            changes[key] = value
    prefix = p.string("invoice_prefix", max_length=12)
    metadata = p.metadata()
    settings = p.obj("invoice_settings", ignored=("custom_fields", "footer", "rendering_options"))
    default_pm: tuple[bool, str | None] = (False, None)
    if settings is not None:
        default_pm = settings.nullable_str("default_payment_method")
        settings.finish()
        if default_pm[1] and default_pm[1] not in state.payment_methods:
            raise no_such("PaymentMethod", default_pm[1], "invoice_settings[default_payment_method]", 400)
    paths = p.expand()
    p.finish()
    for key, value in changes.items():
        setattr(customer, key, value)
    if prefix:
        customer.invoice_prefix = prefix
    customer.metadata = apply_metadata(customer.metadata, metadata)
    if default_pm[0]:
        customer.default_payment_method = default_pm[1]
        if default_pm[1]:
            state.payment_methods[default_pm[1]].customer = customer.id
    after = render.customer(customer)
    previous = {k: v for k, v in before.items() if after.get(k) != v}
    if previous:
        state.emit("customer.updated", after, previous=previous)
    return render.expand(state, after, paths, version=call.version)


@api("DELETE", "/v1/customers/{id}")
def delete_customer(call: Call, m: re.Match[str]) -> dict[str, Any]:
    customer = get_customer(m.group(1))
    call.params.finish()
    now = state.now(customer)
    for sub in state.subscriptions.values():
        if sub.customer == customer.id and sub.status not in ("canceled", "incomplete_expired"):
            billing.cancel(state, sub, now)
    snapshot = render.customer(customer)
    customer.deleted = True
    state.emit("customer.deleted", snapshot, at=now)
    return render.deleted(customer.id, "customer")


@api("GET", "/v1/customers")
def list_customers(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    email = p.string("email")
    clock = p.string("test_clock")
    created = created_filter(p)
    records = [
        c
        for c in newest(state.customers.values())
        if not c.deleted
        and (email is None or c.email == email)
        and (clock is None or c.test_clock == clock)
        and created(c.created)
    ]
    page = render.paginate(p, records, lambda c: c.id, render.customer, "/v1/customers", "customer")
    return call.out(page)


@api("GET", "/v1/customers/{id}/payment_methods")
def list_customer_payment_methods(call: Call, m: re.Match[str]) -> dict[str, Any]:
    customer = get_customer(m.group(1))
    p = call.params
    p.seen.update(("type", "allow_redisplay"))
    records = [pm for pm in newest(state.payment_methods.values()) if pm.customer == customer.id]
    url = f"/v1/customers/{customer.id}/payment_methods"
    return call.out(render.paginate(p, records, lambda x: x.id, render.payment_method, url, "payment_method"))


@api("GET", "/v1/payment_methods/{id}")
def retrieve_payment_method(call: Call, m: re.Match[str]) -> dict[str, Any]:
    pm = state.payment_methods.get(m.group(1))
    if pm is None:
        raise no_such("PaymentMethod", m.group(1))
    return call.out(render.payment_method(pm))


# ---------------------------------------------------------------------------------------------- products


def _product_fields(p: Params, product: Product | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, limit in (
        ("description", 40000),
        ("statement_descriptor", 22),
        ("tax_code", 5000),
        ("unit_label", 12),
        ("url", 5000),
    ):
        given, value = p.nullable_str(key, limit)
        if given:
            fields[key] = value
    active = p.boolean("active")
    if active is not None:
        fields["active"] = active
    images = p.strings("images")
    if images is not None:
        fields["images"] = images
    return fields


@api("POST", "/v1/products")
def create_product(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("marketing_features", "package_dimensions", "shippable", "tax_details", "type"))
    product_id = p.string("id", max_length=5000)
    name = p.req("name")
    fields = _product_fields(p, None)
    metadata = apply_metadata({}, p.metadata())
    price_data = p.obj(
        "default_price_data", ignored=("currency_options", "tax_behavior", "custom_unit_amount")
    )
    default_price: tuple[str, Decimal, dict[str, Any] | None] | None = None
    if price_data is not None:
        default_price = (
            _currency(price_data),
            _price_amount(price_data),
            _recurring(price_data, allow_metered=False),
        )
        price_data.finish()
    paths = p.expand()
    p.finish()
    if product_id and product_id in state.products:
        raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
    now = real_now()
    product = Product(product_id or new_id("prod_", 14), now, now, name, metadata=metadata)
    for key, value in fields.items():
        setattr(product, key, value)
    state.products[product.id] = product
    state.emit("product.created", render.product(product))
    if default_price is not None:
        currency, amount, recurring = default_price
        price = Price(new_id("price_"), now, product.id, currency, amount)
        if recurring is not None:
            price.interval, price.interval_count = recurring["interval"], recurring["interval_count"]
        state.prices[price.id] = price
        state.emit("price.created", render.price(price))
        product.default_price = price.id
    return render.expand(state, render.product(product), paths, version=call.version)


@api("GET", "/v1/products/{id}")
def retrieve_product(call: Call, m: re.Match[str]) -> dict[str, Any]:
    found = state.products.get(m.group(1))
    if found is None:
        raise no_such("product", m.group(1))
    return call.out(render.product(found))


@api("POST", "/v1/products/{id}")
def update_product(call: Call, m: re.Match[str]) -> dict[str, Any]:
    product = get_product(m.group(1))
    p = call.params
    p.seen.update(("marketing_features", "package_dimensions", "shippable", "tax_details"))
    name = p.string("name")
    fields = _product_fields(p, product)
    metadata = p.metadata()
    given, default_price = p.nullable_str("default_price")
    if default_price:
        price = get_price(default_price, "default_price", 400)
        if price.product != product.id:
            raise invalid("default_price", "The default price must belong to this product.")
    paths = p.expand()
    p.finish()
    before = render.product(product)
    if name:
        product.name = name
    for key, value in fields.items():
        setattr(product, key, value)
    if given:
        product.default_price = default_price
    product.metadata = apply_metadata(product.metadata, metadata)
    product.updated = real_now()
    after = render.product(product)
    previous = {k: v for k, v in before.items() if after.get(k) != v and k != "updated"}
    state.emit("product.updated", after, previous=previous or None)
    return render.expand(state, after, paths, version=call.version)


@api("DELETE", "/v1/products/{id}")
def delete_product(call: Call, m: re.Match[str]) -> dict[str, Any]:
    product = get_product(m.group(1))
    call.params.finish()
    if any(price.product == product.id for price in state.prices.values()):
        raise StripeError(
            400, "This product cannot be deleted because it has one or more user-created prices."
        )
    snapshot = render.product(product)
    product.deleted = True
    state.emit("product.deleted", snapshot)
    return render.deleted(product.id, "product")


@api("GET", "/v1/products")
def list_products(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("shippable",))
    active = p.boolean("active")
    ids = p.strings("ids")
    url = p.string("url")
    created = created_filter(p)
    records = [
        x
        for x in newest(state.products.values())
        if not x.deleted
        and (active is None or x.active == active)
        and (ids is None or x.id in ids)
        and (url is None or x.url == url)
        and created(x.created)
    ]
    return call.out(render.paginate(p, records, lambda x: x.id, render.product, "/v1/products", "product"))


# ---------------------------------------------------------------------------------------------- prices


def _currency(p: Params) -> str:
    currency = p.req("currency").lower()
    if not _CURRENCY_RE.match(currency):
        raise invalid(p.name("currency"), f"Invalid currency: {currency}.")
    return currency


def _price_amount(p: Params, where: str = "") -> Decimal:
    for unsupported in ("tiers", "tiers_mode", "transform_quantity", "custom_unit_amount"):
        if p.raw(unsupported) is not None:
            raise invalid(
                p.name(unsupported), f"{SANDBOX_ONLY} `{p.name(unsupported)}` (per-unit prices only)."
            )
    scheme = p.enum("billing_scheme", ("per_unit", "tiered"))
    if scheme == "tiered":
        raise invalid(p.name("billing_scheme"), f"{SANDBOX_ONLY} tiered prices.")
    amount = p.integer("unit_amount", minimum=0)
    decimal = p.decimal("unit_amount_decimal")
    if amount is not None and decimal is not None:
        raise StripeError(
            400,
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            param=p.name("unit_amount_decimal"),
        )
    if amount is None and decimal is None:
        raise missing(p.name("unit_amount"))
    if decimal is not None:
        exponent = decimal.as_tuple().exponent
        if decimal < 0 or (isinstance(exponent, int) and exponent < -12):
            raise invalid(
                p.name("unit_amount_decimal"),
                "Invalid decimal: unit_amount_decimal must be non-negative with at most 12 decimal places.",
                "parameter_invalid_decimal",
            )
        return decimal
    assert amount is not None
    return Decimal(amount)


def _recurring(p: Params, *, allow_metered: bool = True) -> dict[str, Any] | None:
    recurring = p.obj("recurring", ignored=("trial_period_days", "aggregate_usage"))
    if recurring is None:
        return None
    interval = recurring.enum("interval", ("day", "week", "month", "year"), required=True)
    count = recurring.integer("interval_count", minimum=1) or 1
    usage_type = recurring.enum("usage_type", ("licensed", "metered")) or "licensed"
    meter_id = recurring.string("meter") if allow_metered else None
    recurring.finish()
    limits = {"day": 1095, "week": 156, "month": 36, "year": 3}
    assert interval is not None
    if count > limits[interval]:
        raise invalid(recurring.name("interval_count"), "The maximum billing interval is three years.")
    if usage_type == "metered":
        if not meter_id:
            raise StripeError(
                400,
                "A meter is required for metered prices: set `recurring[meter]` to a billing meter's id.",
                param=recurring.name("meter"),
            )
        get_meter(meter_id, recurring.name("meter"), 400)
    elif meter_id:
        raise invalid(recurring.name("meter"), "A meter can only be set on prices with `usage_type=metered`.")
    return {"interval": interval, "interval_count": count, "usage_type": usage_type, "meter": meter_id}


def _claim_lookup_key(lookup_key: str, transfer: bool, price_id: str | None, param: str) -> Price | None:
    holder = state.price_by_lookup_key(lookup_key)
    if holder is None or holder.id == price_id:
        return None
    if not transfer:
        raise invalid(
            param,
            f"A price (`{holder.id}`) already uses that lookup key. Set `transfer_lookup_key` to move it.",
            "lookup_key_already_used",
        )
    return holder


@api("POST", "/v1/prices")
def create_price(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    p.seen.update(("currency_options",))
    currency = _currency(p)
    amount = _price_amount(p)
    recurring = _recurring(p)
    product_id = p.string("product")
    product_data = p.obj(
        "product_data", ignored=("statement_descriptor", "tax_code", "unit_label", "tax_details")
    )
    data_name = data_active = data_metadata = data_id = None
    if product_data is not None:
        data_name = product_data.req("name")
        data_active = product_data.boolean("active")
        data_metadata = apply_metadata({}, product_data.metadata())
        data_id = product_data.string("id")
        product_data.finish()
    if product_id and product_data is not None:
        raise StripeError(400, "You may only specify one of these parameters: product, product_data.")
    if not product_id and product_data is None:
        raise missing("product")
    if product_id:
        get_product(product_id, "product", 400)
    lookup_key = p.string("lookup_key", max_length=200)
    transfer = bool(p.boolean("transfer_lookup_key"))
    nickname = p.string("nickname")
    active = p.boolean("active")
    tax_behavior = p.enum("tax_behavior", ("exclusive", "inclusive", "unspecified"))
    metadata = apply_metadata({}, p.metadata())
    paths = p.expand()
    p.finish()
    previous_holder = _claim_lookup_key(lookup_key, transfer, None, "lookup_key") if lookup_key else None
    now = real_now()
    if product_data is not None:
        assert data_name is not None
        product = Product(data_id or new_id("prod_", 14), now, now, data_name, metadata=data_metadata or {})
        if data_active is not None:
            product.active = data_active
        state.products[product.id] = product
        state.emit("product.created", render.product(product))
        product_id = product.id
    assert product_id is not None
    price = Price(new_id("price_"), now, product_id, currency, amount, lookup_key=lookup_key or None)
    price.nickname = nickname or None
    price.metadata = metadata
    price.tax_behavior = tax_behavior or "unspecified"
    if active is not None:
        price.active = active
    if recurring is not None:
        price.interval = recurring["interval"]
        price.interval_count = recurring["interval_count"]
        price.usage_type = recurring["usage_type"]
        price.meter = recurring["meter"]
    if previous_holder is not None:
        previous_holder.lookup_key = None
        state.emit("price.updated", render.price(previous_holder), previous={"lookup_key": lookup_key})
    state.prices[price.id] = price
    state.emit("price.created", render.price(price))
    return render.expand(state, render.price(price), paths, version=call.version)


@api("GET", "/v1/prices/{id}")
def retrieve_price(call: Call, m: re.Match[str]) -> dict[str, Any]:
    return call.out(render.price(get_price(m.group(1))))


@api("POST", "/v1/prices/{id}")
def update_price(call: Call, m: re.Match[str]) -> dict[str, Any]:
    price = get_price(m.group(1))
    p = call.params
    p.seen.update(("currency_options", "migrate_to"))
    active = p.boolean("active")
    lookup_given, lookup_key = p.nullable_str("lookup_key", 200)
    transfer = bool(p.boolean("transfer_lookup_key"))
    nick_given, nickname = p.nullable_str("nickname")
    tax_behavior = p.enum("tax_behavior", ("exclusive", "inclusive", "unspecified"))
    metadata = p.metadata()
    paths = p.expand()
    p.finish()
    claimed = lookup_key if lookup_given else (price.lookup_key if active and not price.active else None)
    holder = _claim_lookup_key(claimed, transfer, price.id, "lookup_key") if claimed else None
    before = render.price(price)
    if holder is not None:
        holder.lookup_key = None
        state.emit("price.updated", render.price(holder), previous={"lookup_key": claimed})
    if active is not None:
        price.active = active
    if lookup_given:
        price.lookup_key = lookup_key
    if nick_given:
        price.nickname = nickname
    if tax_behavior:
        price.tax_behavior = tax_behavior
    price.metadata = apply_metadata(price.metadata, metadata)
    after = render.price(price)
    previous = {k: v for k, v in before.items() if after.get(k) != v}
    state.emit("price.updated", after, previous=previous or None)
    return render.expand(state, after, paths, version=call.version)


@api("GET", "/v1/prices")
def list_prices(call: Call, _: re.Match[str]) -> dict[str, Any]:
    p = call.params
    active = p.boolean("active")
    currency = p.string("currency")
    product = p.string("product")
    kind = p.enum("type", ("one_time", "recurring"))
    lookup_keys = p.strings("lookup_keys")
    if lookup_keys is not None and len(lookup_keys) > 10:
        raise invalid("lookup_keys", "You can pass at most 10 lookup keys.")
    recurring = p.obj("recurring")
    interval = usage_type = meter = None
    if recurring is not None:
        interval = recurring.enum("interval", ("day", "week", "month", "year"))
        usage_type = recurring.enum("usage_type", ("licensed", "metered"))
        meter = recurring.string("meter")
        recurring.finish()
    created = created_filter(p)
    records = [
        x
        for x in newest(state.prices.values())
        if (active is None or x.active == active)
        and (currency is None or x.currency == currency.lower())
        and (product is None or x.product == product)
        and (kind is None or (kind == "recurring") == (x.interval is not None))
        and (lookup_keys is None or (x.lookup_key is not None and x.lookup_key in lookup_keys))
        and (interval is None or x.interval == interval)
        and (usage_type is None or (x.interval is not None and x.usage_type == usage_type))
        and (meter is None or x.meter == meter)
        and created(x.created)
    ]
    return call.out(render.paginate(p, records, lambda x: x.id, render.price, "/v1/prices", "price"))
