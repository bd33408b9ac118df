"""Accounts' background jobs: the emails with links, and erasure of deleted accounts."""

from __future__ import annotations

import uuid
from typing import Any

from poindexter_cloud.accounts.service import RESET_PASSWORD, VERIFY_EMAIL, Accounts
from poindexter_cloud.core import mailer
from poindexter_cloud.core.queue import job
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.identity import service as identities
from poindexter_cloud.provisioning import service as provisioning

MESSAGES = {
    VERIFY_EMAIL: (
        "Confirm your email for Poindexter Cloud",
        "Welcome to Poindexter Cloud.\n\nConfirm this address by opening:\n\n{url}\n\n"
        "The link works once and expires in two days. If you did not sign up, ignore this email.\n",
    ),
    RESET_PASSWORD: (
        "Reset your Poindexter Cloud password",
        "Someone asked to reset the password of your Poindexter Cloud account.\n\n"
        "Choose a new password by opening:\n\n{url}\n\n"
        "The link works once and expires in an hour. If it was not you, ignore this email.\n",
    ),
}


@job(timeout_seconds=60)
async def send_account_email(ctx: dict[str, Any], email_token_id: str) -> bool:
    """Email a verification or reset link. The link's secret is derived from the token id, so the job
    payload (stored in job_history) never holds it."""
    resources: Resources = ctx["resources"]
    accounts = Accounts(resources.settings)
    async with resources.db.sessions() as session:
        found = await accounts.email_for_link(session, uuid.UUID(email_token_id))
    if found is None:
        return False  # used or expired meanwhile: nothing worth sending
    address, purpose, url = found
    subject, body = MESSAGES[purpose]
    await mailer.send(resources.settings, address, subject, body.format(url=url))
    return True


@job(timeout_seconds=120)
async def erase_account(ctx: dict[str, Any], user_id: str) -> bool:
    """Erase a deleted account's personal data, keeping only what billing law requires, once its identity is
    gone: until then this asks for the identity's deprovisioning (mailbox deleted at once), whose end runs
    this job again."""
    resources: Resources = ctx["resources"]
    uid = uuid.UUID(user_id)
    async with resources.unit_of_work() as uow:
        if not await provisioning.identity_removed(uow.session, uid):
            await provisioning.request_deprovisioning(uow, uid, provisioning.ACCOUNT_DELETED, purge=True)
            await uow.commit()
            return False
        erased = await Accounts(resources.settings).erase_personal_data(uow.session, uid)
        await identities.erase_personal_data(uow.session, uid)
        await uow.commit()
    return erased
