"""Billing's operator commands.

- ``poindexter-cloud admin billing comp USER --plan basic|pro``: complimentary subscriptions.
- ``poindexter-cloud admin stripe sync``: create or update, idempotently, the Stripe catalog the plans need
  (products, prices, billing meters; see ``billing.catalog``).
"""

from __future__ import annotations

import argparse

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.billing import catalog, service
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


async def grant_comp(args: argparse.Namespace, resources: Resources) -> int:
    async with resources.unit_of_work() as uow:
        user = await Accounts(resources.settings).find_user(uow.session, args.user)
        await service.grant_complimentary(uow.session, user.id, args.plan)
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
