"""Billing's operator commands.

- ``poindexter-cloud admin billing comp USER --plan basic|pro``: complimentary subscriptions.
- ``poindexter-cloud admin stripe sync``: create or update, idempotently, the Stripe catalog the plans need
  (products, prices, billing meters; see ``billing.catalog``).
- ``poindexter-cloud admin usage report|reconcile|resolve|sync``: usage by month, plan and model; our meter
  events beside Stripe's totals; an operator's decision on a stale meter event; a sync run now.
"""

from __future__ import annotations

import argparse
import csv
import sys
import uuid
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.billing import catalog, reports, service, usage_sync
from poindexter_cloud.billing.plans import PLANS
from poindexter_cloud.billing.stripe_adapter import StripeAdapter
from poindexter_cloud.cli.admin import print_table
from poindexter_cloud.cli.common import Subcommands
from poindexter_cloud.core import audit
from poindexter_cloud.core.resources import Resources


def register(groups: Subcommands) -> None:
    billing = groups.add_parser("billing", help="subscriptions outside Stripe")
    actions = billing.add_subparsers(dest="action", required=True, metavar="ACTION")
    comp = actions.add_parser("comp", help="grant a complimentary (non-Stripe) subscription")
    comp.add_argument("user", help="user id or email")
    comp.add_argument("--plan", choices=sorted(PLANS), default="basic")
    comp.set_defaults(admin_action=grant_comp)

    stripe = groups.add_parser("stripe", help="the Stripe catalog: products, prices, meters")
    stripe_actions = stripe.add_subparsers(dest="action", required=True, metavar="ACTION")
    sync = stripe_actions.add_parser(
        "sync", help="create or update the plans' products, prices and billing meters in Stripe (idempotent)"
    )
    sync.set_defaults(admin_action=stripe_sync)

    usage = groups.add_parser("usage", help="usage reports and the overage sync to Stripe")
    usage_actions = usage.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = usage_actions.add_parser("report", help="AI usage by plan and model, messages, overage sent")
    report.add_argument("--month", type=month_argument, help="YYYY-MM (UTC); default: every month")
    report.add_argument("--csv", action="store_true", help="CSV on standard output instead of tables")
    report.set_defaults(admin_action=usage_report)
    reconcile = usage_actions.add_parser(
        "reconcile", help="compare the meter events we recorded with the totals Stripe received"
    )
    reconcile.add_argument("--month", type=month_argument, required=True, help="YYYY-MM (UTC)")
    reconcile.set_defaults(admin_action=usage_reconcile)
    resolve = usage_actions.add_parser(
        "resolve", help="settle a meter event left pending past Stripe's dedupe window, after reconciling"
    )
    resolve.add_argument("identifier", help="the meter event's identifier (as reconcile shows it)")
    decision = resolve.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--mark-sent", dest="decision", action="store_const", const="mark-sent", help="Stripe has it"
    )
    decision.add_argument(
        "--resend", dest="decision", action="store_const", const="resend", help="Stripe does not have it"
    )
    resolve.set_defaults(admin_action=usage_resolve)
    run_sync = usage_actions.add_parser("sync", help="run the sync_usage job now, for everyone or one user")
    run_sync.add_argument("--user", help="user id or email")
    run_sync.set_defaults(admin_action=usage_sync_now)


def month_argument(text: str) -> date:
    try:
        return usage_sync.parse_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def grant_comp(args: argparse.Namespace, resources: Resources) -> int:
    async with resources.unit_of_work() as uow:
        user = await Accounts(resources.settings).find_user(uow.session, args.user)
        await service.grant_complimentary(uow, user.id, args.plan)
        audit.record(uow.session, "admin.complimentary_plan", subject=user.id, plan=args.plan)
        await uow.commit()
    await ApiKeyVerifier(resources.db, resources.redis, resources.settings).announce_user_changed(user.id)
    print(f"{user.email} has a complimentary {args.plan} subscription")
    return 0


