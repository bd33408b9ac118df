"""A stateful, deterministic simulator of Anthropic's Messages API (as of ``anthropic-version: 2023-06-01``).

Mounted at ``/anthropic``: the official SDK works unchanged with ``base_url="http://host:port/anthropic"``.

Endpoints:

* ``POST /v1/messages``: a Message, or with ``"stream": true`` the SSE stream ``message_start``,
  ``content_block_start``, ``ping``, ``content_block_delta`` (one ``text_delta`` per word; a tool call's
  arguments as several ``input_json_delta`` pieces), ``content_block_stop``, ``message_delta`` (cumulative
  usage, input and cache counts repeated), ``message_stop``.
* ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, ``N`` = :func:`count_input_tokens`.
* ``GET /v1/models`` (``limit``, ``after_id``, ``before_id``) and ``GET /v1/models/{model_id}``.
* ``/_control/...``: faults, reset, request log, stats, config (see :mod:`.ai_common`).

Models: ``claude-sonnet-4-5``, ``claude-opus-4-1``, ``claude-haiku-4-5`` (their dated ids are accepted too and
echoed as sent). Every ``/v1`` request needs an ``x-api-key`` (or ``Authorization: Bearer``) header: one of
``SANDBOX_ANTHROPIC_API_KEYS`` (comma-separated) if set, else any key starting ``sk-ant-sandbox``; and an
``anthropic-version`` header (any value: SDK 2.x sends ``2026-10-21``, and its key as a bearer token).
Errors use Anthropic's format and statuses, with a ``request-id`` header.

Token counts follow the rule in :mod:`.ai_common`: one input token per word of the system prompt, message
text and tool results, 100 per image or document, and the words of each tool definition's compact JSON.
The reply is ``"Sandbox reply to: "`` plus the first 8 words of the last user message (or N words for
``words=N``), one output token per word, cut by ``stop_sequences`` and ``max_tokens``.

Tool use: when the request has ``tools`` and the last user message has no ``tool_result`` blocks, and either
``tool_choice`` is ``{"type": "any"}`` / ``{"type": "tool", "name": ...}`` or the last user message has the
word "tool"/"tools", the answer is the text ``"Sandbox calling <name>."`` plus a ``tool_use`` block for the
first (or chosen) tool with arguments built from its ``input_schema``; stop reason ``tool_use``.

Prompt caching: blocks (tools, system blocks, message content blocks) with ``cache_control:
{"type": "ephemeral"}`` (``"ttl": "1h"`` optional) are breakpoints; the cache is keyed by API key, model and
the exact content up to the breakpoint (in order tools, system, messages). The longest cached breakpoint
prefix (within its TTL, refreshed on use) is reported as ``cache_read_input_tokens``; the tokens from there
to the last breakpoint are written and reported as ``cache_creation_input_tokens`` (split into
``ephemeral_5m``/``ephemeral_1h`` by the ttl of the breakpoint closing each span); ``input_tokens`` is what
follows the last breakpoint. Unlike the real API there is no minimum cacheable length. At most 4 breakpoints.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from litestar import Request, Response, Router, get, post

from .ai_common import (
    MAX_BODY_BYTES,
    ApiError,
    Call,
    ProviderState,
    Reply,
    block_tokens,
    content_text,
    content_tokens,
    control_handlers,
    encode,
    exception_handlers,
    fallback_handler,
    json_response,
    mentions_tool,
    new_id,
    plan_reply,
    sse_event,
    text_tokens,
    tool_definition_tokens,
    without_cache_control,
)

STATE: Final = ProviderState(
    "anthropic",
    key_prefix="sk-ant-sandbox",
    keys_env="SANDBOX_ANTHROPIC_API_KEYS",
    malformed_json="There was an error parsing the body of your request as JSON.",
)


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    dated_id: str
    display_name: str
    created_at: str
    max_tokens: int
    max_input_tokens: int = 200_000

    def info(self) -> dict[str, Any]:
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
            "lifecycle": "active",
        }


MODELS: Final = (  # newest first, as the API lists them
    Model(
        "claude-haiku-4-5", "claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z", 64_000
    ),
    Model(
        "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", 64_000
    ),
    Model("claude-opus-4-1", "claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", 32_000),
)
_MODEL_BY_NAME: Final = {name: m for m in MODELS for name in (m.id, m.dated_id)}

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_DEFAULT_MESSAGES: Final = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of requests has exceeded your rate limit (sandbox fault).",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}
_CACHE_TTL_SECONDS: Final = {"5m": 300.0, "1h": 3600.0}
_MAX_BREAKPOINTS: Final = 4


def _request_id() -> str:
    return new_id("req_011C", 20)


def _error_object(error: ApiError) -> dict[str, str]:
    kind = error.kind or _ERROR_TYPES.get(
        error.status, "api_error" if error.status >= 500 else "invalid_request_error"
    )
    return {"type": kind, "message": error.message or _DEFAULT_MESSAGES.get(error.status, "Error")}


def _render_error(error: ApiError, request_id: str) -> bytes:
    return encode({"type": "error", "error": _error_object(error), "request_id": request_id})


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


# ---------------------------------------------------------------------------------------------- tokens


def count_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of a Messages request by the sandbox rule (tools, system, messages; see the docstring)."""
    total = 0
    tools = body.get("tools")
    if isinstance(tools, list):
        total += sum(tool_definition_tokens(tool) for tool in tools)
    total += content_tokens(body.get("system"))
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            total += content_tokens(message.get("content"))
    return total


