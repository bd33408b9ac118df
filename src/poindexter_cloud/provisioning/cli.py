"""`poindexter-cloud admin identity show|provision|deprovision|signal-captcha USER`.

Each command records its wish and defers the job that acts (the worker does the work), like the API.
"""

from __future__ import annotations

import argparse
import uuid

from poindexter_cloud.accounts.service import Accounts
from poindexter_cloud.cli.common import Subcommands
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service as identities
from poindexter_cloud.identity.service import Identity
from poindexter_cloud.provisioning import service


def register(groups: Subcommands) -> None:
    identity = groups.add_parser("identity", help="subscribers' identities: mailbox, number, Signal")
    actions = identity.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="a user's identity and where its provisioning stands")
    show.add_argument("user", help="user id or email")
    show.set_defaults(admin_action=show_identity)
    provision = actions.add_parser("provision", help="provision (or resume provisioning) a user's identity")
    provision.add_argument("user", help="user id or email")
    provision.set_defaults(admin_action=provision_identity)
    deprovision = actions.add_parser(
        "deprovision", help="unregister Signal, release the number, suspend then delete the mailbox"
    )
    deprovision.add_argument("user", help="user id or email")
    deprovision.set_defaults(admin_action=deprovision_identity)
    captcha = actions.add_parser("signal-captcha", help="complete a Signal registration that wants a captcha")
    captcha.add_argument("user", help="user id or email")
    captcha.add_argument(
        "token", help="from https://signalcaptchas.org/registration/generate.html: the 'Open Signal' link"
    )
    captcha.set_defaults(admin_action=signal_captcha)


async def _user_id(args: argparse.Namespace, resources: Resources) -> uuid.UUID:
    async with resources.db.sessions() as session:
        return (await Accounts(resources.settings).find_user(session, args.user)).id


def _print(identity: Identity) -> None:
    shown = identities.view(identity)
    rows = [
        ("user", shown.user_id),
        ("status", shown.status),
        ("email", shown.email or ""),
        ("phone number", shown.phone_number or ""),
        ("signal", shown.signal),
        *((f"step {step.name}", step.state) for step in shown.steps),
        ("pending", ", ".join(shown.pending) or "-"),
        ("failed step", shown.failure_step or ""),
        ("failure", shown.failure_reason or ""),
        ("last error", shown.last_error or ""),
        ("signal error", shown.signal_error or ""),
        ("provisioned", shown.provisioned_at or ""),
        ("status since", shown.status_changed_at),
    ]
    for label, value in rows:
        print(f"{label:<19} {value}")


async def show_identity(args: argparse.Namespace, resources: Resources) -> int:
    user_id = await _user_id(args, resources)
    async with resources.db.sessions() as session:
        _print(await service.find(session, user_id))
    return 0


async def provision_identity(args: argparse.Namespace, resources: Resources) -> int:
    user_id = await _user_id(args, resources)
    async with resources.unit_of_work() as uow:
        identity = await service.provision_by_operator(uow, user_id, None)
        await uow.commit()
    print(f"identity of {args.user}: {identity.status}; the worker provisions it")
    return 0


async def deprovision_identity(args: argparse.Namespace, resources: Resources) -> int:
    user_id = await _user_id(args, resources)
    async with resources.unit_of_work() as uow:
        identity = await service.request_deprovisioning(uow, user_id, service.BY_OPERATOR)
        await uow.commit()
    if identity is None:
        print(f"{args.user} has no identity")
        return 1
    print(f"identity of {args.user}: {identity.status}; the worker deprovisions it")
    return 0


async def signal_captcha(args: argparse.Namespace, resources: Resources) -> int:
    user_id = await _user_id(args, resources)
    async with resources.unit_of_work() as uow:
        await service.submit_signal_captcha(uow, resources.settings, user_id, args.token)
        await uow.commit()
    print(f"captcha handed to Signal's registration of {args.user}")
    return 0
