"""`poindexter-cloud admin billing comp USER --plan basic|pro`: complimentary subscriptions."""

from __future__ import annotations

import argparse

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.billing import service
from poindexter_cloud.billing.plans import PLANS
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


async def grant_comp(args: argparse.Namespace, resources: Resources) -> int:
    async with resources.unit_of_work() as uow:
        user = await Accounts(resources.settings).find_user(uow.session, args.user)
        await service.grant_complimentary(uow.session, user.id, args.plan)
        audit.record(uow.session, "admin.complimentary_plan", subject=user.id, plan=args.plan)
        await uow.commit()
    await ApiKeyVerifier(resources.db, resources.redis, resources.settings).announce_user_changed(user.id)
    print(f"{user.email} has a complimentary {args.plan} subscription")
    return 0
