"""An org's daily API use against its allowance, as one server-rendered SVG bar (no script).

    |███ Sightline today ███▒▒▒▒ everything else ▒▒▒▒▒░░░░░░ left ░░░░|
    0                                            ┆ team's share    allowance

The whole bar is the org's rolling 24-hour allowance (`DailyApiRequests.Max`,
or the `Sforce-Limit-Info` maximum); the filled part what the org used, of which
the calls Sightline made today (UTC) are drawn first; the dashed line is the
team's budget share, above which engagement updates wait. Each part carries a
`<title>` (hover, screen readers) and `data-*` numbers; the page prints the same
numbers in words next to it, like `web.documents.charts`.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup

WIDTH = 560
HEIGHT = 56
BAR_TOP = 8
BAR_HEIGHT = 24
PAD = 4


def usage_bar_svg(used: int, maximum: int, ours: int, share_percent: int) -> Markup:
    """The bar for `used` of `maximum` calls, `ours` of them Sightline's, the share marked."""
    maximum = max(maximum, 1)
    used = min(max(used, 0), maximum)
    ours = min(max(ours, 0), used)
    plot = WIDTH - 2 * PAD

    def x(calls: float) -> float:
        return PAD + plot * calls / maximum

    label = (
        f"{used:,} of {maximum:,} daily API calls used ({100 * used / maximum:.0f} %), "
        f"{ours:,} of them by Sightline today; engagement waits at {share_percent} %"
    )
    share_x = PAD + plot * min(max(share_percent, 0), 100) / 100
    parts = [
        f'<svg class="usage-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg" '
        f'data-used="{used}" data-max="{maximum}" data-ours="{ours}" data-share="{share_percent}">',
        f"<title>{escape(label)}</title>",
        f'<rect class="usage-left" x="{PAD}" y="{BAR_TOP}" width="{plot}" height="{BAR_HEIGHT}">'
        f"<title>{maximum - used:,} calls left</title></rect>",
        f'<rect class="usage-others" x="{x(ours):.1f}" y="{BAR_TOP}" '
        f'width="{x(used) - x(ours):.1f}" height="{BAR_HEIGHT}">'
        f"<title>{used - ours:,} calls by everything else in the org</title></rect>",
        f'<rect class="usage-ours" x="{PAD}" y="{BAR_TOP}" width="{x(ours) - PAD:.1f}" '
        f'height="{BAR_HEIGHT}"><title>{ours:,} calls by Sightline today</title></rect>',
        f'<line class="usage-share" x1="{share_x:.1f}" x2="{share_x:.1f}" y1="{BAR_TOP - 4}" '
        f'y2="{BAR_TOP + BAR_HEIGHT + 4}"><title>This team\'s share: {share_percent} %</title>'
        "</line>",
        f'<text class="axis" x="{PAD}" y="{HEIGHT - 4}">0</text>',
        f'<text class="axis" x="{WIDTH - PAD}" y="{HEIGHT - 4}" text-anchor="end">'
        f"{maximum:,}</text>",
        f'<text class="axis" x="{share_x:.1f}" y="{HEIGHT - 4}" text-anchor="middle">'
        f"{share_percent} %</text>",
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 - every interpolated value is escaped or numeric
