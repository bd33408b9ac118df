"""OpenAI Chat Completions <-> Anthropic Messages translation, for models an Anthropic upstream serves.

Pure functions and one small state machine, no I/O:

* :func:`chat_to_messages`: an OpenAI ``POST /v1/chat/completions`` body -> an Anthropic ``POST /v1/messages``
  body. Anything we cannot honour raises :class:`UntranslatableRequest` (the proxy answers it as an
  OpenAI-format 400); nothing is silently dropped.
* :func:`message_to_chat`: an Anthropic Message -> an OpenAI ``chat.completion``.
* :class:`StreamTranslator`: Anthropic SSE events -> OpenAI ``chat.completion.chunk`` SSE frames.
* :func:`anthropic_usage_to_openai`, :func:`anthropic_error_to_openai`: shared by both paths.

Request rules and decisions:

* A top-level key whose value is JSON ``null`` counts as absent (OpenAI's meaning of ``null``), except that
  an unknown key is refused whatever its value (``Unrecognized request argument supplied: <key>``).
* ``max_tokens`` is required by Anthropic; without ``max_tokens``/``max_completion_tokens`` we send
  :data:`DEFAULT_MAX_TOKENS` (4096; the ``default_max_tokens`` argument overrides it). OpenAI's own default
  is the model's whole output budget, so a long answer may stop earlier here, with ``finish_reason:
  "length"``.
* Parameters Anthropic has no equivalent for are refused, unless set to their neutral value, which is
  trivially honoured: ``n: 1``, ``logprobs: false``, ``top_logprobs: 0``, ``presence_penalty: 0``,
  ``frequency_penalty: 0``, ``logit_bias: {}``, ``response_format: {"type": "text"}``, ``modalities:
  ["text"]``, ``store: false``, ``service_tier: "auto" | "default"``, ``reasoning_effort: "none"``,
  ``verbosity: "medium"``. ``seed``, ``audio``, ``prediction``, ``functions``, ``function_call``,
  ``web_search_options``, ``prompt_cache_key``, ``prompt_cache_retention`` are refused whenever set.
* ``temperature`` above 1 is refused (Anthropic's range is 0-1, OpenAI's 0-2; rescaling would change the
  sampling the client asked for). ``temperature`` and ``top_p`` are passed on as given, but Anthropic has
  deprecated sampling parameters: its SDK dropped them from ``messages.create`` in 1.0 (they remain wire
  parameters under ``anthropic-version: 2023-06-01``), and newer models answer 400 to them (some to both
  together); that upstream 400 reaches the client rather than the parameter being dropped.
* ``user``, ``safety_identifier`` (OpenAI's successor of ``user``) and ``metadata.user`` become
  ``metadata.user_id``; other ``metadata`` keys are refused (OpenAI keeps them with stored completions).
* A message ``name`` (participant name) has no Anthropic equivalent and is refused; ``image_url.detail``
  ``"low"`` is refused (Anthropic cannot be asked to downscale), ``"auto"``/``"high"``/``"original"`` are
  accepted (Anthropic reads images at full resolution up to its own limit).
* System and developer messages, wherever they appear, are hoisted to the top-level ``system``: text parts
  and messages are joined with a blank line.
* Consecutive same-role messages are merged (``tool`` messages count as ``user``); in a user turn the
  ``tool_result`` blocks are moved before other blocks, as Anthropic requires. Empty text is skipped
  (Anthropic refuses empty text blocks), and a message left with nothing is omitted.
* Tool call ``arguments`` of ``""`` mean ``{}``; other invalid JSON, or JSON that is not an object, is
  refused. ``function.strict`` maps to the Anthropic tool's ``strict``.
* A conversation may start with an assistant turn, and a final assistant message is sent as-is, which
  Anthropic treats as a prefill that its reply continues.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import msgspec

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "StreamTranslator",
    "UntranslatableRequest",
    "anthropic_error_to_openai",
    "anthropic_usage_to_openai",
    "chat_to_messages",
    "message_to_chat",
]

DEFAULT_MAX_TOKENS: Final = 4096
"""``max_tokens`` sent upstream when the client set neither ``max_tokens`` nor ``max_completion_tokens``."""

_encode: Final = msgspec.json.Encoder().encode
_decode: Final = msgspec.json.Decoder().decode


class UntranslatableRequest(Exception):
    """A request we cannot translate faithfully; the proxy answers it as an OpenAI-format 400.

    ``param`` names the offending field (``"seed"``, ``"messages[2].content[0].image_url.url"``); ``code``
    is ``unsupported_parameter`` (no Anthropic equivalent), ``unsupported_value`` (e.g. temperature > 1),
    ``unknown_parameter``, ``invalid_value`` or ``invalid_type`` (a malformed request).
    """

    def __init__(self, message: str, param: str | None = None, code: str = "unsupported_parameter") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": self.code,
            }
        }


# ---------------------------------------------------------------------------------------------- helpers


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _invalid_type(param: str, expected: str) -> UntranslatableRequest:
    return UntranslatableRequest(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


def _invalid_value(param: str, message: str) -> UntranslatableRequest:
    return UntranslatableRequest(message, param, "invalid_value")


def _unsupported(param: str, message: str) -> UntranslatableRequest:
    return UntranslatableRequest(message, param, "unsupported_parameter")


def _unknown(param: str) -> UntranslatableRequest:
    return UntranslatableRequest(
        f"Unrecognized request argument supplied: {param}", param, "unknown_parameter"
    )


_FOR_ANTHROPIC: Final = "with a model served by Anthropic"

# Top-level parameters Anthropic cannot honour: (accepts the value as neutral, the refusal's message).
_NEUTRAL: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "n": (lambda v: _is_int(v) and v == 1, f"'n' other than 1 is not supported {_FOR_ANTHROPIC}."),
    "logprobs": (lambda v: v is False, f"'logprobs' is not supported {_FOR_ANTHROPIC}."),
    "top_logprobs": (lambda v: _is_int(v) and v == 0, f"'top_logprobs' is not supported {_FOR_ANTHROPIC}."),
    "presence_penalty": (
        lambda v: _is_number(v) and v == 0,
        f"A non-zero 'presence_penalty' is not supported {_FOR_ANTHROPIC}.",
    ),
    "frequency_penalty": (
        lambda v: _is_number(v) and v == 0,
        f"A non-zero 'frequency_penalty' is not supported {_FOR_ANTHROPIC}.",
    ),
    "logit_bias": (lambda v: v == {}, f"'logit_bias' is not supported {_FOR_ANTHROPIC}."),
    "response_format": (
        lambda v: v == {"type": "text"},
        f'\'response_format\' other than {{"type": "text"}} is not supported {_FOR_ANTHROPIC}.',
    ),
    "seed": (lambda v: False, f"'seed' is not supported {_FOR_ANTHROPIC}."),
    "audio": (lambda v: False, f"Audio output ('audio') is not supported {_FOR_ANTHROPIC}."),
    "modalities": (
        lambda v: v == ["text"],
        f"'modalities' other than [\"text\"] is not supported {_FOR_ANTHROPIC}.",
    ),
    "prediction": (lambda v: False, f"'prediction' (predicted outputs) is not supported {_FOR_ANTHROPIC}."),
    "functions": (
        lambda v: False,
        f"The legacy 'functions' parameter is not supported {_FOR_ANTHROPIC}; use 'tools' instead.",
    ),
    "function_call": (
        lambda v: False,
        f"The legacy 'function_call' parameter is not supported {_FOR_ANTHROPIC}; use 'tool_choice' instead.",
    ),
    "web_search_options": (lambda v: False, f"'web_search_options' is not supported {_FOR_ANTHROPIC}."),
    "service_tier": (
        lambda v: v in ("auto", "default"),
        f'\'service_tier\' other than "auto" or "default" is not supported {_FOR_ANTHROPIC}.',
    ),
    "store": (lambda v: v is False, f"'store' (stored completions) is not supported {_FOR_ANTHROPIC}."),
    "reasoning_effort": (
        lambda v: v == "none",
        f"'reasoning_effort' is not supported {_FOR_ANTHROPIC}.",
    ),
    "verbosity": (lambda v: v == "medium", f"'verbosity' is not supported {_FOR_ANTHROPIC}."),
    "prompt_cache_key": (lambda v: False, f"'prompt_cache_key' is not supported {_FOR_ANTHROPIC}."),
    "prompt_cache_retention": (
        lambda v: False,
        f"'prompt_cache_retention' is not supported {_FOR_ANTHROPIC}.",
    ),
}

# Top-level keys translated below, or accepted and ignored (``model``: the caller routes by it and passes
# ``upstream_model``; ``stream_options``: the caller reads ``include_usage`` for the StreamTranslator).
_TRANSLATED: Final = frozenset(
    {
        "model",
        "messages",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "metadata",
    }
)

_IMAGE_MEDIA_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_MESSAGE_KEYS: Final = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "refusal", "audio", "function_call"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}


# ---------------------------------------------------------------------------------------------- requests


def _text_of(content: Any, param: str) -> list[str]:
    """The texts of a string or text-parts content (system, developer and tool messages)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _invalid_type(param, "a string or an array of text content parts")
    texts: list[str] = []
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _invalid_type(part_param, "an object")
        if part.get("type") != "text":
            raise _invalid_value(
                f"{part_param}.type", f"Only 'text' content parts are supported in '{param}'."
            )
        texts.append(_text_part(part, part_param))
    return texts


