"""The AI proxy's request pipeline: authenticate, check the plan, reserve limits, forward, meter, settle.

One ``Call`` per client request. Upstream attempts are retried with another key or provider only while
nothing has reached the client; each attempt is metered once, keyed by request id and attempt number.
The final attempt's usage event is written to Redis (in the same script that settles the rate-limit
reservation) before the last byte of the response is sent, so a response the client saw complete is
never lost, even if the process is killed right after. A whole answer leaves as soon as the kernel has
every byte of that script call (`Sent.delivered`), without waiting for Redis's reply: bytes a process
wrote to a socket are delivered even if it is killed. Should Redis then fail to answer, the settle, which
is idempotent, is sent again until it does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from poindexter_cloud.accounts.api_keys import ApiKeyVerifier, KeyPrincipal
from poindexter_cloud.accounts.errors import AccountSuspended, InvalidApiKey
from poindexter_cloud.billing.plans import plan_named
from poindexter_cloud.billing.pricing import PRICE_TABLE_VERSION, TokenUsage, upstream_cost_microdollars
from poindexter_cloud.billing.usage_buffer import UsageBuffer, UsageRecord, encode, stream_for
from poindexter_cloud.core.errors import (
    DEPENDENCY_DOWN,
    DEPENDENCY_RETRY_AFTER_SECONDS,
    REDIS_UNREACHABLE,
    outage_text,
)
from poindexter_cloud.core.http_protocol import ClientLeft, ClientWatch
from poindexter_cloud.core.metrics import (
    ERRORS,
    PROXY_OVERHEAD,
    PROXY_TOKENS,
    UPSTREAM_ERRORS,
    UPSTREAM_LATENCY,
    cached,
)
from poindexter_cloud.core.observe import CLIENT_CLOSED  # the client went away before the response ended
from poindexter_cloud.core.redis_scripts import ScriptClient, Sent
from poindexter_cloud.core.resources import Resources
from poindexter_cloud.core.settings import Settings
from poindexter_cloud.proxy import translate
from poindexter_cloud.proxy.breaker import Breakers
from poindexter_cloud.proxy.entitlements import Entitlements
from poindexter_cloud.proxy.errors import Family, ProxyError, bad_request
from poindexter_cloud.proxy.limits import Limiter, RateLimited, Reservation, anthropic_headers, limits_for
from poindexter_cloud.proxy.limits import openai_headers as openai_limit_headers
from poindexter_cloud.proxy.sse import EventSplitter, fields
from poindexter_cloud.proxy.upstream_http import UpstreamClient, UpstreamConnectionError, UpstreamResponse
from poindexter_cloud.proxy.upstreams import Catalog, Endpoint, Route, parse_upstreams
from poindexter_cloud.proxy.usage import (
    AnthropicTally,
    OpenAITally,
    anthropic_message_usage,
    openai_body_usage,
)

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

DEFAULT_MAX_OUTPUT_TOKENS = 4096
BYTES_PER_ESTIMATED_INPUT_TOKEN = 3  # conservative: real text averages about four
FORWARDED_REQUEST_HEADERS = (
    b"anthropic-version",
    b"anthropic-beta",
    b"openai-organization",
    b"openai-project",
)
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
OUTAGE_WARNING_INTERVAL_SECONDS = 10.0
SETTLE_RETRIES = 600  # a settle that failed after the answer left is sent again each second, for 10 minutes


class RequestHead(msgspec.Struct):
    """The few fields of a request body the proxy itself needs; the rest passes through untouched."""

    model: str | None = None
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


_head_decoder = msgspec.json.Decoder(RequestHead)

# Metric children, resolved once per label set (core/metrics.py).
_tokens = cached(PROXY_TOKENS)
_overhead = cached(PROXY_OVERHEAD)
_upstream_latency = cached(UPSTREAM_LATENCY)
_upstream_errors = cached(UPSTREAM_ERRORS)
_errors = cached(ERRORS)


def limits_unavailable(exc: BaseException) -> ProxyError:
    """Without Redis no limit can be checked and no usage recorded: nothing is forwarded, and the client
    is told to retry (503 and retry-after, which both SDKs retry)."""
    _warn_now_and_then("rate limits unavailable, answering 503", exc)
    return ProxyError(
        503,
        "limits_unavailable",
        "The service cannot check rate limits right now; nothing was sent upstream. Retry shortly.",
        headers=[(b"retry-after", b"1")],
    )


def store_unavailable(exc: BaseException) -> ProxyError:
    """PostgreSQL (or Redis outside the limits) unreachable where the request needed it, such as a key or
    plan no cache holds: retried like a refused limit check, not a 500."""
    _warn_now_and_then("a store is unavailable, answering 503", exc)
    return ProxyError(
        503,
        "unavailable",
        "The service is briefly unavailable; nothing was sent upstream. Retry shortly.",
        headers=[(b"retry-after", str(DEPENDENCY_RETRY_AFTER_SECONDS).encode())],
    )


def _warn_now_and_then(what: str, exc: BaseException) -> None:
    """One warning every OUTAGE_WARNING_INTERVAL_SECONDS at most: an outage fails every request."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= OUTAGE_WARNING_INTERVAL_SECONDS:
        _warned_at = now
        log.warning("%s: %s", what, outage_text(exc))


