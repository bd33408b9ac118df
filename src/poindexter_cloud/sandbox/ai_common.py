"""What the AI provider simulators (``anthropic.py``, ``openai.py``) share: token rule, reply rule, controls.

Token rule (both providers; deterministic so tests can assert exact numbers and prices):

* every text counts one token per whitespace-separated word (``len(text.split())``): system prompts,
  message text (a string ``content`` or ``text`` parts/blocks), ``thinking`` and ``refusal`` blocks;
* every image, document, audio or file block/part counts ``MEDIA_TOKENS`` (100);
* every tool definition counts the words of its compact JSON encoding (``separators=(",", ":")``, key order as
  sent, ``cache_control`` removed), so mostly the words of its descriptions;
* a tool call in the history (Anthropic ``tool_use`` block, OpenAI ``tool_calls`` entry) counts the words of
  its name plus the words of its arguments (compact JSON of ``input``; OpenAI's ``arguments`` string as
  sent); a ``tool_result`` block counts its content by the same rules;
* no per-message or per-request overhead.

Reply rule: the reply text is ``"Sandbox reply to: "`` followed by the first 8 words of the last user message
(its text blocks and tool results), one output token per word. When that message contains ``words=N``, the
reply is exactly N words instead (capped at 1,000,000), for long streams. The reply is cut at the earliest
stop sequence (stop reason "stop sequence", the sequence not included) and then at ``max_tokens`` words (stop
reason "max tokens"). A tool call (see the provider modules for when one is made) costs the words of its
name plus the words of its compact JSON arguments; its arguments are built from the tool's input schema:
an ``enum``'s first value, strings ``"sandbox"``, integers and numbers ``1``, booleans ``true``, arrays of one
item, objects with every property.

Controls (per provider, under its prefix, e.g. ``/anthropic/_control/...``):

* ``POST /_control/faults`` with one object or a list of them. Each applies to the next ``count`` (default 1)
  API requests, first posted first used: ``{"status": 529}`` answers that error in the provider's format
  (429 adds ``retry-after``, ``retry_after`` seconds, default 1; ``message`` overrides the text);
  ``{"delay_ms": 5000}`` waits before the first byte; ``{"disconnect_after_events": 3}`` drops the connection
  after 3 SSE events; ``{"status": 529, "error_after_events": 3}`` sends the provider's mid-stream error
  event after 3 events and ends the stream. The last two apply to streaming requests only and are skipped by
  the others. ``GET`` lists the pending faults, ``DELETE`` clears them.
* ``POST /_control/reset``: clears faults, prompt caches, counters and the request log, and restores the
  configuration from the environment.
* ``GET /_control/requests``: ``{"requests": [...]}``, the last 100 API requests received, oldest first:
  method, path, query, headers (API keys redacted to their last 4 characters) and the JSON body.
* ``GET /_control/stats``: ``requests``, ``errors``, ``streams_started``, ``streams_completed``,
  ``streams_cancelled`` (the client went away mid-stream; the generator stops), ``streams_dropped`` and
  ``streams_errored`` (the two stream faults).
* ``GET|POST /_control/config``: ``{"latency_ms": .., "tokens_per_second": .., "api_keys": [..] | null}``.
  Defaults come from ``SANDBOX_AI_LATENCY_MS`` (0) and ``SANDBOX_AI_TOKENS_PER_SECOND`` (0 = unlimited) and
  the provider's keys variable (unset: any key with the provider's sandbox prefix is accepted).

Latency is waited before the first byte of every API response; the token rate spaces a stream's deltas (and
delays a non-streamed answer by its output tokens / rate). Per request, the headers ``x-sandbox-latency-ms``
and ``x-sandbox-tokens-per-second`` override both.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from litestar import Request, Response, delete, get, post, route
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.response import Stream
from litestar.types import ExceptionHandlersMap

from .fault_queue import take

encode = msgspec.json.encode
_decode = msgspec.json.Decoder().decode

JSON: Final = "application/json"
SSE: Final = "text/event-stream"
MAX_BODY_BYTES: Final = 32 * 1024 * 1024

# ---------------------------------------------------------------------------------------------- token rule

MEDIA_TOKENS: Final = 100
MEDIA_TYPES: Final = frozenset(
    {"image", "document", "image_url", "input_audio", "file", "input_image", "input_file"}
)


def text_tokens(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def json_tokens(value: object) -> int:
    return len(encode(value).decode().split())


def without_cache_control(block: Any) -> Any:
    if isinstance(block, dict) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def tool_definition_tokens(tool: object) -> int:
    return json_tokens(without_cache_control(tool))


def block_tokens(block: object) -> int:
    """Tokens of one content block (Anthropic) or content part (OpenAI)."""
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        return text_tokens(block.get("text"))
    if kind in MEDIA_TYPES:
        return MEDIA_TOKENS
    if kind == "tool_use":
        return text_tokens(block.get("name")) + json_tokens(block.get("input", {}))
    if kind == "tool_result":
        return content_tokens(block.get("content"))
    if kind == "thinking":
        return text_tokens(block.get("thinking"))
    if kind == "refusal":
        return text_tokens(block.get("refusal"))
    return text_tokens(block.get("text"))


def content_tokens(content: object) -> int:
    """Tokens of a message ``content``: a string or a list of blocks/parts."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(block_tokens(block) for block in content)
    return 0