def _text_part(part: dict[str, Any], param: str) -> str:
    for key in part:
        if key not in ("type", "text"):
            raise _unknown(f"{param}.{key}")
    text = part.get("text")
    if not isinstance(text, str):
        raise _invalid_type(f"{param}.text", "a string")
    return text


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    for key in part:
        if key not in ("type", "image_url"):
            raise _unknown(f"{param}.{key}")
    image = part.get("image_url")
    if isinstance(image, str):
        url: Any = image
    elif isinstance(image, dict):
        for key in image:
            if key not in ("url", "detail"):
                raise _unknown(f"{param}.image_url.{key}")
        detail = image.get("detail")
        if detail == "low":
            raise _unsupported(
                f"{param}.image_url.detail", f"Image 'detail': \"low\" is not supported {_FOR_ANTHROPIC}."
            )
        if detail not in (None, "auto", "high", "original"):
            raise _invalid_value(f"{param}.image_url.detail", f"Invalid image 'detail': {detail!r}.")
        url = image.get("url")
    else:
        raise _invalid_type(f"{param}.image_url", "an object")
    url_param = f"{param}.image_url.url"
    if not isinstance(url, str):
        raise _invalid_type(url_param, "a string")
    if url[:5].lower() == "data:":
        header, comma, data = url[5:].partition(",")
        if not comma:
            raise _invalid_value(url_param, "Invalid image data URL: no ',' before the data.")
        fields = header.split(";")
        media_type = fields[0].strip().lower()
        if media_type == "image/jpg":
            media_type = "image/jpeg"
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise UntranslatableRequest(
                f"Unsupported image media type {media_type!r} {_FOR_ANTHROPIC}: use image/jpeg, image/png, "
                "image/gif or image/webp.",
                url_param,
                "unsupported_value",
            )
        if not any(field.strip().lower() == "base64" for field in fields[1:]):
            data = base64.b64encode(unquote_to_bytes(data)).decode("ascii")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url[:8].lower() == "https://" or url[:7].lower() == "http://":
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise UntranslatableRequest(
        "Image URLs must be http(s) URLs or base64 data URLs.", url_param, "invalid_value"
    )


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid_type(param, "a string or an array of content parts")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _invalid_type(part_param, "an object")
        kind = part.get("type")
        if kind == "text":
            text = _text_part(part, part_param)
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part, part_param))
        elif kind in ("input_audio", "file"):
            raise UntranslatableRequest(
                f"'{kind}' content parts are not supported {_FOR_ANTHROPIC}.", f"{part_param}.type"
            )
        else:
            raise _invalid_value(f"{part_param}.type", f"Unknown content part type: {kind!r}.")
    return blocks


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    content_param = f"{param}.content"
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        for j, part in enumerate(content):
            part_param = f"{content_param}[{j}]"
            if not isinstance(part, dict):
                raise _invalid_type(part_param, "an object")
            kind = part.get("type")
            if kind == "text":
                text = _text_part(part, part_param)
            elif kind == "refusal":
                for key in part:
                    if key not in ("type", "refusal"):
                        raise _unknown(f"{part_param}.{key}")
                refusal_text = part.get("refusal")
                if not isinstance(refusal_text, str):
                    raise _invalid_type(f"{part_param}.refusal", "a string")
                text = refusal_text
            else:
                raise _invalid_value(
                    f"{part_param}.type", "Assistant content parts must be 'text' or 'refusal'."
                )
            if text:
                blocks.append({"type": "text", "text": text})
    elif content is not None:
        raise _invalid_type(content_param, "a string, an array of content parts or null")
    refusal = message.get("refusal")
    if refusal is not None:
        if not isinstance(refusal, str):
            raise _invalid_type(f"{param}.refusal", "a string")
        if refusal and not blocks:
            blocks.append({"type": "text", "text": refusal})
    for key in ("audio", "function_call"):
        if message.get(key) is not None:
            hint = "; use 'tool_calls' instead" if key == "function_call" else ""
            raise _unsupported(
                f"{param}.{key}", f"Assistant '{key}' is not supported {_FOR_ANTHROPIC}{hint}."
            )
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return blocks
    if not isinstance(tool_calls, list):
        raise _invalid_type(f"{param}.tool_calls", "an array")
    for k, call in enumerate(tool_calls):
        call_param = f"{param}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise _invalid_type(call_param, "an object")
        if call.get("type", "function") != "function":
            raise UntranslatableRequest(
                f"Only 'function' tool calls are supported {_FOR_ANTHROPIC}.", f"{call_param}.type"
            )
        for key in call:
            if key not in ("id", "type", "function"):
                raise _unknown(f"{call_param}.{key}")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid_type(f"{call_param}.id", "a non-empty string")
        function = call.get("function")
        if not isinstance(function, dict):
            raise _invalid_type(f"{call_param}.function", "an object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid_type(f"{call_param}.function.name", "a non-empty string")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise _invalid_type(f"{call_param}.function.arguments", "a string")
        if arguments.strip():
            try:
                tool_input = _decode(arguments)
            except msgspec.DecodeError:
                raise _invalid_value(
                    f"{call_param}.function.arguments", "Tool call arguments are not valid JSON."
                ) from None
            if not isinstance(tool_input, dict):
                raise _invalid_value(
                    f"{call_param}.function.arguments", "Tool call arguments must be a JSON object."
                )
        else:
            tool_input = {}
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input})
    return blocks


