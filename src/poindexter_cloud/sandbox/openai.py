"""A stateful, deterministic simulator of OpenAI's API: chat and legacy completions, embeddings, models.

Mounted at ``/openai``: the official SDK works unchanged with ``base_url="http://host:port/openai/v1"``.

Endpoints:

* ``POST /v1/chat/completions``: a ``chat.completion``, or with ``"stream": true`` ``chat.completion.chunk``
  events (``data: {...}``) ending ``data: [DONE]``: a role chunk, one content chunk per word (a tool call: its
  id and name, then argument fragments), a chunk with the ``finish_reason``, and, when
  ``stream_options.include_usage`` is true, a last chunk with ``choices: []`` and the usage (the others then
  carry ``"usage": null``). ``max_completion_tokens``/``max_tokens`` and ``stop`` are honoured.
* ``POST /v1/completions`` (``gpt-3.5-turbo-instruct``; ``prompt`` a string or list, one choice each;
  ``max_tokens`` defaults to 16): ``text_completion`` objects, streamed the same way.
* ``POST /v1/embeddings`` (``text-embedding-3-small``; ``input`` a string, list of strings or token arrays):
  deterministic unit vectors of 8 floats (or ``dimensions``) from a hash of each input, as floats or, for
  ``"encoding_format": "base64"`` (the SDK's default), base64 of little-endian float32. Usage: one token per
  word (per token of a token array).
* ``GET /v1/models`` and ``GET /v1/models/{model}``; models ``gpt-4o``, ``gpt-4o-mini`` (dated ids
  accepted too), ``gpt-3.5-turbo-instruct``, ``text-embedding-3-small``, each only on its own endpoint.
* ``/_control/...``: faults, reset, request log, stats, config (see :mod:`.ai_common`).

Requests need ``Authorization: Bearer <key>``: one of ``SANDBOX_OPENAI_API_KEYS`` (comma-separated) if set,
else any key starting ``sk-sandbox``. Errors use OpenAI's ``{"error": {message, type, param, code}}`` format,
with an ``x-request-id`` header.

Token counts follow the rule in :mod:`.ai_common` (:func:`count_input_tokens`: words of every message's text,
100 per image/audio/file part, words of each tool definition's compact JSON and of history tool calls'
names and arguments). The reply is ``"Sandbox reply to: "`` plus the first 8 words of the last user message (N
words for ``words=N``). With ``tools``, unless the last message is a tool result, a tool call (no text
content) is made when ``tool_choice`` is ``"required"`` or names a function, or the last user message has the
word "tool"/"tools"; ``finish_reason`` is then ``tool_calls``. ``cached_tokens`` is always 0.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
import time
from array import array
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
    sse_data,
    text_tokens,
    tool_definition_tokens,
)

STATE: Final = ProviderState(
    "openai",
    key_prefix="sk-sandbox",
    keys_env="SANDBOX_OPENAI_API_KEYS",
    malformed_json=(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
        "JSON.)"
    ),
)

CHAT, COMPLETION, EMBEDDING = "chat", "completion", "embedding"


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    kind: str
    created: int
    aliases: tuple[str, ...] = ()

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "sandbox"}


MODELS: Final = (
    Model("gpt-4o", CHAT, 1715367049, ("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")),
    Model("gpt-4o-mini", CHAT, 1721172741, ("gpt-4o-mini-2024-07-18",)),
    Model("gpt-3.5-turbo-instruct", COMPLETION, 1692901427),
    Model("text-embedding-3-small", EMBEDDING, 1705948997),
)
_MODEL_BY_NAME: Final = {name: m for m in MODELS for name in (m.id, *m.aliases)}
_WRONG_ENDPOINT: Final = {
    CHAT: "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
    "Did you mean to use v1/completions?",
    COMPLETION: "This is a chat model and not supported in the v1/completions endpoint. "
    "Did you mean to use v1/chat/completions?",
    EMBEDDING: "This model does not support embeddings.",
}
EMBEDDING_DIMENSIONS: Final = 8
MAX_EMBEDDING_DIMENSIONS: Final = 1536
LEGACY_DEFAULT_MAX_TOKENS: Final = 16

_ERROR_TYPES: Final = {429: "requests"}
_DEFAULT_CODES: Final = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_DEFAULT_MESSAGES: Final = {
    400: "Invalid request.",
    401: "Incorrect API key provided.",
    403: "You are not allowed to sample from this model.",
    404: "Not found.",
    429: "Rate limit reached for requests (sandbox fault).",
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}
_FINISH_REASONS: Final = {
    "end": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
_ARGUMENT_PIECE: Final = 12  # characters of tool arguments per streamed fragment
_DONE: Final = b"data: [DONE]\n\n"


def _request_id() -> str:
    return new_id("req_", 32)


def _error_object(error: ApiError) -> dict[str, Any]:
    kind = (
        error.kind
        or _ERROR_TYPES.get(error.status)
        or ("server_error" if error.status >= 500 else "invalid_request_error")
    )
    return {
        "message": error.message or _DEFAULT_MESSAGES.get(error.status, "Error."),
        "type": kind,
        "param": error.param,
        "code": error.code or _DEFAULT_CODES.get(error.status),
    }


def _render_error(error: ApiError, _: str) -> bytes:
    return encode({"error": _error_object(error)})


def _invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _type_name(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# ---------------------------------------------------------------------------------------------- tokens


def count_input_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a chat request by the sandbox rule (tools, message contents, history tool calls)."""
    total = 0
    tools = body.get("tools")
    if isinstance(tools, list):
        total += sum(tool_definition_tokens(tool) for tool in tools)
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        total += content_tokens(message.get("content"))
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") if isinstance(tool_call, dict) else None
            if isinstance(function, dict):
                total += text_tokens(function.get("name")) + text_tokens(function.get("arguments"))
    return total


