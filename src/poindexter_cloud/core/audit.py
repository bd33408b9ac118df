"""The audit log: security events written in the same transaction as the change they describe."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from poindexter_cloud.core.logs import request_id_var
from poindexter_cloud.core.models import AuditEvent


def record(
    session: AsyncSession,
    action: str,
    *,
    actor: uuid.UUID | None = None,
    subject: uuid.UUID | None = None,
    ip: str | None = None,
    **details: Any,
) -> None:
    """Add an audit row to the caller's transaction; the request id comes from the request being served."""
    session.add(
        AuditEvent(
            action=action,
            actor_user_id=actor,
            subject_user_id=subject,
            ip=ip,
            request_id=request_id_var.get(),
            details=details,
        )
    )