def _ttl(block: object) -> str | None:
    if isinstance(block, dict):
        control = block.get("cache_control")
        if isinstance(control, dict) and control.get("type") == "ephemeral":
            return "1h" if control.get("ttl") == "1h" else "5m"
    return None


def _segments(body: dict[str, Any]) -> Iterator[tuple[int, Any, str | None]]:
    """(tokens, canonical content, cache ttl) of every cacheable unit, in prompt order."""
    for tool in body.get("tools") or ():
        yield tool_definition_tokens(tool), ("tool", without_cache_control(tool)), _ttl(tool)
    system = body.get("system")
    if isinstance(system, str):
        yield text_tokens(system), ("system", system), None
    elif isinstance(system, list):
        for block in system:
            yield block_tokens(block), ("system", without_cache_control(block)), _ttl(block)
    for message in body.get("messages") or ():
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                yield block_tokens(block), (role, without_cache_control(block)), _ttl(block)
        else:
            yield content_tokens(content), (role, content), None


@dataclass(slots=True)
class InputUsage:
    input_tokens: int
    cache_creation: int = 0
    cache_read: int = 0
    ephemeral_5m: int = 0
    ephemeral_1h: int = 0

    def fields(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m,
                "ephemeral_1h_input_tokens": self.ephemeral_1h,
            },
        }


def _input_usage(body: dict[str, Any], raw_has_cache_control: bool, key: str, model: str) -> InputUsage:
    if not raw_has_cache_control:
        return InputUsage(count_input_tokens(body))
    digest = hashlib.blake2b(f"{key}\x1f{model}".encode(), digest_size=20)
    total = 0
    breakpoints: list[tuple[int, bytes, str]] = []
    for tokens, canonical, ttl in _segments(body):
        total += tokens
        digest.update(encode(canonical))
        digest.update(b"\x1e")
        if ttl is not None:
            breakpoints.append((total, digest.copy().digest(), ttl))
    if not breakpoints:
        return InputUsage(total)
    if len(breakpoints) > _MAX_BREAKPOINTS:
        raise _invalid(
            f"A maximum of {_MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(breakpoints)}."
        )
    cache = STATE.prompt_cache
    now = time.monotonic()
    hit = -1
    for index in range(len(breakpoints) - 1, -1, -1):
        expiry = cache.get(breakpoints[index][1])
        if expiry is not None and expiry > now:
            hit = index
            break
    usage = InputUsage(total - breakpoints[-1][0], cache_read=breakpoints[hit][0] if hit >= 0 else 0)
    previous = usage.cache_read
    for written, _, ttl in breakpoints[hit + 1 :]:
        if ttl == "1h":
            usage.ephemeral_1h += written - previous
        else:
            usage.ephemeral_5m += written - previous
        previous = written
    usage.cache_creation = usage.ephemeral_5m + usage.ephemeral_1h
    for _, prefix, ttl in breakpoints:
        cache[prefix] = now + _CACHE_TTL_SECONDS[ttl]
    STATE.cache_prune()
    return usage


# ---------------------------------------------------------------------------------------------- validation


def _authenticate(call: Call) -> None:
    key = call.header(b"x-api-key")
    if not key:
        authorization = call.header(b"authorization") or ""
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise ApiError(401, "x-api-key header is required")
    if not STATE.key_accepted(key):
        raise ApiError(401, "invalid x-api-key")
    if b"anthropic-version" not in call.headers:
        raise _invalid("anthropic-version: header is required")
    call.key = key


