"""Seconds per page as a server-rendered SVG bar chart (no charting library, no script).

Bars carry a `<title>` (hover and screen readers) and `data-page`/`data-seconds`
attributes; the same numbers are in a table next to the chart for anyone who
cannot see it.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup

WIDTH = 720
HEIGHT = 220
LEFT = 44
BOTTOM = 28
TOP = 12
RIGHT = 8


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (the y axis's top)."""
    if value <= 0:
        return 10.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))  # pragma: no cover - the loop always returns


def duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest:02d} s"


def seconds_per_page_svg(values: list[float], label: str) -> Markup:
    """A bar per page; `label` names the chart for assistive technology."""
    count = max(len(values), 1)
    top = nice_ceiling(max(values, default=0.0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / count
    bar_w = max(1.0, slot * 0.72)
    parts = [
        f'<svg class="page-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    for tick in (0.0, top / 2, top):
        y = TOP + plot_h - plot_h * tick / top
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{duration(tick)}</text>"
        )
    label_every = max(1, math.ceil(count / 25))
    for index, seconds in enumerate(values):
        page = index + 1
        height = plot_h * seconds / top
        x = LEFT + index * slot + (slot - bar_w) / 2
        y = TOP + plot_h - height
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{height:.1f}" '
            f'data-page="{page}" data-seconds="{seconds:g}">'
            f"<title>Page {page}: {duration(seconds)}</title></rect>"
        )
        if page == 1 or page % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                f'class="axis">{page}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated value is escaped or numeric
