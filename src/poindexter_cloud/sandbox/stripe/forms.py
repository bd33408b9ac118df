"""Stripe's request encoding: form bodies and query strings with bracket notation, and typed access to them.

``a[b][c]=1`` nests objects, ``a[0]=x&a[1]=y`` (what stripe-python sends) and ``a[]=x&a[]=y`` make lists, and
values stay strings until a handler reads them as integers, booleans or decimals, as Stripe does. An empty
string is kept: on update it means "unset" (``metadata[key]=`` removes a key, ``metadata=`` clears them all).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import parse_qsl

from .errors import StripeError, invalid, missing, unknown

_KEY_RE: Final = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT_RE: Final = re.compile(r"\[([^\[\]]*)\]")
_MAX_DEPTH: Final = 16


def split_key(key: str) -> list[str]:
    """``"a[b][0][]"`` -> ``["a", "b", "0", ""]``; a key that is not bracket notation is one segment."""
    match = _KEY_RE.match(key)
    if match is None:
        return [key]
    return [match.group(1), *_SEGMENT_RE.findall(match.group(2))]


def _malformed(key: str) -> StripeError:
    return StripeError(400, f"Invalid request: the parameter {key} is given conflicting values.", param=key)


def decode_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest decoded ``(key, value)`` pairs; objects whose keys are all indexes become lists, in order."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        segments = split_key(key)
        if len(segments) > _MAX_DEPTH:
            raise _malformed(key)
        node = root
        for position, segment in enumerate(segments):
            last = position == len(segments) - 1
            if segment == "" and position > 0:
                segment = str(sum(1 for k in node if k.isdigit()))
            if last:
                if isinstance(node.get(segment), dict):
                    raise _malformed(key)
                node[segment] = value
            else:
                child = node.setdefault(segment, {})
                if not isinstance(child, dict):
                    if child == "":  # `metadata=` then `metadata[a]=b`: the later keys win
                        child = node[segment] = {}
                    else:
                        raise _malformed(key)
                node = child
    return _listify(root)


def _listify(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        out[key] = _listify_value(value)
    return out


def _listify_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = _listify(value)
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def decode_form(raw: bytes | str) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return decode_pairs(parse_qsl(text, keep_blank_values=True))


# ---------------------------------------------------------------------------------------------- typed access


class Params:
    """One object of request parameters. Every read marks the name as known; ``finish()`` then rejects the
    rest with Stripe's ``parameter_unknown``. ``ignored`` names are documented parameters the sandbox
    accepts without acting on them."""

    def __init__(self, data: dict[str, Any], prefix: str = "", ignored: Iterable[str] = ()) -> None:
        self.data = data
        self.prefix = prefix
        self.seen: set[str] = set(ignored)

    def name(self, key: str) -> str:
        return f"{self.prefix}[{key}]" if self.prefix else key

    def has(self, key: str) -> bool:
        self.seen.add(key)
        return key in self.data

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def finish(self) -> None:
        for key in self.data:
            if key not in self.seen:
                raise unknown(self.name(key))

    # -- scalars

    def string(self, key: str, *, required: bool = False, max_length: int = 5000) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise missing(self.name(key))
            return None
        if not isinstance(value, str):
            raise invalid(self.name(key), f"Invalid string: {_show(value)}", "parameter_invalid_string")
        if required and value == "":
            raise missing(self.name(key))
        if len(value) > max_length:
            raise invalid(
                self.name(key),
                f"Invalid string: {value[:20]}...; must be at most {max_length} characters",
                "parameter_invalid_string_too_long" if max_length else "parameter_invalid_string",
            )
        return value

    def req(self, key: str, max_length: int = 5000) -> str:
        value = self.string(key, required=True, max_length=max_length)
        assert value is not None
        return value

    def nullable_str(self, key: str, max_length: int = 5000) -> tuple[bool, str | None]:
        """(given, value): an empty string is given-and-None (Stripe's way to unset a field)."""
        if not self.has(key):
            return False, None
        value = self.string(key, max_length=max_length)
        return True, (value or None)

    def integer(self, key: str, *, required: bool = False, minimum: int | None = None) -> int | None:
        value = self.raw(key)
        if value is None or value == "":
            if required:
                raise missing(self.name(key))
            return None
        try:
            number = int(value) if isinstance(value, (str, int)) else int("x")
        except ValueError:
            raise invalid(
                self.name(key), f"Invalid integer: {_show(value)}", "parameter_invalid_integer"
            ) from None
        if minimum is not None and number < minimum:
            raise invalid(
                self.name(key),
                f"This value must be greater than or equal to {minimum}.",
                "parameter_invalid_integer",
            )
        return number

    def boolean(self, key: str) -> bool | None:
        value = self.raw(key)
        if value is None or value == "":
            return None
        if value in ("true", True):
            return True
        if value in ("false", False):
            return False
        raise invalid(self.name(key), f"Invalid boolean: {_show(value)}")

    def decimal(self, key: str) -> Decimal | None:
        value = self.raw(key)
        if value is None or value == "":
            return None
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise invalid(self.name(key), f"Invalid decimal: {_show(value)}") from None
        if not number.is_finite():
            raise invalid(self.name(key), f"Invalid decimal: {_show(value)}")
        return number

    def enum(self, key: str, values: tuple[str, ...], *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is None or value == "":
            return None
        if value not in values:
            listed = ", ".join(f"`{v}`" for v in values[:-1]) + f", or `{values[-1]}`"
            raise invalid(self.name(key), f"Invalid {self.name(key)}: must be one of {listed}")
        return value

    # -- structures

    def obj(self, key: str, *, required: bool = False, ignored: Iterable[str] = ()) -> Params | None:
        value = self.raw(key)
        if value is None or value == "":
            if required:
                raise missing(self.name(key))
            return None
        if not isinstance(value, dict):
            raise invalid(self.name(key), f"Invalid object: {self.name(key)} must be a hash")
        return Params(value, self.name(key), ignored)

    def objects(self, key: str, *, ignored: Iterable[str] = ()) -> list[Params] | None:
        value = self.raw(key)
        if value is None or value == "":
            return None if value is None else []
        if isinstance(value, dict):  # a[x][..] with non-index keys
            raise invalid(self.name(key), f"Invalid array: {self.name(key)} must be an array")
        if not isinstance(value, list):
            raise invalid(self.name(key), f"Invalid array: {self.name(key)} must be an array")
        out = []
        for index, item in enumerate(value):
            name = f"{self.name(key)}[{index}]"
            if not isinstance(item, dict):
                raise invalid(name, f"Invalid object: {name} must be a hash")
            out.append(Params(item, name, ignored))
        return out

    def strings(self, key: str) -> list[str] | None:
        value = self.raw(key)
        if value is None:
            return None
        if value == "":
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid(self.name(key), f"Invalid array: {self.name(key)} must be an array of strings")
        return list(value)

    def metadata(self, key: str = "metadata") -> dict[str, str | None] | None:
        """Metadata changes: ``{k: v}`` to set, ``{k: None}`` to remove; ``{"": None}`` clears everything."""
        value = self.raw(key)
        if value is None:
            return None
        if value == "":
            return {"": None}
        if not isinstance(value, dict):
            raise invalid(self.name(key), "Invalid hash: metadata must be a hash of string keys and values")
        changes: dict[str, str | None] = {}
        for meta_key, meta_value in value.items():
            if not isinstance(meta_value, str):
                raise invalid(f"{self.name(key)}[{meta_key}]", "Invalid metadata value: must be a string")
            if len(meta_key) > 40:
                raise invalid(
                    f"{self.name(key)}[{meta_key}]",
                    "Metadata keys can have a maximum length of 40 characters.",
                )
            if len(meta_value) > 500:
                raise invalid(
                    f"{self.name(key)}[{meta_key}]",
                    "Metadata values can have a maximum length of 500 characters.",
                )
            changes[meta_key] = meta_value or None
        return changes

    def expand(self) -> list[str]:
        return self.strings("expand") or []


def apply_metadata(current: dict[str, str], changes: dict[str, str | None] | None) -> dict[str, str]:
    if changes is None:
        return current
    updated = {} if "" in changes else dict(current)
    for key, value in changes.items():
        if key == "":
            continue
        if value is None:
            updated.pop(key, None)
        else:
            updated[key] = value
    if len(updated) > 50:
        raise invalid("metadata", "You can have at most 50 keys in metadata.")
    return updated


def _show(value: Any) -> str:
    return value if isinstance(value, str) else type(value).__name__
