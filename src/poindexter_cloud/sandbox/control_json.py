"""The JSON in and out of the simulators' own ``/_control`` endpoints (not part of any provider's API)."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response


def answer(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=json.dumps(body).encode(), status_code=status, media_type="application/json")


async def object_body(request: Request[Any, Any, Any]) -> dict[str, Any] | None:
    """The request's JSON object (an empty body is ``{}``), or None when the body is not a JSON object."""
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