def _tool_result_block(message: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid_type(f"{param}.tool_call_id", "a non-empty string")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        texts = [text for text in _text_of(content, f"{param}.content") if text]
        if texts:
            block["content"] = [{"type": "text", "text": text} for text in texts]
    return block


def _translate_messages(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid_type(param, "an object")
        role = message.get("role")
        allowed = _MESSAGE_KEYS.get(role) if isinstance(role, str) else None
        if allowed is None:
            if role == "function":
                raise _unsupported(
                    f"{param}.role",
                    f"Legacy 'function' messages are not supported {_FOR_ANTHROPIC}; use 'tool'.",
                )
            raise _invalid_value(f"{param}.role", f"Invalid message role: {role!r}.")
        for key in message:
            if key not in allowed:
                raise _unknown(f"{param}.{key}")
        if message.get("name") is not None:
            raise _unsupported(
                f"{param}.name", f"Message 'name' (participant names) is not supported {_FOR_ANTHROPIC}."
            )
        blocks: list[dict[str, Any]]
        if role in ("system", "developer"):
            system.extend(text for text in _text_of(message.get("content"), f"{param}.content") if text)
            continue
        if role == "user":
            anthropic_role = "user"
            blocks = _user_blocks(message.get("content"), f"{param}.content")
        elif role == "tool":
            anthropic_role = "user"
            blocks = [_tool_result_block(message, param)]
        else:
            anthropic_role = "assistant"
            blocks = _assistant_blocks(message, param)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if turn["role"] == "user" and any(b["type"] == "tool_result" for b in content[1:]):
            # Anthropic: a user turn's tool_result blocks come before any other content
            turn["content"] = [b for b in content if b["type"] == "tool_result"] + [
                b for b in content if b["type"] != "tool_result"
            ]
    return system, turns


def _translate_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array")
    result: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid_type(param, "an object")
        if tool.get("type") != "function":
            raise UntranslatableRequest(
                f"Only 'function' tools are supported {_FOR_ANTHROPIC}.", f"{param}.type", "unsupported_value"
            )
        for key in tool:
            if key not in ("type", "function"):
                raise _unknown(f"{param}.{key}")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _invalid_type(f"{param}.function", "an object")
        for key in function:
            if key not in ("name", "description", "parameters", "strict"):
                raise _unknown(f"{param}.function.{key}")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid_type(f"{param}.function.name", "a non-empty string")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _invalid_type(f"{param}.function.parameters", "an object")
        converted: dict[str, Any] = {"name": name}
        description = function.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise _invalid_type(f"{param}.function.description", "a string")
            converted["description"] = description
        converted["input_schema"] = parameters or {"type": "object", "properties": {}}
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _invalid_type(f"{param}.function.strict", "a boolean")
        if strict:
            converted["strict"] = True
        result.append(converted)
    return result


def _translate_tool_choice(choice: Any, tool_names: set[str]) -> dict[str, Any] | None:
    """Anthropic's tool_choice, or None when there are no tools and the choice asks for none."""
    if isinstance(choice, str):
        kind = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
        if kind is None:
            raise _invalid_value("tool_choice", f"Invalid 'tool_choice': {choice!r}.")
        if not tool_names:
            if kind == "any":
                raise _invalid_value("tool_choice", "'tool_choice': \"required\" needs 'tools'.")
            return None
        return {"type": kind}
    if not isinstance(choice, dict):
        raise _invalid_type("tool_choice", "a string or an object")
    if choice.get("type") != "function":
        raise UntranslatableRequest(
            f"'tool_choice' of type {choice.get('type')!r} is not supported {_FOR_ANTHROPIC}.",
            "tool_choice",
            "unsupported_value",
        )
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise _invalid_type("tool_choice.function.name", "a string")
    if name not in tool_names:
        raise _invalid_value(
            "tool_choice.function.name", f"'tool_choice' names a tool not in 'tools': {name!r}."
        )
    return {"type": "tool", "name": name}


def _user_id(body: dict[str, Any]) -> str | None:
    candidates: list[tuple[str, Any]] = []
    for key in ("user", "safety_identifier"):
        if body.get(key) is not None:
            candidates.append((key, body[key]))
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _invalid_type("metadata", "an object")
        for key, value in metadata.items():
            if key != "user":
                raise _unsupported(
                    f"metadata.{key}",
                    f"'metadata' keys other than 'user' are not supported {_FOR_ANTHROPIC}.",
                )
            if value is not None:
                candidates.append(("metadata.user", value))
    user_id: str | None = None
    for param, value in candidates:
        if not isinstance(value, str):
            raise _invalid_type(param, "a string")
        if user_id is not None and value != user_id:
            raise _invalid_value(param, "'user', 'safety_identifier' and 'metadata.user' disagree.")
        user_id = value
    return user_id


def chat_to_messages(
    body: dict[str, Any], upstream_model: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """An OpenAI chat.completions request body -> the Anthropic /v1/messages request body.

    Raises :class:`UntranslatableRequest` for anything that cannot be honoured (see the module docstring).
    """
    if not isinstance(body, dict):
        raise _invalid_type("body", "a JSON object")
    for key, value in body.items():
        if key in _TRANSLATED:
            continue
        rule = _NEUTRAL.get(key)
        if rule is None:
            raise _unknown(key)
        if value is not None and not rule[0](value):
            raise _unsupported(key, rule[1])

    if "messages" not in body or body["messages"] is None:
        raise _invalid_value("messages", "Missing required parameter: 'messages'.")
    system, turns = _translate_messages(body["messages"])
    if not turns:
        raise _invalid_value(
            "messages", "'messages' must contain at least one non-empty user or assistant message."
        )

    max_tokens = body.get("max_tokens")
    max_completion_tokens = body.get("max_completion_tokens")
    for param, value in (("max_tokens", max_tokens), ("max_completion_tokens", max_completion_tokens)):
        if value is not None and (not _is_int(value) or value < 1):
            raise _invalid_value(param, f"'{param}' must be a positive integer.")
    if max_tokens is not None and max_completion_tokens is not None and max_tokens != max_completion_tokens:
        raise _invalid_value("max_tokens", "'max_tokens' and 'max_completion_tokens' disagree; send one.")
    limit = max_completion_tokens if max_completion_tokens is not None else max_tokens

    result: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": limit if limit is not None else default_max_tokens,
        "messages": turns,
    }
    if system:
        result["system"] = "\n\n".join(system)

    tools = body.get("tools")
    tool_names: set[str] = set()
    if tools is not None:
        converted = _translate_tools(tools)
        if converted:
            result["tools"] = converted
            tool_names = {tool["name"] for tool in converted}
    choice = body.get("tool_choice")
    tool_choice = _translate_tool_choice(choice, tool_names) if choice is not None else None
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _invalid_type("parallel_tool_calls", "a boolean")
    if parallel is False and tool_names and (tool_choice is None or tool_choice["type"] != "none"):
        tool_choice = {"type": "auto"} if tool_choice is None else tool_choice
        tool_choice["disable_parallel_tool_use"] = True
    if tool_choice is not None:
        result["tool_choice"] = tool_choice

    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature):
            raise _invalid_type("temperature", "a number")
        if temperature < 0 or temperature > 2:
            raise _invalid_value("temperature", "'temperature' must be between 0 and 2.")
        if temperature > 1:
            raise UntranslatableRequest(
                f"'temperature' above 1 is not supported {_FOR_ANTHROPIC} (its range is 0 to 1).",
                "temperature",
                "unsupported_value",
            )
        result["temperature"] = temperature
    top_p = body.get("top_p")
    if top_p is not None:
        if not _is_number(top_p):
            raise _invalid_type("top_p", "a number")
        if top_p < 0 or top_p > 1:
            raise _invalid_value("top_p", "'top_p' must be between 0 and 1.")
        result["top_p"] = top_p
    stop = body.get("stop")
    if stop is not None:
        sequences = [stop] if isinstance(stop, str) else stop
        if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
            raise _invalid_type("stop", "a string or an array of strings")
        if sequences:
            result["stop_sequences"] = sequences
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _invalid_type("stream", "a boolean")
        result["stream"] = stream
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object")
    user_id = _user_id(body)
    if user_id is not None:
        result["metadata"] = {"user_id": user_id}
    return result


# ---------------------------------------------------------------------------------------------- responses

_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _finish_reason(stop_reason: Any) -> str:
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) else 0