def _usage(prompt: int, completion: int, details: bool = True) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if details:
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


# ---------------------------------------------------------------------------------------------- validation


def _authenticate(call: Call) -> None:
    authorization = call.header(b"authorization") or ""
    scheme, _, token = authorization.partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    if not STATE.key_accepted(key):
        shown = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 7 else "***"
        raise ApiError(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )
    call.key = key


def _object_body(call: Call) -> dict[str, Any]:
    if not isinstance(call.body, dict):
        raise _invalid(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON object."
            if call.body is not None
            else "Missing request body."
        )
    return call.body


def _model(body: dict[str, Any], kind: str) -> str:
    model = body.get("model")
    if model is None:
        raise _invalid("you must provide a model parameter")
    if not isinstance(model, str):
        raise _invalid(
            f"Invalid type for 'model': expected a string, but got {_type_name(model)} instead.", "model"
        )
    found = _MODEL_BY_NAME.get(model)
    if found is None:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if found.kind != kind:
        raise ApiError(404, _WRONG_ENDPOINT[kind], param="model")
    return model


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            name,
            "invalid_type",
        )
    if value < 1:
        raise _invalid(
            f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    return value


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > 4:
            raise _invalid(
                f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array "
                f"with length {len(stop)} instead.",
                "stop",
                "array_above_max_length",
            )
        return stop
    raise _invalid(
        "Invalid type for 'stop': expected a string or an array of strings.", "stop", "invalid_type"
    )


def _include_usage(body: dict[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        )
    if not isinstance(options, dict):
        raise _invalid(
            "Invalid type for 'stream_options': expected an object.", "stream_options", "invalid_type"
        )
    return options.get("include_usage") is True


def _validate_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise _invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise _invalid(
            "Invalid type for 'messages': expected an array of objects, but got "
            f"{_type_name(messages)} instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        raise _invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
            "array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(
                f"Invalid type for 'messages[{i}]': expected an object, but got {_type_name(message)} "
                "instead.",
                f"messages[{i}]",
                "invalid_type",
            )
        role = message.get("role")
        if role not in _ROLES:
            raise _invalid(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
                "'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
        content = message.get("content")
        if content is None and role in ("system", "developer", "user", "tool"):
            raise _invalid(
                f"Missing required parameter: 'messages[{i}].content'.",
                f"messages[{i}].content",
                "missing_required_parameter",
            )
        if content is not None and not isinstance(content, str | list):
            raise _invalid(
                f"Invalid type for 'messages[{i}].content': expected one of a string or array of objects, "
                f"but got {_type_name(content)} instead.",
                f"messages[{i}].content",
                "invalid_type",
            )
    return messages


def _chosen_tool(
    body: dict[str, Any], messages: list[dict[str, Any]], prompt: str
) -> tuple[str, object] | None:
    tools = [
        t["function"]
        for t in body.get("tools") or ()
        if isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    ]
    if not tools or messages[-1].get("role") in ("tool", "function"):
        return None
    choice = body.get("tool_choice", "auto")
    chosen: dict[str, Any] | None = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = next((t for t in tools if t["name"] == name), None)
        if chosen is None:
            raise _invalid(
                f"Invalid value for 'tool_choice': function '{name}' not found in tools.", "tool_choice"
            )
    elif choice == "required" or (choice in ("auto", None) and mentions_tool(prompt)):
        chosen = tools[0]
    return (chosen["name"], chosen.get("parameters")) if chosen is not None else None


# ---------------------------------------------------------------------------------------------- streaming


class ChunkWriter:
    """Builds one stream's SSE chunks from a pre-encoded head (id, object, created, model)."""

    __slots__ = ("head", "tail")

    def __init__(
        self, object_name: str, chunk_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        self.head = (
            b'data: {"id":"'
            + chunk_id.encode()
            + b'","object":"'
            + object_name.encode()
            + b'","created":'
            + str(created).encode()
            + b',"model":'
            + encode(model)
            + b',"service_tier":"default","system_fingerprint":"fp_sandbox","choices":['
        )
        self.tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def chunk(self, choice: bytes) -> bytes:
        return self.head + choice + self.tail

    def usage(self, usage: dict[str, Any]) -> bytes:
        return self.head + b'],"usage":' + encode(usage) + b"}\n\n"


def _null_or(value: str | None) -> bytes:
    return b"null" if value is None else encode(value)


def _chat_events(
    writer: ChunkWriter, reply: Reply, tool_id: str, usage: dict[str, Any] | None
) -> Iterator[tuple[bytes, bool]]:
    def choice(delta: bytes, finish: str | None = None) -> bytes:
        return writer.chunk(
            b'{"index":0,"delta":' + delta + b',"logprobs":null,"finish_reason":' + _null_or(finish) + b"}"
        )

    tool = reply.tool
    if tool is None:
        yield choice(b'{"role":"assistant","content":"","refusal":null}'), False
        for piece in reply.pieces():
            yield choice(b'{"content":' + encode(piece) + b"}"), True
    else:
        call = {
            "index": 0,
            "id": tool_id,
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }
        yield (
            choice(
                b'{"role":"assistant","content":null,"tool_calls":[' + encode(call) + b'],"refusal":null}'
            ),
            False,
        )
        arguments = tool.arguments_json
        for start in range(0, len(arguments), _ARGUMENT_PIECE):
            fragment = encode(arguments[start : start + _ARGUMENT_PIECE])
            yield choice(b'{"tool_calls":[{"index":0,"function":{"arguments":' + fragment + b"}}]}"), True
    yield choice(b"{}", _FINISH_REASONS[reply.stop]), False
    if usage is not None:
        yield writer.usage(usage), False
    yield _DONE, False


def _completion_events(
    writer: ChunkWriter, replies: list[Reply], usage: dict[str, Any] | None
) -> Iterator[tuple[bytes, bool]]:
    for index, reply in enumerate(replies):
        head = b'{"text":'
        rest = b',"index":' + str(index).encode() + b',"logprobs":null,"finish_reason":'
        for piece in reply.pieces():
            yield writer.chunk(head + encode(piece) + rest + b"null}"), True
        yield writer.chunk(head + b'""' + rest + encode(_FINISH_REASONS[reply.stop]) + b"}"), False
    if usage is not None:
        yield writer.usage(usage), False
    yield _DONE, False


def _stream_error(call: Call) -> bytes:
    fault = call.fault
    status = fault.status if fault is not None and fault.status is not None else 500
    return sse_data(encode({"error": _error_object(ApiError(status, fault.message if fault else None))}))


# ---------------------------------------------------------------------------------------------- handlers


@post("/v1/chat/completions", status_code=200, include_in_schema=False)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    call = await STATE.admit(request, await request.body())
    _authenticate(call)
    body = _object_body(call)
    model = _model(body, CHAT)
    messages = _validate_messages(body)
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    stop = _stop(body)
    include_usage = _include_usage(body, call.stream)
    content = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    prompt = content_text(content)
    tool = _chosen_tool(body, messages, prompt)
    reply = plan_reply(prompt, max_tokens=max_tokens, stop_sequences=stop, tool=tool, text_with_tool=False)
    usage = _usage(count_input_tokens(body), reply.output_tokens)
    completion_id = new_id("chatcmpl-", 29)
    tool_id = new_id("call_", 24) if reply.tool is not None else ""
    created = int(time.time())
    headers = {"x-request-id": _request_id()}
    if call.stream:
        writer = ChunkWriter("chat.completion.chunk", completion_id, created, model, include_usage)
        events = _chat_events(writer, reply, tool_id, usage if include_usage else None)
        return STATE.stream(events, call, _stream_error(call), headers)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text if reply.tool is None else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool is not None:
        message["tool_calls"] = [
            {
                "id": tool_id,
                "type": "function",
                "function": {"name": reply.tool.name, "arguments": reply.tool.arguments_json},
            }
        ]
    completion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH_REASONS[reply.stop]}
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_sandbox",
    }
    await STATE.pace(call, reply.output_tokens)
    return json_response(encode(completion), headers)


def _prompts(body: dict[str, Any]) -> list[tuple[str, int]]:
    """(text, tokens) of each prompt: a string, a list of strings, a token array or a list of token arrays."""
    prompt = body.get("prompt")
    if prompt is None:
        raise _invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if isinstance(prompt, str):
        return [(prompt, text_tokens(prompt))]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [(p, text_tokens(p)) for p in prompt]
        if all(isinstance(p, int) for p in prompt):
            return [("", len(prompt))]
        if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
            return [("", len(p)) for p in prompt]
    raise _invalid("Invalid type for 'prompt': expected a string or an array.", "prompt", "invalid_type")


@post("/v1/completions", status_code=200, include_in_schema=False)
async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
    call = await STATE.admit(request, await request.body())
    _authenticate(call)
    body = _object_body(call)
    model = _model(body, COMPLETION)
    prompts = _prompts(body)
    max_tokens = _positive_int(body, "max_tokens") or LEGACY_DEFAULT_MAX_TOKENS
    stop = _stop(body)
    include_usage = _include_usage(body, call.stream)
    replies = [plan_reply(text, max_tokens=max_tokens, stop_sequences=stop) for text, _ in prompts]
    completion_tokens = sum(r.output_tokens for r in replies)
    usage = _usage(sum(tokens for _, tokens in prompts), completion_tokens, details=False)
    completion_id = new_id("cmpl-", 29)
    created = int(time.time())
    headers = {"x-request-id": _request_id()}
    if call.stream:
        writer = ChunkWriter("text_completion", completion_id, created, model, include_usage)
        events = _completion_events(writer, replies, usage if include_usage else None)
        return STATE.stream(events, call, _stream_error(call), headers)
    completion = {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"text": r.text, "index": i, "logprobs": None, "finish_reason": _FINISH_REASONS[r.stop]}
            for i, r in enumerate(replies)
        ],
        "usage": usage,
        "system_fingerprint": "fp_sandbox",
    }
    await STATE.pace(call, completion_tokens)
    return json_response(encode(completion), headers)