def content_text(content: object) -> str:
    """The words a reply echoes: a string content, or its text blocks and tool results' text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif kind == "tool_result":
                parts.append(content_text(block.get("content")))
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------- reply rule

REPLY_PREFIX: Final = ("Sandbox", "reply", "to:")
ECHO_WORDS: Final = 8
LONG_VOCABULARY: Final = ("sandbox", "words", "flow", "through", "the", "proxy", "without", "pause")
MAX_LONG_WORDS: Final = 1_000_000
_WORDS_RE = re.compile(r"\bwords=(\d+)\b")
_TOOL_RE = re.compile(r"\btools?\b", re.IGNORECASE)


def mentions_tool(text: str) -> bool:
    return _TOOL_RE.search(text) is not None


def reply_words(prompt: str) -> list[str]:
    match = _WORDS_RE.search(prompt)
    if match is not None:
        count = min(int(match.group(1)), MAX_LONG_WORDS)
        vocabulary = LONG_VOCABULARY
        return [vocabulary[i & 7] for i in range(count)]
    return [*REPLY_PREFIX, *prompt.split()[:ECHO_WORDS]]


def sample_arguments(schema: object, depth: int = 0) -> Any:
    """Deterministic arguments that satisfy a (simple) JSON schema."""
    if not isinstance(schema, dict) or depth > 8:
        return "sandbox"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return sample_arguments(options[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: sample_arguments(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        items = schema.get("items")
        return [sample_arguments(items, depth + 1)] if isinstance(items, dict) else []
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sandbox"


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: Any
    arguments_json: str
    tokens: int


@dataclass(slots=True)
class Reply:
    """A planned answer; ``" ".join(words) == text``. ``stop``: end, max_tokens, stop_sequence or tool_use."""

    text: str
    words: list[str]
    output_tokens: int
    stop: str
    stop_sequence: str | None = None
    tool: ToolCall | None = None

    def pieces(self) -> Iterator[str]:
        """The text deltas, one per word, that concatenate to ``text``."""
        words = self.words
        if not words:
            return
        yield words[0]
        for index in range(1, len(words)):
            yield " " + words[index]


def plan_reply(
    prompt: str,
    *,
    max_tokens: int | None,
    stop_sequences: Sequence[str] = (),
    tool: tuple[str, object] | None = None,
    text_with_tool: bool = True,
) -> Reply:
    if tool is not None:
        name, schema = tool
        arguments = sample_arguments(schema if isinstance(schema, dict) else {"type": "object"})
        arguments_json = encode(arguments).decode()
        call = ToolCall(name, arguments, arguments_json, text_tokens(name) + len(arguments_json.split()))
        words = ["Sandbox", "calling", f"{name}."] if text_with_tool else []
        if max_tokens is None or len(words) + call.tokens <= max_tokens:
            return Reply(" ".join(words), words, len(words) + call.tokens, "tool_use", None, call)
        words = words[:max_tokens]
        return Reply(" ".join(words), words, len(words), "max_tokens")
    words = reply_words(prompt)
    if stop_sequences:
        text = " ".join(words)
        found = [(text.find(seq), seq) for seq in stop_sequences if seq and seq in text]
        if found:
            index, sequence = min(found)
            cut = text[:index]
            tokens = len(cut.split())
            if max_tokens is None or tokens <= max_tokens:
                return Reply(cut, cut.split(" ") if cut else [], tokens, "stop_sequence", sequence)
    if max_tokens is not None and len(words) > max_tokens:
        words = words[:max_tokens]
        return Reply(" ".join(words), words, len(words), "max_tokens")
    return Reply(" ".join(words), words, len(words), "end")


# ---------------------------------------------------------------------------------------------- ids, errors

_ALPHANUMERIC: Final = bytes.maketrans(b"+/", b"xZ")


def new_id(prefix: str, length: int = 24) -> str:
    """``prefix`` and ``length`` random alphanumeric characters (one urandom call, no per-character loop)."""
    return prefix + base64.b64encode(os.urandom(length)).translate(_ALPHANUMERIC)[:length].decode()


class ApiError(Exception):
    """An error answer, rendered in each provider's format (``message`` None: the status's default text)."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        kind: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.retry_after = retry_after


