"""Server-side SVG charts: geometry computed here, drawn by the templates (no script, no chart library).

The usage chart has one horizontal bar per model, split into the kinds of tokens the upstream counted, each
bar as long as its share of the largest. A bar is an SVG of its own that stretches to the page's width, with
its label in HTML beside it, so the text stays readable on a phone. Colours come from CSS classes
(``seg-input`` ...), since the Content-Security-Policy allows no inline style.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from poindexter_cloud.billing.schemas import ModelUsage

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


def tokens_by_model(models: Sequence[ModelUsage]) -> list[Bar]:
    rows = [(m, [sum(getattr(m, f) for f in fields) for _, _, fields in KINDS]) for m in models]
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


def usage_chart(models: Sequence[ModelUsage]) -> dict[str, Any]:
    """What usage_report.html draws the chart from."""
    return {"bars": tokens_by_model(models), "legend": LEGEND, "scale": SCALE}
