"""A useful subset of Gmail's search language (``q`` of ``messages.list``).

Terms are ANDed; ``a OR b`` and ``{a b}`` are alternatives; ``-term`` negates. Operators: ``from:``, ``to:``
(To, Cc and Bcc), ``cc:``, ``bcc:``, ``deliveredto:``, ``subject:``, ``is:`` (unread, read, starred,
important), ``in:`` (inbox, sent, trash, spam, drafts, starred, important, anywhere), ``label:``,
``category:``, ``has:attachment``, ``filename:``, ``newer_than:``/``older_than:`` (``2d``, ``3m``, ``1y``,
``12h``), ``after:``/``before:`` (``2024/05/01`` is midnight in America/Los_Angeles, as Gmail reads dates, or
epoch seconds), ``larger:``/``smaller:`` (``10K``, ``2M``), ``rfc822msgid:``; anything else (words, quoted
phrases, ``(several words)``) matches the headers, the body text and attachment names. ``me`` stands for
the mailbox's own address. Messages in Trash or Spam are searched only by ``in:trash``, ``in:spam``,
``in:anywhere`` or ``label:trash``/``label:spam``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from .mime import Facts

# An operator's name is letters, digits and underscores, beginning with a letter (``rfc822msgid``).
_OPERATOR: Final = r"[A-Za-z][A-Za-z0-9_]*"
_TOKEN: Final = re.compile(r"-?(?:" + _OPERATOR + r':)?(?:"[^"]*"|\([^)]*\)|\{[^}]*\}|[^\s(){}"]+)')
_PACIFIC: Final = ZoneInfo("America/Los_Angeles")
_UNITS: Final = {"h": 3600, "d": 86400, "m": 30 * 86400, "y": 365 * 86400}
_SIZES: Final = {"": 1, "k": 1024, "m": 1024 * 1024}
_IN: Final = {
    "inbox": "INBOX",
    "sent": "SENT",
    "trash": "TRASH",
    "spam": "SPAM",
    "draft": "DRAFT",
    "drafts": "DRAFT",
    "starred": "STARRED",
    "important": "IMPORTANT",
    "chats": "CHAT",
}
_CATEGORIES: Final = {
    "primary": "CATEGORY_PERSONAL",
    "personal": "CATEGORY_PERSONAL",
    "social": "CATEGORY_SOCIAL",
    "promotions": "CATEGORY_PROMOTIONS",
    "updates": "CATEGORY_UPDATES",
    "forums": "CATEGORY_FORUMS",
}


@dataclass(frozen=True, slots=True)
class Candidate:
    facts: Facts
    labels: frozenset[str]
    internal_date: int  # ms


Test = Callable[[Candidate], bool]


@dataclass(frozen=True, slots=True)
class Query:
    test: Test
    spam_and_trash: bool  # the query itself asks for Trash or Spam


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] in '"({' and value[-1] in '")}':
        return value[1:-1]
    return value


def _words(value: str) -> list[str]:
    return [w.lower() for w in _unquote(value).split() if w]


def _date_ms(value: str) -> int | None:
    if value.isdigit():
        return int(value) * 1000
    match = re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value)
    if match is None:
        return None
    year, month, day = (int(g) for g in match.groups())
    try:
        return int(datetime(year, month, day, tzinfo=_PACIFIC).timestamp() * 1000)
    except ValueError:
        return None


def _whole(words: str) -> re.Pattern[str]:
    """``words`` as whole words: Gmail matches words, not parts (``cat`` does not find ``category``)."""
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words.split()) + r"(?!\w)")


def _text(value: str) -> Test:
    raw = _unquote(value).lower()
    if value.startswith('"'):
        phrase = _whole(raw)
        return lambda c: phrase.search(c.facts.text) is not None
    words = [_whole(w) for w in raw.split()]
    return lambda c: all(w.search(c.facts.text) is not None for w in words)


def _operator(name: str, value: str, me: str, now_ms: int) -> Test | None:
    """The test for ``name:value``, or None when Gmail would read the term as plain text."""
    plain = _unquote(value).lower()
    if name in ("from", "to", "cc", "bcc", "deliveredto"):
        target = me if plain == "me" else plain

        def fields(c: Candidate) -> str:
            f = c.facts
            return {
                "from": f.sender,
                "to": f"{f.to} {f.cc} {f.bcc}",
                "cc": f.cc,
                "bcc": f.bcc,
                "deliveredto": f.delivered_to,
            }[name]

        return lambda c: target in fields(c)
    if name == "subject":
        words = _words(value)
        return lambda c: all(w in c.facts.subject for w in words)
    if name == "is":
        label = {"unread": "UNREAD", "starred": "STARRED", "important": "IMPORTANT"}.get(plain)
        if plain == "read":
            return lambda c: "UNREAD" not in c.labels
        return (lambda c: label in c.labels) if label else (lambda c: False)
    if name == "in":
        if plain == "anywhere":
            return lambda c: True
        label = _IN.get(plain)
        return (lambda c: label in c.labels) if label else (lambda c: False)
    if name == "label":
        wanted = plain.replace("-", "_").upper()
        return lambda c: wanted in c.labels
    if name == "category":
        category = _CATEGORIES.get(plain)
        return lambda c: category in c.labels
    if name == "has":
        if plain == "attachment":
            return lambda c: bool(c.facts.filenames)
        return lambda c: plain == "nouserlabels"
    if name == "filename":
        return lambda c: any(plain in f for f in c.facts.filenames)
    if name in ("newer_than", "older_than"):
        match = re.fullmatch(r"(\d+)([hdmy])", plain)
        if match is None:
            return None
        limit = now_ms - int(match.group(1)) * _UNITS[match.group(2)] * 1000
        return (
            (lambda c: c.internal_date >= limit)
            if name == "newer_than"
            else (lambda c: c.internal_date < limit)
        )
    if name in ("after", "before", "newer", "older"):
        moment = _date_ms(plain)
        if moment is None:
            return None
        if name in ("after", "newer"):
            return lambda c: c.internal_date >= moment
        return lambda c: c.internal_date < moment
    if name in ("larger", "smaller", "size"):
        match = re.fullmatch(r"(\d+)([km]?)", plain)
        if match is None:
            return None
        size = int(match.group(1)) * _SIZES[match.group(2)]
        return (lambda c: c.facts.size < size) if name == "smaller" else (lambda c: c.facts.size > size)
    if name == "rfc822msgid":
        wanted = plain.strip("<>")
        return lambda c: c.facts.message_id.strip("<>") == wanted
    return None


def _term(token: str, me: str, now_ms: int) -> tuple[Test, bool]:
    """(test, asks for Trash/Spam) of one token."""
    negated = token.startswith("-") and len(token) > 1
    body = token[1:] if negated else token
    match = re.match(rf"^({_OPERATOR}):(.+)$", body, re.DOTALL)
    test: Test | None = None
    wants_bins = False
    if match is not None:
        name, value = match.group(1).lower(), match.group(2)
        test = _operator(name, value, me, now_ms)
        bins = {"trash", "spam", "anywhere"}
        wants_bins = not negated and name in ("in", "label") and _unquote(value).lower() in bins
    if body.startswith("{") and test is None:
        alternatives = [_text(word) for word in _words(body)]
        test = lambda c: any(t(c) for t in alternatives)  # noqa: E731
    if test is None:
        test = _text(body)
    if negated:
        inner = test
        return (lambda c: not inner(c)), False
    return test, wants_bins


def compile_query(q: str | None, me: str, now_ms: int) -> Query:
    if not q or not q.strip():
        return Query(lambda c: True, False)
    groups: list[list[Test]] = []
    bins = False
    joining = False
    for token in _TOKEN.findall(q):
        if token == "OR" and groups:
            joining = True
            continue
        test, wants = _term(token, me.lower(), now_ms)
        bins = bins or wants
        if joining:
            groups[-1].append(test)
            joining = False
        else:
            groups.append([test])
    return Query(lambda c: all(any(t(c) for t in group) for group in groups), bins)