class StreamDropped(Exception):
    """Raised inside a stream to drop the connection mid-body (the ``disconnect_after_events`` fault)."""


def _caused_by_drop(exc: BaseException | None, depth: int = 0) -> bool:
    if exc is None or depth > 10:
        return False
    if isinstance(exc, StreamDropped):
        return True
    if isinstance(exc, BaseExceptionGroup) and any(_caused_by_drop(e, depth + 1) for e in exc.exceptions):
        return True
    return _caused_by_drop(exc.__cause__ or exc.__context__, depth + 1)


class _QuietDrops(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record for a deliberately dropped stream."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _caused_by_drop(record.exc_info[1]))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


# ---------------------------------------------------------------------------------------------- state


class FaultSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    count: int = 1
    status: int | None = None
    message: str | None = None
    retry_after: float | None = None
    delay_ms: float = 0
    disconnect_after_events: int | None = None
    error_after_events: int | None = None

    @property
    def stream_only(self) -> bool:
        return self.disconnect_after_events is not None or self.error_after_events is not None


class ConfigSpec(msgspec.Struct, forbid_unknown_fields=True):
    latency_ms: float | msgspec.UnsetType = msgspec.UNSET
    tokens_per_second: float | msgspec.UnsetType = msgspec.UNSET
    api_keys: list[str] | msgspec.UnsetType | None = msgspec.UNSET


def _env_float(name: str) -> float:
    try:
        return max(0.0, float(os.environ.get(name, "0") or 0))
    except ValueError:
        return 0.0


_HEADER_KEYS: Final = frozenset(
    {
        b"x-api-key",
        b"authorization",
        b"anthropic-version",
        b"x-sandbox-latency-ms",
        b"x-sandbox-tokens-per-second",
    }
)
_SECRET_HEADERS: Final = frozenset({"x-api-key", "authorization", "api-key", "proxy-authorization"})
_LOGGED_BODY_LIMIT: Final = 1024 * 1024
_CACHE_SOFT_LIMIT: Final = 10_000


def redact(value: str) -> str:
    scheme, _, secret = value.rpartition(" ")
    masked = "***" + secret[-4:] if len(secret) > 4 else "***"
    return f"{scheme} {masked}" if scheme else masked


@dataclass(slots=True)
class Call:
    """An admitted API request: its JSON body, the headers the simulators read, its fault and pacing."""

    body: Any
    headers: dict[bytes, bytes]
    stream: bool
    fault: FaultSpec | None
    tokens_per_second: float
    key: str = ""

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None


class ProviderState:
    """One simulated provider's mutable state: configuration, faults, counters, request log, prompt cache."""

    def __init__(self, name: str, *, key_prefix: str, keys_env: str, malformed_json: str) -> None:
        self.name = name
        self.key_prefix = key_prefix
        self.keys_env = keys_env
        self.malformed_json = malformed_json
        self.faults: list[FaultSpec] = []
        self.log: deque[tuple[str, str, bytes, Iterable[tuple[bytes, bytes]], bytes]] = deque(maxlen=100)
        self.prompt_cache: dict[bytes, float] = {}
        self.reset()

    def reset(self) -> None:
        self.latency_ms = _env_float("SANDBOX_AI_LATENCY_MS")
        self.tokens_per_second = _env_float("SANDBOX_AI_TOKENS_PER_SECOND")
        keys = [k.strip() for k in os.environ.get(self.keys_env, "").split(",") if k.strip()]
        self.api_keys: frozenset[str] | None = frozenset(keys) if keys else None
        self.faults.clear()
        self.log.clear()
        self.prompt_cache.clear()
        self.requests = self.errors = 0
        self.streams_started = self.streams_completed = self.streams_cancelled = 0
        self.streams_dropped = self.streams_errored = 0

    # -- requests

    def key_accepted(self, key: str) -> bool:
        if self.api_keys is not None:
            return key in self.api_keys
        return key.startswith(self.key_prefix)

    def record(self, request: Request[Any, Any, Any], raw: bytes) -> None:
        scope = request.scope
        self.requests += 1
        self.log.append((str(scope["method"]), scope["path"], scope["query_string"], scope["headers"], raw))

    async def admit(self, request: Request[Any, Any, Any], raw: bytes) -> Call:
        """Log and count the request, parse its body, apply latency and any fault (raised as an ApiError)."""
        self.record(request, raw)
        headers = {k: v for k, v in request.scope["headers"] if k in _HEADER_KEYS}
        body: Any = None
        malformed = False
        if raw:
            try:
                body = _decode(raw)
            except msgspec.DecodeError:
                malformed = True
        stream = type(body) is dict and body.get("stream") is True
        fault = self._take_fault(stream) if self.faults else None
        latency = self.latency_ms
        tokens_per_second = self.tokens_per_second
        if headers:
            latency = _header_float(headers, b"x-sandbox-latency-ms", latency)
            tokens_per_second = _header_float(headers, b"x-sandbox-tokens-per-second", tokens_per_second)
        if fault is not None:
            latency += fault.delay_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        if fault is not None and fault.status is not None and fault.error_after_events is None:
            retry_after = (
                (fault.retry_after if fault.retry_after is not None else 1.0) if fault.status == 429 else None
            )
            raise ApiError(fault.status, fault.message, retry_after=retry_after)
        if malformed:
            raise ApiError(400, self.malformed_json)
        return Call(body, headers, stream, fault, tokens_per_second)

    def _take_fault(self, stream: bool) -> FaultSpec | None:
        """The first pending fault for this request (a stream fault waits for a streamed one)."""
        return take(self.faults, lambda fault: stream or not fault.stream_only)

    async def pace(self, call: Call, tokens: int) -> None:
        """Delay a non-streamed answer as long as streaming its tokens would take."""
        if call.tokens_per_second > 0 and tokens > 0:
            await asyncio.sleep(tokens / call.tokens_per_second)

    def cache_prune(self) -> None:
        if len(self.prompt_cache) > _CACHE_SOFT_LIMIT:
            now = time.monotonic()
            for key in [k for k, expiry in self.prompt_cache.items() if expiry <= now]:
                del self.prompt_cache[key]
            if len(self.prompt_cache) > 10 * _CACHE_SOFT_LIMIT:
                self.prompt_cache.clear()

    # -- streams

    def stream(
        self, events: Iterable[tuple[bytes, bool]], call: Call, error_event: bytes, headers: dict[str, str]
    ) -> Stream:
        """A ``text/event-stream`` response of ``(event bytes, is token delta)`` items."""
        headers["cache-control"] = "no-cache"
        return Stream(
            self._events(events, call.tokens_per_second, call.fault, error_event),
            media_type=SSE,
            status_code=200,
            headers=headers,
        )

    async def _events(
        self,
        events: Iterable[tuple[bytes, bool]],
        tokens_per_second: float,
        fault: FaultSpec | None,
        error: bytes,
    ) -> AsyncIterator[bytes]:
        self.streams_started += 1
        interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        drop_at = fault.disconnect_after_events if fault is not None else None
        error_at = fault.error_after_events if fault is not None else None
        outcome = "cancelled"
        sent = 0
        try:
            for chunk, is_token in events:
                if sent == drop_at:
                    outcome = "dropped"
                    raise StreamDropped(f"sandbox fault: connection dropped after {sent} events")
                if sent == error_at:
                    outcome = "errored"
                    yield error
                    return
                if interval and is_token:
                    await asyncio.sleep(interval)
                elif sent & 31 == 31:
                    # Sending to a gone client returns without suspending; yielding to the loop lets the
                    # disconnect listener cancel this stream, so a long unpaced stream stops too.
                    await asyncio.sleep(0)
                yield chunk
                sent += 1
            outcome = "completed"
        finally:
            if outcome == "completed":
                self.streams_completed += 1
            elif outcome == "cancelled":
                self.streams_cancelled += 1
            elif outcome == "dropped":
                self.streams_dropped += 1
            else:
                self.streams_errored += 1

    # -- controls

    def stats(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_cancelled": self.streams_cancelled,
            "streams_dropped": self.streams_dropped,
            "streams_errored": self.streams_errored,
            "prompt_cache_entries": len(self.prompt_cache),
        }

    def config(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "tokens_per_second": self.tokens_per_second,
            "api_keys": sorted(self.api_keys) if self.api_keys is not None else None,
            "key_prefix": self.key_prefix,
        }

    def logged_requests(self) -> list[dict[str, Any]]:
        entries = []
        for method, path, query, raw_headers, raw in self.log:
            headers: dict[str, str] = {}
            for raw_name, raw_value in raw_headers:
                name = raw_name.decode("latin-1").lower()
                value = raw_value.decode("latin-1")
                if name in _SECRET_HEADERS:
                    value = redact(value)
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            body: Any = None
            if len(raw) > _LOGGED_BODY_LIMIT:
                body = {"sandbox_note": "body not logged", "bytes": len(raw)}
            elif raw:
                try:
                    body = _decode(raw)
                except msgspec.DecodeError:
                    body = raw.decode("utf-8", "replace")
            entries.append(
                {
                    "method": method,
                    "path": path,
                    "query": query.decode("latin-1"),
                    "headers": headers,
                    "body": body,
                }
            )
        return entries


def _header_float(headers: dict[bytes, bytes], name: bytes, default: float) -> float:
    value = headers.get(name)
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def sse_event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


def sse_data(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def json_response(content: bytes, headers: dict[str, str], status: int = 200) -> Response[bytes]:
    return Response(content=content, status_code=status, media_type=JSON, headers=headers)


# ---------------------------------------------------------------------------------------------- handlers


ErrorRenderer = Callable[[ApiError, str], bytes]


def exception_handlers(
    state: ProviderState, render: ErrorRenderer, request_id_header: str, request_id: Callable[[], str]
) -> ExceptionHandlersMap:
    """Every error raised by a provider's handlers answered in that provider's format."""

    def respond(error: ApiError) -> Response[bytes]:
        state.errors += 1
        rid = request_id()
        headers = {request_id_header: rid}
        if error.retry_after is not None:
            seconds = error.retry_after
            headers["retry-after"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        return json_response(render(error, rid), headers, error.status)

    def on_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
        return respond(exc)

    def on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
        return respond(ApiError(exc.status_code, exc.detail or None))

    def on_exception(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        return respond(ApiError(500, f"sandbox internal error: {type(exc).__name__}: {exc}"))

    return {ApiError: on_api_error, HTTPException: on_http_exception, Exception: on_exception}


def _parse_spec(raw: bytes, spec: type[Any], many: bool) -> Any:
    try:
        value = _decode(raw or b"{}")
        if many and isinstance(value, list):
            return [msgspec.convert(item, spec) for item in value]
        converted = msgspec.convert(value, spec)
        return [converted] if many else converted
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(400, f"sandbox control: {exc}") from exc


def control_handlers(state: ProviderState) -> list[HTTPRouteHandler]:
    """The ``/_control/...`` endpoints of one provider (documented in this module's docstring)."""

    def faults_view() -> dict[str, Any]:
        return {"faults": [msgspec.to_builtins(f) for f in state.faults]}

    @post("/_control/faults", status_code=200, include_in_schema=False)
    async def add_faults(request: Request[Any, Any, Any]) -> dict[str, Any]:
        faults: list[FaultSpec] = _parse_spec(await request.body(), FaultSpec, many=True)
        for fault in faults:
            if fault.count < 1:
                raise ApiError(400, "sandbox control: count must be at least 1")
            if fault.status is not None and not 400 <= fault.status <= 599:
                raise ApiError(400, "sandbox control: status must be between 400 and 599")
            if fault.error_after_events is not None and fault.status is None:
                raise ApiError(400, "sandbox control: error_after_events needs a status")
            if fault.status is None and not fault.delay_ms and fault.disconnect_after_events is None:
                raise ApiError(
                    400, "sandbox control: a fault needs status, delay_ms or disconnect_after_events"
                )
        state.faults.extend(faults)
        return faults_view()

    @get("/_control/faults", sync_to_thread=False, include_in_schema=False)
    def list_faults() -> dict[str, Any]:
        return faults_view()

    @delete("/_control/faults", status_code=200, sync_to_thread=False, include_in_schema=False)
    def clear_faults() -> dict[str, Any]:
        state.faults.clear()
        return faults_view()

    @post("/_control/reset", status_code=200, sync_to_thread=False, include_in_schema=False)
    def reset() -> dict[str, str]:
        state.reset()
        return {"status": "reset"}

    @get("/_control/requests", sync_to_thread=False, include_in_schema=False)
    def requests() -> dict[str, Any]:
        return {"requests": state.logged_requests()}

    @get("/_control/stats", sync_to_thread=False, include_in_schema=False)
    def stats() -> dict[str, int]:
        return state.stats()

    @get("/_control/config", sync_to_thread=False, include_in_schema=False)
    def read_config() -> dict[str, Any]:
        return state.config()

    @post("/_control/config", status_code=200, include_in_schema=False)
    async def write_config(request: Request[Any, Any, Any]) -> dict[str, Any]:
        spec: ConfigSpec = _parse_spec(await request.body(), ConfigSpec, many=False)
        if spec.latency_ms is not msgspec.UNSET:
            state.latency_ms = max(0.0, spec.latency_ms)
        if spec.tokens_per_second is not msgspec.UNSET:
            state.tokens_per_second = max(0.0, spec.tokens_per_second)
        if spec.api_keys is not msgspec.UNSET:
            state.api_keys = frozenset(spec.api_keys) if spec.api_keys is not None else None
        return state.config()

    return [add_faults, list_faults, clear_faults, reset, requests, stats, read_config, write_config]


def fallback_handler(state: ProviderState, not_found: Callable[[str, str], ApiError]) -> HTTPRouteHandler:
    """Any other path under the provider's prefix: logged, and answered 404 in the provider's format."""

    @route(
        ["/{path:path}", "/v1/{path:path}"],
        http_method=["GET", "POST", "PUT", "PATCH", "DELETE"],
        status_code=404,
        include_in_schema=False,
    )
    async def unknown(request: Request[Any, Any, Any], path: str) -> None:
        state.record(request, await request.body())
        raise not_found(request.method, request.scope["path"])

    return unknown