async def stripe_sync(args: argparse.Namespace, resources: Resources) -> int:
    async with StripeAdapter.from_settings(resources.settings) as stripe:
        print(f"Stripe at {stripe.api_base}")
        rows = await catalog.sync_catalog(stripe)
    print_table(
        [
            {"kind": r.kind, "key": r.key, "stripe_id": r.stripe_id, "action": r.action, "note": r.note}
            for r in rows
        ],
        ["kind", "key", "stripe_id", "action", "note"],
    )
    counts = {
        action: sum(1 for r in rows if r.action == action) for action in dict.fromkeys(r.action for r in rows)
    }
    if set(counts) == {"unchanged"}:
        print("unchanged: the Stripe catalog already matches the plans")
    else:
        print(", ".join(f"{count} {action}" for action, count in counts.items()))
    return 0


# --- usage ------------------------------------------------------------------------------------------------


async def usage_report(args: argparse.Namespace, resources: Resources) -> int:
    async with resources.db.sessions() as session:
        found = await reports.admin_usage(session, args.month)
    sections: list[tuple[str, list[dict[str, Any]]]] = [
        ("models", [msgspec.structs.asdict(row) for row in found.models]),
        ("messages", [msgspec.structs.asdict(row) for row in found.messages]),
        ("overage", [msgspec.structs.asdict(row) for row in found.overage]),
    ]
    if args.csv:
        writer = csv.writer(sys.stdout)
        for name, rows in sections:
            if rows:
                writer.writerow(["section", *rows[0]])
                writer.writerows([name, *row.values()] for row in rows)
        return 0
    for name, rows in sections:
        print(f"{name}:")
        if rows:
            print_table(rows, list(rows[0]))
        else:
            print("  (none)")
    return 0


async def usage_reconcile(args: argparse.Namespace, resources: Resources) -> int:
    """Exit 0 when every customer's meters agree with Stripe, 1 when any differs (or has stale events)."""
    accounts = Accounts(resources.settings)
    async with StripeAdapter.from_settings(resources.settings) as stripe, resources.db.sessions() as session:
        rows = await usage_sync.reconcile(session, accounts, stripe, args.month)
        stale = await usage_sync.stale_records(session, args.month)
    print_table(
        [
            {
                "customer": r.customer,
                "meter": r.meter,
                "sent": r.sent,
                "pending": r.pending,
                "stale": r.stale,
                "stripe": r.stripe,
                "difference": r.difference,
                "status": "ok" if r.agrees else "DIFFERS",
            }
            for r in rows
        ],
        ["customer", "meter", "sent", "pending", "stale", "stripe", "difference", "status"],
    )
    for record in stale:
        decided = f"{record.created_at:%Y-%m-%d %H:%M}"
        print(f"stale: {record.identifier} ({record.units} {record.meter} units, decided {decided})")
    differing = [r for r in rows if not r.agrees]
    print(f"{len(rows) - len(differing)} agree, {len(differing)} differ ({args.month:%Y-%m})")
    return 1 if differing else 0


async def usage_resolve(args: argparse.Namespace, resources: Resources) -> int:
    async with StripeAdapter.from_settings(resources.settings) as stripe:
        try:
            record = await usage_sync.resolve(resources.db, stripe, args.identifier, args.decision)
        except (LookupError, ValueError) as exc:
            print(f"poindexter-cloud: {exc}", file=sys.stderr)
            return 1
    async with resources.unit_of_work() as uow:
        audit.record(
            uow.session,
            "admin.meter_event_resolved",
            subject=record.user_id,
            identifier=record.identifier,
            decision=args.decision,
        )
        await uow.commit()
    print(f"{record.identifier}: {record.status} ({args.decision})")
    return 0


async def usage_sync_now(args: argparse.Namespace, resources: Resources) -> int:
    user_id: uuid.UUID | None = None
    if args.user:
        async with resources.db.sessions() as session:
            user_id = (await Accounts(resources.settings).find_user(session, args.user)).id
    try:
        stats = await usage_sync.run(resources, user_id, datetime.now(UTC))
    except usage_sync.UsageSyncFailed as exc:
        print(f"poindexter-cloud: {exc}", file=sys.stderr)
        return 1
    print(", ".join(f"{count} {name}" for name, count in stats.as_dict().items()))
    return 0