def _validate_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise _invalid("messages: Field required")
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            raise _invalid(f"messages.{i}.content: Field required")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise _invalid(f"messages.{i}.content.{j}.type: Field required")
        elif not isinstance(content, str):
            raise _invalid(f"messages.{i}.content: Input should be a valid string or list")
    return messages


def _validate(body: Any, *, count_only: bool = False) -> tuple[str, int]:
    """The model name and max_tokens of a valid request body; raises the API's 400/404 errors otherwise."""
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    if not isinstance(model, str):
        raise _invalid("model: Input should be a valid string")
    max_tokens = 0
    if not count_only:
        max_tokens = body.get("max_tokens")  # type: ignore[assignment]
        if max_tokens is None:
            raise _invalid("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _invalid("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise _invalid("max_tokens: Input should be greater than or equal to 1")
    _validate_messages(body)
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _invalid("system: Input should be a valid string or list")
    stop_sequences = body.get("stop_sequences")
    if stop_sequences is not None and (
        not isinstance(stop_sequences, list) or not all(isinstance(s, str) for s in stop_sequences)
    ):
        raise _invalid("stop_sequences: Input should be a valid list of strings")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _invalid(f"tools.{i}.name: Field required")
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and (
        not isinstance(tool_choice, dict) or tool_choice.get("type") not in ("auto", "any", "tool", "none")
    ):
        raise _invalid("tool_choice: Input tag should be one of 'auto', 'any', 'tool', 'none'")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("stream: Input should be a valid boolean")
    found = _MODEL_BY_NAME.get(model)
    if found is None:
        raise ApiError(404, f"model: {model}")
    if max_tokens > found.max_tokens:
        raise _invalid(
            f"max_tokens: {max_tokens} > {found.max_tokens}, which is the maximum allowed number of output "
            f"tokens for {found.dated_id}"
        )
    return model, max_tokens


def _plan(body: dict[str, Any], max_tokens: int) -> Reply:
    messages: list[dict[str, Any]] = body["messages"]
    content = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    prompt = content_text(content)
    tool: tuple[str, object] | None = None
    tools = [t for t in body.get("tools") or () if "input_schema" in t]
    has_result = isinstance(content, list) and any(block.get("type") == "tool_result" for block in content)
    if tools and not has_result:
        choice = body.get("tool_choice") or {"type": "auto"}
        kind = choice.get("type")
        chosen: dict[str, Any] | None = None
        if kind == "tool":
            chosen = next((t for t in tools if t["name"] == choice.get("name")), None)
            if chosen is None:
                raise _invalid(f"tool_choice: tool '{choice.get('name')}' was not found in tools")
        elif kind == "any" or (kind == "auto" and mentions_tool(prompt)):
            chosen = tools[0]
        if chosen is not None:
            tool = (chosen["name"], chosen.get("input_schema"))
    return plan_reply(
        prompt, max_tokens=max_tokens, stop_sequences=body.get("stop_sequences") or (), tool=tool
    )


# ---------------------------------------------------------------------------------------------- responses


def _stop_reason(reply: Reply) -> str:
    return "end_turn" if reply.stop == "end" else reply.stop


def _message(message_id: str, model: str, reply: Reply, usage: InputUsage, tool_id: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    if reply.tool is not None:
        content.append(
            {"type": "tool_use", "id": tool_id, "name": reply.tool.name, "input": reply.tool.arguments}
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": reply.stop_sequence,
        "usage": {**usage.fields(), "output_tokens": reply.output_tokens, "service_tier": "standard"},
    }


_PING: Final = sse_event(b"ping", b'{"type":"ping"}')
_MESSAGE_STOP: Final = sse_event(b"message_stop", b'{"type":"message_stop"}')
_TEXT_DELTA_HEAD: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":'
)
_JSON_PIECE: Final = 12  # characters of tool arguments per input_json_delta


def _block_event(name: bytes, index: int, rest: bytes) -> bytes:
    return sse_event(name, b'{"type":"' + name + b'","index":' + str(index).encode() + rest + b"}")


def _events(
    message_id: str, model: str, reply: Reply, usage: InputUsage, tool_id: str
) -> Iterator[tuple[bytes, bool]]:
    start = {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage.fields(), "output_tokens": 1, "service_tier": "standard"},
        },
    }
    yield sse_event(b"message_start", encode(start)), False
    index = 0
    pinged = False
    if reply.text:
        yield (
            _block_event(b"content_block_start", index, b',"content_block":{"type":"text","text":""}'),
            False,
        )
        yield _PING, False
        pinged = True
        head = _TEXT_DELTA_HEAD
        for piece in reply.pieces():
            yield head + encode(piece) + b"}}\n\n", True
        yield _block_event(b"content_block_stop", index, b""), False
        index += 1
    if reply.tool is not None:
        block = encode({"type": "tool_use", "id": tool_id, "name": reply.tool.name, "input": {}})
        yield _block_event(b"content_block_start", index, b',"content_block":' + block), False
        if not pinged:
            yield _PING, False
        arguments = reply.tool.arguments_json
        pieces = ["", *(arguments[i : i + _JSON_PIECE] for i in range(0, len(arguments), _JSON_PIECE))]
        for piece in pieces:
            delta = b',"delta":{"type":"input_json_delta","partial_json":' + encode(piece) + b"}"
            yield _block_event(b"content_block_delta", index, delta), True
        yield _block_event(b"content_block_stop", index, b""), False
    elif not pinged:
        yield _PING, False
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": reply.stop_sequence},
        "usage": {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation,
            "cache_read_input_tokens": usage.cache_read,
            "output_tokens": reply.output_tokens,
        },
    }
    yield sse_event(b"message_delta", encode(end)), False
    yield _MESSAGE_STOP, False


