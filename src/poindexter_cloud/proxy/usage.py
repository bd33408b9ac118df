"""Token usage read from upstream answers, whole or streamed, for metering to the token.

Anthropic: ``message_start`` gives every input field (input, cache writes 5m and 1h, cache reads);
``message_delta`` values are cumulative, so a field present there replaces the earlier one and a missing
field is never read as zero. OpenAI: the ``usage`` object (the last chunk of a stream when
``stream_options.include_usage`` is set, which the proxy always asks for); cached prompt tokens are
reported inside ``prompt_tokens`` and split out here.

When a stream is cut (the client left, or the upstream broke), the output so far is estimated from what was
relayed: the characters of text, thinking and tool-argument deltas, one token per four characters, rounded
up. The estimate is marked on the usage event. Input fields come from the upstream. A stream cut before the
upstream reported them (Anthropic's message_start, OpenAI's usage chunk, which comes last) is metered with
the proxy's own input estimate, the one its rate limits reserved, when the client left (the upstream had
the whole request) or output had been relayed (it was answering); an upstream that failed before its first
token is metered with none.
"""

from __future__ import annotations

import msgspec

from poindexter_cloud.billing.pricing import TokenUsage

CHARS_PER_ESTIMATED_TOKEN = 4


class _CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class AnthropicUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None


class _UsageOnly(msgspec.Struct):
    usage: AnthropicUsage | None = None


class _StartMessage(msgspec.Struct):
    message: _UsageOnly


class _Delta(msgspec.Struct):
    text: str = ""
    partial_json: str = ""
    thinking: str = ""


class _DeltaEvent(msgspec.Struct):
    delta: _Delta


_start_decoder = msgspec.json.Decoder(_StartMessage)
_usage_decoder = msgspec.json.Decoder(_UsageOnly)
_delta_decoder = msgspec.json.Decoder(_DeltaEvent)


class AnthropicTally:
    """Accumulates Anthropic usage fields as they arrive; later values replace earlier ones."""

    def __init__(self) -> None:
        self.fields: dict[str, int] = {}
        self.relayed_chars = 0
        self.complete = False

    @property
    def input_known(self) -> bool:
        return "input_tokens" in self.fields

    def merge(self, usage: AnthropicUsage | None) -> None:
        if usage is None:
            return
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            value = getattr(usage, name)
            if value is not None:
                self.fields[name] = value
        if usage.cache_creation is not None:
            for name in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
                value = getattr(usage.cache_creation, name)
                if value is not None:
                    self.fields[name] = value

    def on_event(self, event: bytes, data: bytes) -> None:
        if event == b"content_block_delta":
            delta = _delta_decoder.decode(data).delta
            self.relayed_chars += len(delta.text) + len(delta.partial_json) + len(delta.thinking)
        elif event == b"message_start":
            self.merge(_start_decoder.decode(data).message.usage)
        elif event == b"message_delta":
            self.merge(_usage_decoder.decode(data).usage)
        elif event == b"message_stop":
            self.complete = True

    def usage(self) -> tuple[TokenUsage, bool]:
        """(usage, estimated): output is estimated from relayed text when the stream did not finish."""
        fields = self.fields
        estimated = not self.complete
        output = fields.get("output_tokens", 0)
        if estimated:
            output = max(output, -(-self.relayed_chars // CHARS_PER_ESTIMATED_TOKEN))
        cache_write = fields.get("cache_creation_input_tokens", 0)
        write_1h = fields.get("ephemeral_1h_input_tokens", 0)
        write_5m = fields.get("ephemeral_5m_input_tokens", cache_write - write_1h)
        return TokenUsage(
            input_tokens=fields.get("input_tokens", 0),
            output_tokens=output,
            cache_read_tokens=fields.get("cache_read_input_tokens", 0),
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
        ), estimated


def anthropic_message_usage(body: bytes) -> TokenUsage:
    tally = AnthropicTally()
    tally.merge(_usage_decoder.decode(body).usage)
    tally.complete = True
    return tally.usage()[0]


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class OpenAIUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _OpenAIUsageOnly(msgspec.Struct):
    usage: OpenAIUsage | None = None


class _ChunkDelta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[dict[str, object]] | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _ChunkDelta | None = None
    text: str | None = None  # legacy completions


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: OpenAIUsage | None = None


_openai_usage_decoder = msgspec.json.Decoder(_OpenAIUsageOnly)
_chunk_decoder = msgspec.json.Decoder(_Chunk)


def openai_token_usage(usage: OpenAIUsage | None) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    cached = (usage.prompt_tokens_details.cached_tokens or 0) if usage.prompt_tokens_details else 0
    return TokenUsage(
        input_tokens=usage.prompt_tokens - cached,
        output_tokens=usage.completion_tokens,
        cache_read_tokens=cached,
    )


def openai_body_usage(body: bytes) -> TokenUsage:
    return openai_token_usage(_openai_usage_decoder.decode(body).usage)


class OpenAITally:
    """Reads an OpenAI stream's chunks: the usage chunk, and the output relayed for estimates."""

    def __init__(self) -> None:
        self.final: OpenAIUsage | None = None
        self.relayed_chars = 0
        self.complete = False

    @property
    def input_known(self) -> bool:
        return self.final is not None

    def on_chunk(self, data: bytes) -> bool:
        """Account for one ``data:`` payload; True if it is the usage-only chunk."""
        if data == b"[DONE]":
            self.complete = True
            return False
        chunk = _chunk_decoder.decode(data)
        for choice in chunk.choices:
            if choice.text:
                self.relayed_chars += len(choice.text)
            if choice.delta is not None:
                self.relayed_chars += len(choice.delta.content or "")
                for call in choice.delta.tool_calls or ():
                    function = call.get("function")
                    if isinstance(function, dict):
                        self.relayed_chars += len(str(function.get("arguments") or ""))
        if chunk.usage is not None:
            self.final = chunk.usage
            return not chunk.choices
        return False

    def usage(self) -> tuple[TokenUsage, bool]:
        if self.final is not None:
            return openai_token_usage(self.final), False
        return TokenUsage(output_tokens=-(-self.relayed_chars // CHARS_PER_ESTIMATED_TOKEN)), True