_warned_at = -math.inf


def upstream_failure_reason(status: int | None) -> str:
    """The bounded reason label of a failed upstream attempt."""
    if status is None:
        return "connect"
    if status in (401, 403):
        return "auth"
    return "http_429" if status == 429 else "http_5xx" if status >= 500 else f"http_{status}"


class ProxyRuntime:
    """Everything one proxy process shares across requests."""

    def __init__(self, resources: Resources, verifier: ApiKeyVerifier) -> None:
        settings = resources.settings
        self.settings: Settings = settings
        self.catalog = Catalog(parse_upstreams(settings.upstreams_json))
        self.verifier = verifier
        self.entitlements = Entitlements(resources.db, verifier)
        self.scripts = ScriptClient(settings.redis_url)
        self.limiter = Limiter(resources.redis, scripts=self.scripts)
        self.usage_stream = stream_for(settings.queue_name)
        self.buffer = UsageBuffer(resources.redis, stream=self.usage_stream)
        self.breakers = Breakers(settings.proxy_breaker_failures, settings.proxy_breaker_open_seconds)
        self.http = UpstreamClient(
            connect_timeout=settings.proxy_connect_timeout_seconds,
            read_timeout=settings.proxy_read_timeout_seconds,
        )

    async def stop(self) -> None:
        await self.entitlements.stop()
        await self.http.close()
        await self.scripts.close()

    async def serve(self, endpoint: Endpoint, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        call = Call(self, endpoint, scope, receive, send)
        try:
            await call.run()
        except ProxyError as error:
            await call.fail(error)
        except DEPENDENCY_DOWN as exc:
            await call.fail(store_unavailable(exc))
        except Exception:
            log.exception("proxy request failed")
            await call.fail(
                ProxyError(500, "internal_error", "The proxy failed; the request was not completed.")
            )


def header_map(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ProxyError(CLIENT_CLOSED, "client_closed", "The client closed the connection.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ProxyError(413, "request_too_large", f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Call:
    """One client request, from its first byte to its usage event."""

    def __init__(
        self, runtime: ProxyRuntime, endpoint: Endpoint, scope: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        self.rt = runtime
        self.endpoint = endpoint
        self.family: Family = "anthropic" if endpoint in ("messages", "count_tokens") else "openai"
        self.scope, self.receive, self.send = scope, receive, send
        self.headers = header_map(scope)
        self.watch = ClientWatch(scope)  # while the proxy waits for the upstream or relays its stream
        self.request_id: str = scope["state"]["request_id"]
        self.started = time.perf_counter()
        self.upstream_seconds = 0.0
        self.principal: KeyPrincipal | None = None
        self.plan = "none"
        self.reservation: Reservation | None = None
        self.attempt = 0
        self.response_started = False
        self.settled = False
        self.limit_headers: list[tuple[bytes, bytes]] = []

    # --- the pipeline ---------------------------------------------------------------------------------

    async def run(self) -> None:
        principal = await self.authenticate()
        entitlement = await self.rt.entitlements.of(principal.user_id)
        if entitlement.state == "suspended":
            raise ProxyError(
                403,
                "subscription_suspended",
                "AI access is suspended because the last payment failed; update your payment "
                "method in the Poindexter Cloud console to resume.",
            )
        if entitlement.state != "active" or entitlement.plan is None:
            raise ProxyError(
                402,
                "subscription_required",
                "Your credit balance is too low: this account has no active Poindexter Cloud "
                "subscription. Subscribe in the console (or POST /v1/billing/subscribe).",
            )
        self.plan = entitlement.plan
        body = await read_body(self.receive, self.rt.settings.proxy_max_body_bytes)
        try:
            head = _head_decoder.decode(body)
        except msgspec.DecodeError:
            raise bad_request("The request body is not valid JSON.") from None
        except msgspec.ValidationError as exc:
            raise bad_request(f"The request body is not valid: {exc}.") from None
        if not head.model:
            raise bad_request("model: a model is required.", param="model")
        routes = self.routes_for(head.model)
        limits = limits_for(plan_named(entitlement.plan), entitlement.spend_cap_microdollars)
        estimate = TokenUsage(
            input_tokens=len(body) // BYTES_PER_ESTIMATED_INPUT_TOKEN + 1,
            output_tokens=0
            if self.endpoint in ("count_tokens", "embeddings")
            else (head.max_tokens or head.max_completion_tokens or DEFAULT_MAX_OUTPUT_TOKENS),
        )
        try:
            self.reservation = await self.rt.limiter.reserve(
                principal.key_id,
                principal.user_id,
                limits,
                estimate.input_tokens + estimate.output_tokens,
                upstream_cost_microdollars(routes[0].model, estimate),
            )
        except RateLimited as limited:
            raise self.rate_limited(limited) from None
        except REDIS_UNREACHABLE as exc:
            raise limits_unavailable(exc) from None
        self.limit_headers = self.limit_header_list(self.reservation)
        status = CLIENT_CLOSED
        try:
            await self.forward(routes, body, head, estimate)
        except ProxyError as error:
            status = error.status
            raise
        except Exception:
            status = 500  # what serve() answers
            raise
        finally:
            if not self.settled:  # failed before any usage: release the reservation, record the attempt
                await self.settle(routes[0], TokenUsage(), estimated=False, status=status)

    async def authenticate(self) -> KeyPrincipal:
        key = self.headers.get(b"x-api-key")
        if key is None:
            authorization = self.headers.get(b"authorization", b"")
            if authorization[:7].lower() == b"bearer ":
                key = authorization[7:].strip()
        if not key:
            raise ProxyError(
                401,
                "missing_api_key",
                "Send your Poindexter Cloud API key as x-api-key or Authorization: Bearer.",
            )
        client = self.scope.get("client")
        try:
            self.principal = await self.rt.verifier.verify(
                key.decode("latin-1"), client[0] if client else None
            )
        except InvalidApiKey as exc:
            raise ProxyError(401, exc.code, exc.message) from None
        except AccountSuspended as exc:
            raise ProxyError(403, exc.code, exc.message) from None
        return self.principal

    def routes_for(self, model: str) -> list[Route]:
        lookup: Endpoint = self.endpoint
        routes = self.rt.catalog.routes(lookup, model)
        if routes:
            return routes
        if any(
            self.rt.catalog.routes(other, model)
            for other in ("messages", "chat", "completions", "embeddings")
        ):
            raise bad_request(
                f"model: {model} is not available on this endpoint.",
                param="model",
                code="model_not_supported_here",
            )
        raise ProxyError(
            404, "model_not_found", f"model: {model} is not a model this service offers.", param="model"
        )

    # --- upstream attempts ----------------------------------------------------------------------------

    async def forward(
        self, routes: list[Route], body: bytes, head: RequestHead, estimate: TokenUsage
    ) -> None:
        candidates = [(route, key) for route in routes for key in route.upstream.api_keys]
        candidates = self.rt.breakers.order(candidates)[: self.rt.settings.proxy_max_attempts]
        last_error: ProxyError | None = None
        for index, (route, upstream_key) in enumerate(candidates):
            self.attempt = index
            final = index == len(candidates) - 1
            translated = route.upstream.kind == "anthropic" and self.endpoint == "chat"
            headers, payload = self.upstream_request(route, upstream_key, body, head, translated)
            sent_at = time.perf_counter()
            response: UpstreamResponse | None = None
            asked = False
            try:
                with self.watch:  # waiting for the upstream, the proxy still hears the client hang up
                    connection = await self.rt.http.connection(route.target)
                    asked = True
                    response = await self.rt.http.post(route.target, headers, payload, connection)
                    _upstream_latency(route.upstream.name).observe(time.perf_counter() - sent_at)
                    streamed = head.stream and response.status == 200
                    answer = b"" if streamed else await response.read()
                if not streamed:
                    self.upstream_seconds += time.perf_counter() - sent_at
                if response.status in RETRYABLE or response.status in (401, 403):
                    _upstream_errors(route.upstream.name, upstream_failure_reason(response.status)).inc()
                    self.rt.breakers.failure(upstream_key)
                    last_error = self.upstream_error(route, response.status, answer, response.headers)
                    if not final:
                        await self.record_failed_attempt(route, response.status)
                    continue
                self.rt.breakers.success(upstream_key)
                if streamed:
                    await self.relay_stream(route, response, sent_at, translated, head, estimate)
                else:
                    await self.relay_whole(route, response, answer, translated, head)
                return
            except ClientLeft:
                # Nobody will read the answer: its connection is closed below, so the upstream stops. If it
                # had the request, it is billed at our input estimate (docs/architecture.md, metering).
                self.upstream_seconds += time.perf_counter() - sent_at
                usage = TokenUsage(input_tokens=estimate.input_tokens) if asked else TokenUsage()
                await self.settle(route, usage, estimated=asked, status=CLIENT_CLOSED)
                return
            except UpstreamConnectionError as exc:
                if self.response_started:
                    raise
                # Unreachable, or broke off before its answer was complete: nothing reached the client.
                self.upstream_seconds += time.perf_counter() - sent_at
                _upstream_errors(route.upstream.name, upstream_failure_reason(None)).inc()
                self.rt.breakers.failure(upstream_key)
                last_error = ProxyError(
                    502,
                    "upstream_unavailable",
                    f"The upstream provider did not answer ({type(exc).__name__}).",
                )
                if not final:
                    await self.record_failed_attempt(route, 502)
            finally:
                if response is not None:
                    response.release()
        raise last_error or ProxyError(502, "upstream_unavailable", "No upstream provider is available.")

    def upstream_request(
        self, route: Route, key: str, body: bytes, head: RequestHead, translated: bool
    ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        upstream = route.upstream
        headers = [(b"content-type", b"application/json")]
        for name in FORWARDED_REQUEST_HEADERS:
            value = self.headers.get(name)
            if value is not None:
                headers.append((name, value))
        if upstream.kind == "anthropic":
            headers.append((b"x-api-key", key.encode()))
            if b"anthropic-version" not in self.headers:
                headers.append((b"anthropic-version", b"2023-06-01"))
            if translated:
                try:
                    payload = translate.chat_to_messages(msgspec.json.decode(body), route.model)
                except translate.UntranslatableRequest as exc:
                    raise bad_request(exc.message, param=exc.param, code=exc.code) from None
                return headers, msgspec.json.encode(payload)
        else:
            headers.append((b"authorization", b"Bearer " + key.encode()))
        rewrite: dict[str, Any] = {}
        if route.model != head.model:
            rewrite["model"] = route.model
        if upstream.kind == "openai-compatible" and head.stream and self.endpoint in ("chat", "completions"):
            rewrite["stream_options"] = {"include_usage": True}  # usage in the stream; stripped if unasked
        if rewrite:
            payload = msgspec.json.decode(body)
            if "stream_options" in rewrite:
                options = payload.get("stream_options") or {}
                self.client_wants_usage = bool(options.get("include_usage"))
                rewrite["stream_options"] = {**options, "include_usage": True}
            body = msgspec.json.encode({**payload, **rewrite})
        return headers, body

    client_wants_usage = True

    def upstream_error(self, route: Route, status: int, body: bytes, headers: dict[str, str]) -> ProxyError:
        """An upstream failure, said in the caller's API family; our upstream keys never reach the client."""
        if status in (401, 403):
            return ProxyError(502, "upstream_auth_failed", "The upstream provider refused our credentials.")
        message = "The upstream provider failed."
        try:
            decoded = msgspec.json.decode(body)
            message = str(decoded.get("error", {}).get("message") or message)
        except (msgspec.DecodeError, AttributeError):
            pass
        extra: list[tuple[bytes, bytes]] = []
        retry_after = headers.get("retry-after")
        if retry_after:
            extra.append((b"retry-after", retry_after.encode()))
        client_status = status if status in (429, 529) or status < 500 else 502
        if status == 529 and self.family == "openai":
            client_status = 503
        return ProxyError(client_status, "upstream_error", f"{route.upstream.name}: {message}", headers=extra)

    async def record_failed_attempt(self, route: Route, status: int) -> None:
        assert self.principal is not None
        try:
            await self.rt.buffer.push(self.usage_record(route, TokenUsage(), False, status))
        except REDIS_UNREACHABLE as exc:
            raise limits_unavailable(exc) from None

    # --- answering ------------------------------------------------------------------------------------

    async def relay_whole(
        self,
        route: Route,
        response: UpstreamResponse,
        body: bytes,
        translated: bool,
        head: RequestHead,
    ) -> None:
        status = response.status
        usage = TokenUsage()
        if status == 200:
            try:
                usage = self.whole_usage(route, body)
                if translated:
                    body = msgspec.json.encode(
                        translate.message_to_chat(
                            msgspec.json.decode(body), head.model or route.model, int(time.time())
                        )
                    )
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.warning("unreadable upstream answer", extra={"upstream": route.upstream.name})
        elif status >= 400 and (route.upstream.kind == "anthropic") != (self.family == "anthropic"):
            raise self.upstream_error(route, status, body, response.headers)  # said in the caller's format
        sent = self.send_settle(route, usage, estimated=False, status=status)
        if sent is not None and not await sent.delivered():
            await self.settled_by(sent)  # Redis must have the usage event before the answer leaves
            sent = None
        await self.start_response(status, response.headers.get("content-type", "application/json"), len(body))
        await self.send({"type": "http.response.body", "body": body})
        if sent is not None:
            await self.settle_after_answer(sent)

    def whole_usage(self, route: Route, body: bytes) -> TokenUsage:
        if route.upstream.kind == "anthropic":
            return anthropic_message_usage(body) if self.endpoint != "count_tokens" else TokenUsage()
        return openai_body_usage(body)

    async def relay_stream(
        self,
        route: Route,
        response: UpstreamResponse,
        sent_at: float,
        translated: bool,
        head: RequestHead,
        estimate: TokenUsage,
    ) -> None:
        """Relay events as they arrive; meter from the stream itself; stop the upstream if the client goes."""
        await self.start_response(200, "text/event-stream; charset=utf-8")
        client_left = False
        try:
            with self.watch:
                await self.pump(route, response, translated, head, estimate)
            return
        except ClientLeft:
            client_left = True
            response.close()  # stop reading: the upstream connection closes at once
        except Exception as failure:
            log.warning(
                "stream relay failed: %s: %s",
                type(failure).__name__,
                failure,
                extra={"upstream": route.upstream.name},
                exc_info=not isinstance(failure, ConnectionError | TimeoutError),
            )
        finally:
            self.upstream_seconds += time.perf_counter() - sent_at
        tally = self.tally
        if tally is not None and not self.settled:
            usage, _ = tally.usage()
            if not tally.input_known and (client_left or usage.output_tokens):
                # the upstream had the request (or was answering it) but never said its input: our estimate
                usage = msgspec.structs.replace(usage, input_tokens=estimate.input_tokens)
            await self.settle(route, usage, estimated=True, status=CLIENT_CLOSED if client_left else 502)

    tally: AnthropicTally | OpenAITally | None = None

    async def pump(
        self,
        route: Route,
        response: UpstreamResponse,
        translated: bool,
        head: RequestHead,
        estimate: TokenUsage,
    ) -> None:
        splitter = EventSplitter()
        send = self.send
        if route.upstream.kind == "anthropic":
            tally = AnthropicTally()
            self.tally = tally
            translator = (
                translate.StreamTranslator(head.model or "", int(time.time()), self.client_wants_usage)
                if translated
                else None
            )
            async for chunk in response.iter_chunks():
                out: list[bytes] = []
                for block in splitter.feed(chunk):
                    event, data = fields(block)
                    tally.on_event(event, data)
                    if event == b"message_stop" and not self.settled:
                        await self.settle(route, tally.usage()[0], estimated=False, status=200)
                    if translator is None:
                        out.append(block)
                    else:
                        out.append(translator.feed(event.decode(), msgspec.json.decode(data)))
                if translator is not None and tally.complete:
                    out.append(translator.finish())
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
        else:
            openai_tally = OpenAITally()
            self.tally = openai_tally
            async for chunk in response.iter_chunks():
                out = []
                for block in splitter.feed(chunk):
                    _, data = fields(block)
                    usage_only = openai_tally.on_chunk(data)
                    if data == b"[DONE]" and not self.settled:
                        usage, estimated = openai_tally.usage()
                        await self.settle(route, usage, estimated=estimated, status=200)
                    if not usage_only or self.client_wants_usage:
                        out.append(block)
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
        if not self.settled:  # the upstream ended without its final event
            raise ConnectionError("the upstream stream ended early")
        await send({"type": "http.response.body", "body": splitter.pending, "more_body": False})

    async def start_response(self, status: int, content_type: str, length: int | None = None) -> None:
        """The head; ``length`` for a whole body (so it is not sent chunked), None for a stream."""
        overhead = time.perf_counter() - self.started - self.upstream_seconds
        _overhead(self.family).observe(overhead)
        overhead_ms = overhead * 1000
        headers = [
            (b"content-type", content_type.encode()),
            (b"request-id", self.request_id.encode()),
            (
                b"server-timing",
                f"proxy;dur={overhead_ms:.3f}, upstream;dur={self.upstream_seconds * 1000:.3f}".encode(),
            ),
            *self.limit_headers,
        ]
        if length is not None:
            headers.append((b"content-length", b"%d" % length))
        elif content_type.startswith("text/event-stream"):
            headers.append((b"cache-control", b"no-cache"))
        self.response_started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def fail(self, error: ProxyError) -> None:
        if self.response_started or error.status == CLIENT_CLOSED:
            return
        _errors(error.status, error.code).inc()
        body = error.body(self.family, self.request_id)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"request-id", self.request_id.encode()),
            *self.limit_headers,
            *error.headers,
        ]
        self.response_started = True
        await self.send({"type": "http.response.start", "status": error.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    # --- limits and metering --------------------------------------------------------------------------

    def limit_header_list(self, reservation: Reservation) -> list[tuple[bytes, bytes]]:
        build = anthropic_headers if self.family == "anthropic" else openai_limit_headers
        return build(reservation.state)

    def rate_limited(self, limited: RateLimited) -> ProxyError:
        if limited.scope == "spend":
            return ProxyError(
                402,
                "spending_cap_reached",
                "Your credit balance is too low: this month's spending cap is reached.",
            )
        if limited.permanent:
            return bad_request(
                f"This request could never fit the plan's {limited.dimension} per minute "
                f"for this {limited.scope}: lower max_tokens or shorten the input.",
                code="request_exceeds_limit",
            )
        build = anthropic_headers if self.family == "anthropic" else openai_limit_headers
        headers = build(limited.headers_state)  # includes retry-after
        return ProxyError(
            429,
            "rate_limited",
            f"Rate limit reached: {limited.dimension} per minute for this {limited.scope}. "
            f"Retry after {limited.retry_after} s.",
            headers=headers,
        )

    def usage_record(self, route: Route, usage: TokenUsage, estimated: bool, status: int) -> UsageRecord:
        assert self.principal is not None
        return UsageRecord(
            request_id=self.request_id,
            attempt=self.attempt,
            user_id=self.principal.user_id,
            api_key_id=self.principal.key_id,
            event_type="ai_request",
            model=route.model,
            provider=route.upstream.name,
            usage=usage,
            cost_microdollars=upstream_cost_microdollars(route.model, usage),
            latency_ms=int((time.perf_counter() - self.started) * 1000),
            status=status,
            estimated=estimated,
            created_at_us=int(time.time() * 1_000_000),
            price_version=PRICE_TABLE_VERSION,
        )

    async def settle(self, route: Route, usage: TokenUsage, *, estimated: bool, status: int) -> None:
        """Settle the reservation to the real usage and store the usage event: one Redis round trip."""
        sent = self.send_settle(route, usage, estimated=estimated, status=status)
        if sent is not None:
            await self.settled_by(sent)

    async def settled_by(self, sent: Sent) -> None:
        try:
            await sent
        except REDIS_UNREACHABLE as exc:  # unrecorded, so the answer is not sent: the client retries
            raise limits_unavailable(exc) from None

    def send_settle(self, route: Route, usage: TokenUsage, *, estimated: bool, status: int) -> Sent | None:
        """The settle of `settle`, written to Redis now (None if the call is settled already)."""
        if self.settled or self.reservation is None:
            return None
        self.settled = True
        record = self.usage_record(route, usage, estimated, status)
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_5m_tokens + usage.cache_write_1h_tokens),
        ):
            if count:
                _tokens(route.model, self.plan, kind).inc(count)
        tokens = (
            usage.input_tokens
            + usage.output_tokens
            + usage.cache_read_tokens
            + usage.cache_write_5m_tokens
            + usage.cache_write_1h_tokens
        )
        self.usage_event = encode(record)
        self.resend_settle = functools.partial(
            self.rt.limiter.settle,
            self.reservation,
            tokens,
            record.cost_microdollars,
            stream=self.rt.usage_stream,
            stream_fields={"e": self.usage_event},
        )
        return self.resend_settle()

    resend_settle: Callable[[], Sent]
    usage_event = b""

    async def settle_after_answer(self, sent: Sent) -> None:
        """Redis's answer to a settle written before the client's answer left. If Redis failed meanwhile,
        the settle may or may not have run; settling is idempotent, so it is sent again every second until
        Redis answers. The request does not fail: its client has the answer."""
        failures = 0
        while True:
            try:
                await sent
                return
            except REDIS_UNREACHABLE as exc:
                failures += 1
                if failures > SETTLE_RETRIES:
                    log.error(
                        "usage event lost: Redis never answered its settle",
                        extra={"usage_event": self.usage_event.decode()},
                    )
                    return
                if failures == 1:
                    log.warning("settle after the answer failed, retrying: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(1.0)
            sent = self.resend_settle()

    # --- the models list (no upstream call) ------------------------------------------------------------

    async def list_models(self) -> None:
        """Anthropic's list format when the caller speaks Anthropic (``anthropic-version`` or
        ``x-api-key``), OpenAI's otherwise."""
        await self.authenticate()
        models = self.rt.catalog.models()
        if b"anthropic-version" in self.headers or b"x-api-key" in self.headers:
            self.family = "anthropic"
            data = [
                {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
                for name, _ in models
            ]
            body = {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        else:
            body = {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 1735689600, "owned_by": upstream.name}
                    for name, upstream in models
                ],
            }
        encoded = msgspec.json.encode(body)
        await self.start_response(200, "application/json", len(encoded))
        await self.send({"type": "http.response.body", "body": encoded})