def embedding_vector(key: bytes, dimensions: int) -> array[float]:
    """A deterministic unit vector (float32) derived from a hash of ``key``."""
    raw = hashlib.shake_256(key).digest(2 * dimensions)
    values = [int.from_bytes(raw[i : i + 2], "little") / 32767.5 - 1.0 for i in range(0, 2 * dimensions, 2)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values])


def _embedding_inputs(body: dict[str, Any]) -> list[tuple[bytes, int]]:
    """(hash key, tokens) of each input."""
    value = body.get("input")
    if value is None:
        raise _invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    invalid = _invalid(
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        "input",
    )
    is_token_array = isinstance(value, list) and value and all(isinstance(t, int) for t in value)
    if isinstance(value, str) or is_token_array:
        value = [value]
    if not isinstance(value, list) or not value:
        raise invalid
    inputs: list[tuple[bytes, int]] = []
    for item in value:
        if isinstance(item, str) and item:
            inputs.append((item.encode(), text_tokens(item)))
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            inputs.append((encode(item), len(item)))
        else:
            raise invalid
    return inputs


@post("/v1/embeddings", status_code=200, include_in_schema=False)
async def embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    call = await STATE.admit(request, await request.body())
    _authenticate(call)
    body = _object_body(call)
    model = _model(body, EMBEDDING)
    inputs = _embedding_inputs(body)
    dimensions = _positive_int(body, "dimensions") or EMBEDDING_DIMENSIONS
    if dimensions > MAX_EMBEDDING_DIMENSIONS:
        raise _invalid(
            "Invalid 'dimensions': integer above maximum value. Expected a value <= "
            f"{MAX_EMBEDDING_DIMENSIONS}, but got {dimensions} instead.",
            "dimensions",
            "integer_above_max_value",
        )
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _invalid(
            f"Invalid value for 'encoding_format': '{encoding}'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    data = []
    for index, (key, _) in enumerate(inputs):
        vector = embedding_vector(key, dimensions)
        embedding: Any
        if encoding == "base64":
            if sys.byteorder == "big":
                vector.byteswap()
            embedding = base64.b64encode(vector.tobytes()).decode()
        else:
            embedding = vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(t for _, t in inputs)
    result = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(encode(result), {"x-request-id": _request_id()})


@get("/v1/models", include_in_schema=False)
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    _authenticate(await STATE.admit(request, b""))
    content = encode({"object": "list", "data": [m.info() for m in MODELS]})
    return json_response(content, {"x-request-id": _request_id()})


@get("/v1/models/{model_id:path}", include_in_schema=False)
async def retrieve_model(request: Request[Any, Any, Any], model_id: str) -> Response[bytes]:
    _authenticate(await STATE.admit(request, b""))
    name = model_id.lstrip("/")
    found = _MODEL_BY_NAME.get(name)
    if found is None:
        raise ApiError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
    return json_response(encode(found.info()), {"x-request-id": _request_id()})


def _not_found(method: str, path: str) -> ApiError:
    return ApiError(404, f"Invalid URL ({method} {path.removeprefix('/openai')})")


router: Final = Router(
    path="/openai",
    route_handlers=[
        chat_completions,
        completions,
        embeddings,
        list_models,
        retrieve_model,
        *control_handlers(STATE),
        fallback_handler(STATE, _not_found),
    ],
    exception_handlers=exception_handlers(STATE, _render_error, "x-request-id", _request_id),
    request_max_body_size=MAX_BODY_BYTES,
)