def _stream_error(call: Call) -> bytes:
    fault = call.fault
    status = fault.status if fault is not None and fault.status is not None else 529
    error = ApiError(status, fault.message if fault is not None else None)
    return sse_event(b"error", encode({"type": "error", "error": _error_object(error)}))


# ---------------------------------------------------------------------------------------------- handlers


@post("/v1/messages", status_code=200, include_in_schema=False)
async def create_message(request: Request[Any, Any, Any]) -> Response[Any]:
    raw = await request.body()
    call = await STATE.admit(request, raw)
    _authenticate(call)
    model, max_tokens = _validate(call.body)
    body: dict[str, Any] = call.body
    usage = _input_usage(body, b"cache_control" in raw, call.key, model)
    reply = _plan(body, max_tokens)
    message_id = new_id("msg_01", 22)
    tool_id = new_id("toolu_01", 22) if reply.tool is not None else ""
    headers = {"request-id": _request_id()}
    if call.stream:
        events = _events(message_id, model, reply, usage, tool_id)
        return STATE.stream(events, call, _stream_error(call), headers)
    await STATE.pace(call, reply.output_tokens)
    return json_response(encode(_message(message_id, model, reply, usage, tool_id)), headers)


@post("/v1/messages/count_tokens", status_code=200, include_in_schema=False)
async def count_tokens(request: Request[Any, Any, Any]) -> Response[bytes]:
    call = await STATE.admit(request, await request.body())
    _authenticate(call)
    _validate(call.body, count_only=True)
    content = encode({"input_tokens": count_input_tokens(call.body)})
    return json_response(content, {"request-id": _request_id()})


@get("/v1/models", include_in_schema=False)
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    call = await STATE.admit(request, b"")
    _authenticate(call)
    params = request.query_params
    try:
        limit = int(params.get("limit") or 20)
    except ValueError:
        raise _invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise _invalid("limit: Input should be between 1 and 1000")
    ids = [m.id for m in MODELS]
    models = list(MODELS)
    after, before = params.get("after_id"), params.get("before_id")
    if before:
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
        models, has_more = models[start:end], start > 0
    else:
        if after:
            models = models[ids.index(after) + 1 :] if after in ids else []
        has_more = len(models) > limit
        models = models[:limit]
    page = {
        "data": [m.info() for m in models],
        "has_more": has_more,
        "first_id": models[0].id if models else None,
        "last_id": models[-1].id if models else None,
    }
    return json_response(encode(page), {"request-id": _request_id()})


@get("/v1/models/{model_id:str}", include_in_schema=False)
async def retrieve_model(request: Request[Any, Any, Any], model_id: str) -> Response[bytes]:
    call = await STATE.admit(request, b"")
    _authenticate(call)
    found = _MODEL_BY_NAME.get(model_id)
    if found is None:
        raise ApiError(404, f"model: {model_id}")
    return json_response(encode(found.info()), {"request-id": _request_id()})


def _not_found(method: str, path: str) -> ApiError:
    return ApiError(404, "Not Found")


router: Final = Router(
    path="/anthropic",
    route_handlers=[
        create_message,
        count_tokens,
        list_models,
        retrieve_model,
        *control_handlers(STATE),
        fallback_handler(STATE, _not_found),
    ],
    exception_handlers=exception_handlers(STATE, _render_error, "request-id", _request_id),
    request_max_body_size=MAX_BODY_BYTES,
)
