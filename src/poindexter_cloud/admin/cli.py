"""`poindexter-cloud admin users list|show|create-admin|suspend|unsuspend`."""

from __future__ import annotations

import argparse
import getpass
import os

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier
from poindexter_cloud.accounts.errors import UserNotFound
from poindexter_cloud.accounts.service import Accounts, Client
from poindexter_cloud.cli.admin import print_table
from poindexter_cloud.cli.common import Subcommands
from poindexter_cloud.core.resources import Resources

OPERATOR = Client(ip=None, user_agent="poindexter-cloud admin")


def register(groups: Subcommands) -> None:
    users = groups.add_parser("users", help="list, inspect, suspend users; create operators")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="users, newest first")
    listing.add_argument("--search", help="part of an email or name")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(admin_action=list_users)
    show = actions.add_parser("show", help="one user, by id or email")
    show.add_argument("user")
    show.set_defaults(admin_action=show_user)
    create = actions.add_parser("create-admin", help="grant admin, creating the account if needed")
    create.add_argument("email")
    create.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the new account's password from this environment variable (else prompt)",
    )
    create.set_defaults(admin_action=create_admin)
    suspend = actions.add_parser("suspend", help="stop a user's sessions and API keys at once")
    suspend.add_argument("user")
    suspend.add_argument("--reason", required=True)
    suspend.set_defaults(admin_action=suspend_user)
    unsuspend = actions.add_parser("unsuspend", help="let a suspended user back in")
    unsuspend.add_argument("user")
    unsuspend.set_defaults(admin_action=unsuspend_user)


async def list_users(args: argparse.Namespace, resources: Resources) -> int:
    async with resources.db.sessions() as session:
        users, total = await Accounts(resources.settings).list_users(session, args.search, args.limit, 0)
    rows = [
        {
            "id": u.id,
            "email": u.email,
            "status": u.status,
            "admin": "yes" if u.is_admin else "",
            "created": f"{u.created_at:%Y-%m-%d %H:%M}",
        }
        for u in users
    ]
    print_table(rows, ["id", "email", "status", "admin", "created"])
    print(f"{len(users)} of {total} user(s)")
    return 0


async def show_user(args: argparse.Namespace, resources: Resources) -> int:
    async with resources.db.sessions() as session:
        user = await Accounts(resources.settings).find_user(session, args.user)
    for label, value in [
        ("id", user.id),
        ("email", user.email),
        ("name", user.name or ""),
        ("status", user.status),
        ("suspended reason", user.suspended_reason or ""),
        ("admin", user.is_admin),
        ("email verified", user.email_verified_at is not None),
        ("created", user.created_at),
    ]:
        print(f"{label:<17} {value}")
    return 0


async def create_admin(args: argparse.Namespace, resources: Resources) -> int:
    password = os.environ.get(args.password_env) if args.password_env else None
    async with resources.unit_of_work() as uow:
        accounts = Accounts(resources.settings)
        if password is None:
            try:
                await accounts.find_user(uow.session, args.email)
            except UserNotFound:
                password = getpass.getpass("Password for the new operator account: ")
        user = await accounts.make_admin(uow, args.email, password, OPERATOR)
        await uow.commit()
    print(f"{user.email} ({user.id}) is an operator")
    return 0


async def _set_suspended(args: argparse.Namespace, resources: Resources, suspended: bool) -> int:
    accounts = Accounts(resources.settings)
    async with resources.unit_of_work() as uow:
        user = await accounts.find_user(uow.session, args.user)
        await accounts.set_suspended(
            uow.session, user, suspended, getattr(args, "reason", None), None, OPERATOR
        )
        await uow.commit()
    await ApiKeyVerifier(resources.db, resources.redis, resources.settings).announce_user_changed(user.id)
    print(f"{user.email} is {user.status}")
    return 0


async def suspend_user(args: argparse.Namespace, resources: Resources) -> int:
    return await _set_suspended(args, resources, True)


async def unsuspend_user(args: argparse.Namespace, resources: Resources) -> int:
    return await _set_suspended(args, resources, False)
