"""Server-side SVG charts: geometry computed here, drawn by the templates (no script, no chart library).

The day chart has one column per UTC day of the period so far, stacked by kind of token, each as tall as
its share of the busiest day. The model chart has one horizontal bar per model, split the same way, each
as long as its share of the largest; a bar is an SVG of its own that stretches to the page's width, with
its label in HTML beside it, so the text stays readable on a phone. Colours come from CSS classes
(``seg-input`` ...), since the Content-Security-Policy allows no inline style.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from poindexter_cloud.billing.schemas import DayUsage, ModelUsage, UsageInfo

SCALE = 1000  # a bar's viewBox width

# (css class suffix, legend label, ModelUsage fields summed)
KINDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("input", "Input", ("input_tokens",)),
    ("output", "Output", ("output_tokens",)),
    ("cache-read", "Cache reads", ("cache_read_tokens",)),
    ("cache-write", "Cache writes", ("cache_write_5m_tokens", "cache_write_1h_tokens")),
)
LEGEND = tuple((kind, label) for kind, label, _ in KINDS)


@dataclass(frozen=True, slots=True)
class Segment:
    kind: str
    label: str
    x: float
    width: float
    tokens: int


@dataclass(frozen=True, slots=True)
class Bar:
    model: str
    total: int
    requests: int
    segments: tuple[Segment, ...]


def _counts(usage: ModelUsage | DayUsage) -> list[int]:
    return [sum(getattr(usage, f) for f in fields) for _, _, fields in KINDS]


def tokens_by_model(models: Sequence[ModelUsage]) -> list[Bar]:
    rows = [(m, _counts(m)) for m in models]
    largest = max((sum(counts) for _, counts in rows), default=0) or 1
    bars = []
    for usage, counts in rows:
        x, segments = 0.0, []
        for (kind, label, _), count in zip(KINDS, counts, strict=True):
            width = SCALE * count / largest
            if count:
                segments.append(Segment(kind, label, x, width, count))
            x += width
        bars.append(Bar(usage.model or "unknown model", sum(counts), usage.requests, tuple(segments)))
    return bars


DAY_HEIGHT = 100  # a day column's full height in the viewBox
DAY_WIDTH = 10  # a day's slot, of which the column takes 80 %


@dataclass(frozen=True, slots=True)
class Column:
    day: date
    x: float
    total: int
    requests: int
    segments: tuple[Segment, ...]  # here ``x`` is the segment's top (y) and ``width`` its height


def tokens_by_day(days: Sequence[DayUsage], start: datetime, now: datetime) -> tuple[list[Column], int]:
    """One column per day from the period's first day to today (empty days included); and the slots."""
    first, last = start.date(), max(now.date(), start.date())
    by_day = {d.day: d for d in days}
    largest = max((sum(_counts(d)) for d in days), default=0) or 1
    columns: list[Column] = []
    for index in range((last - first).days + 1):
        day = first + timedelta(days=index)
        found = by_day.get(day)
        counts = _counts(found) if found else [0] * len(KINDS)
        top, segments = float(DAY_HEIGHT), []
        for (kind, label, _), count in zip(KINDS, counts, strict=True):
            height = DAY_HEIGHT * count / largest
            top -= height
            if count:
                segments.append(Segment(kind, label, top, height, count))
        columns.append(
            Column(day, index * DAY_WIDTH, sum(counts), found.requests if found else 0, tuple(segments))
        )
    return columns, len(columns)


def usage_chart(usage: UsageInfo, now: datetime) -> dict[str, Any]:
    """What usage_report.html draws the charts from."""
    columns, slots = tokens_by_day(usage.days, usage.period_start, min(now, usage.period_end))
    return {
        "bars": tokens_by_model(usage.models),
        "columns": columns,
        "day_width": DAY_WIDTH,
        "day_height": DAY_HEIGHT,
        "days_width": slots * DAY_WIDTH,
        "legend": LEGEND,
        "scale": SCALE,
    }