def anthropic_usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage. Prompt tokens include cache reads and writes; a missing or null
    count is zero here (merging partial usage is the stream translator's job)."""
    cached = _count(usage, "cache_read_input_tokens")
    prompt = _count(usage, "input_tokens") + cached + _count(usage, "cache_creation_input_tokens")
    completion = _count(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


_ERROR_TYPES: Final = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "billing_error": "insufficient_quota",
    "rate_limit_error": "rate_limit_error",
}


def anthropic_error_to_openai(error: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic error object (``{"type", "message"}``, or the whole ``{"type": "error", "error": ...}``
    body) -> the OpenAI error body ``{"error": {"message", "type", "param", "code"}}``; ``code`` is
    Anthropic's error type."""
    inner = error.get("error")
    if isinstance(inner, dict):
        error = inner
    kind = error.get("type")
    kind = kind if isinstance(kind, str) else "api_error"
    message = error.get("message")
    return {
        "error": {
            "message": message if isinstance(message, str) and message else "Upstream error",
            "type": _ERROR_TYPES.get(kind, "server_error"),
            "param": None,
            "code": kind,
        }
    }


def message_to_chat(message: dict[str, Any], requested_model: str, created: int) -> dict[str, Any]:
    """An Anthropic Message -> the OpenAI chat.completion for the model the client asked for."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": _encode(block.get("input") or {}).decode(),
                    },
                }
            )
        # thinking / redacted_thinking blocks are never asked for; server tool blocks neither
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": None if tool_calls and not texts else "".join(texts),
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-" + str(message.get("id") or ""),
        "object": "chat.completion",
        "created": created,
        "model": requested_model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": _finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": anthropic_usage_to_openai(message.get("usage") or {}),
    }


# ---------------------------------------------------------------------------------------------- streaming

_DONE: Final = b"data: [DONE]\n\n"
_USAGE_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class StreamTranslator:
    """Anthropic Messages SSE events -> OpenAI ``chat.completion.chunk`` SSE frames, for one stream.

    Feed each upstream event (its ``event:`` name and decoded ``data``) to :meth:`feed`, write what it
    returns, and after the upstream stream ends write :meth:`finish`. After an ``error`` event the stream is
    over: :meth:`feed` and :meth:`finish` return nothing more (the client has the error frame, which the
    OpenAI SDK raises as an ``APIError``).

    Usage: ``message_start`` gives the first counts; each ``message_delta`` usage field present (non-null)
    replaces the earlier value, as those values are cumulative; a field never seen counts zero at the end.
    :attr:`usage` (OpenAI shape) and :attr:`anthropic_usage` are there for metering.
    """

    __slots__ = (
        "_created",
        "_errored",
        "_finish_reason",
        "_finished",
        "_head",
        "_message_id",
        "_model",
        "_tail",
        "_tools",
        "_usage",
        "include_usage",
    )

    def __init__(self, requested_model: str, created: int, include_usage: bool) -> None:
        self._model = requested_model
        self._created = created
        self.include_usage = include_usage
        self._message_id = ""
        self._usage: dict[str, int] = {}
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._finish_reason: str | None = None
        self._errored = False
        self._finished = False
        self._head = b""
        self._tail = b""
        self._set_frame()

    def _set_frame(self) -> None:
        self._head = (
            b'data: {"id":'
            + _encode("chatcmpl-" + self._message_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + _encode(self._model)
        )
        self._tail = (b',"usage":null' if self.include_usage else b"") + b"}\n\n"

    def _chunk(self, delta: bytes, finish_reason: bytes = b"null") -> bytes:
        return (
            self._head
            + b',"choices":[{"index":0,"delta":'
            + delta
            + b',"logprobs":null,"finish_reason":'
            + finish_reason
            + b"}]"
            + self._tail
        )

    @property
    def message_id(self) -> str:
        return self._message_id

    @property
    def finish_reason(self) -> str | None:
        return self._finish_reason

    @property
    def errored(self) -> bool:
        return self._errored

    @property
    def anthropic_usage(self) -> dict[str, int]:
        return dict(self._usage)

    @property
    def usage(self) -> dict[str, Any]:
        return anthropic_usage_to_openai(self._usage)

    def _merge_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key in _USAGE_FIELDS:
            value = usage.get(key)
            if isinstance(value, int):
                self._usage[key] = value

    def feed(self, event: str, data: dict[str, Any]) -> bytes:
        """The OpenAI frames (zero or more ``data: {...}\\n\\n``) for one Anthropic event."""
        if self._errored or self._finished:
            return b""
        kind = event or data.get("type") or ""
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                text = delta.get("text")
                return self._chunk(b'{"content":' + _encode(text) + b"}") if text else b""
            if delta_type == "input_json_delta":
                piece = delta.get("partial_json")
                tool_index = self._tools.get(data.get("index", -1))
                if not piece or tool_index is None:
                    return b""
                return self._chunk(
                    b'{"tool_calls":[{"index":'
                    + str(tool_index).encode()
                    + b',"function":{"arguments":'
                    + _encode(piece)
                    + b"}}]}"
                )
            return b""  # thinking, signature and citation deltas have no OpenAI counterpart
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            block_type = block.get("type")
            if block_type == "text":
                text = block.get("text")
                return self._chunk(b'{"content":' + _encode(text) + b"}") if text else b""
            if block_type == "tool_use":
                tool_index = len(self._tools)
                self._tools[data.get("index", -1 - tool_index)] = tool_index
                tool_input = block.get("input")
                arguments = _encode(tool_input).decode() if tool_input else ""
                call = {
                    "index": tool_index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
                return self._chunk(_encode({"tool_calls": [call]}))
            return b""
        if kind == "message_start":
            message = data.get("message") or {}
            self._message_id = str(message.get("id") or "")
            self._set_frame()
            self._merge_usage(message.get("usage"))
            return self._chunk(b'{"role":"assistant","content":""}')
        if kind == "message_delta":
            self._merge_usage(data.get("usage"))
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            if stop_reason is None or self._finish_reason is not None:
                return b""
            self._finish_reason = _finish_reason(stop_reason)
            return self._chunk(b"{}", b'"' + self._finish_reason.encode() + b'"')
        if kind == "error":
            self._errored = True
            return b"data: " + _encode(anthropic_error_to_openai(data)) + b"\n\n"
        return b""  # ping, content_block_stop, message_stop, unknown events

    def finish(self) -> bytes:
        """The closing frames: the usage chunk (when ``include_usage``) and ``data: [DONE]``."""
        if self._errored or self._finished:
            return b""
        self._finished = True
        if not self.include_usage:
            return _DONE
        usage = _encode(self.usage)
        return self._head + b',"choices":[],"usage":' + usage + b"}\n\n" + _DONE
