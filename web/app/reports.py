"""What happened: per sequence, a funnel by step; per document, seconds per page.

The funnel counts **messages** (one per enrolment and step; a soft-bounce retry is
the same message's second attempt and is not counted twice):

    sent      a message of that step went out
    opened    a *counted* open: a person, Gmail's image proxy, or a click (which
              implies an open) — own devices, scanners and bots never count
    proxy     only Apple Mail Privacy Protection prefetched it ("probably opened"):
              shown apart, never in the opened number
    clicked   a counted click on a tracked link
    replied   a reply to that step's message (from anyone: the prospect, a colleague)

Counted opens are told from Apple's prefetches by the event key the events
worker writes (`open:<sent>:<recipient>:<bucket>:counted|probable`, or
`…:inferred` for an open seen from a click; see docs/ARCHITECTURE.md).

These are numbers Salesforce alone cannot give: its Tasks know an email was sent
and replied to, not which step of which sequence earns replies, how many opens
were Apple's robots, or how long a prospect spent on page 4 of the deck.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from statistics import median

from flask import render_template
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape
from sqlalchemy import and_, distinct, exists, func, select
from sqlalchemy.orm import aliased

from core.models import (
    Document,
    DocumentStatus,
    Enrollment,
    Event,
    Plan,
    SendStatus,
    SentMessage,
    Sequence,
)
from web.app.common import app_blueprint, keyset_page, owned, percent, team, team_id
from web.auth import login_required
from web.db import db
from web.documents.charts import seconds_per_page_svg
from web.documents.common import seconds_per_page, visit_summary

bp = app_blueprint("reports", __name__)

STAGES = ("sent", "opened", "proxy", "clicked", "replied")
STAGE_LABELS = {
    "sent": "Sent",
    "opened": "Opened by people",
    "proxy": "Apple proxy only",
    "clicked": "Clicked",
    "replied": "Replied",
}


@dataclass
class StepRow:
    position: int
    subject: str
    sent: int = 0
    opened: int = 0
    proxy: int = 0
    clicked: int = 0
    replied: int = 0
    bounced: int = 0

    def value(self, stage: str) -> int:
        count: int = getattr(self, stage)
        return count

    def rate(self, stage: str) -> str:
        return percent(self.value(stage), self.sent)


def funnel(sequence: Sequence) -> list[StepRow]:
    """One row per step, counts of distinct messages at each stage (a few grouped queries)."""
    rows = {
        s.position: StepRow(s.position, s.subject or "(same thread, no subject)")
        for s in sequence.steps
    }
    in_sequence = and_(
        SentMessage.enrollment_id == Enrollment.id, Enrollment.sequence_id == sequence.id
    )
    # Grouped by step, a distinct enrolment is a distinct message: a soft-bounce retry
    # is another attempt of the same one.
    messages = func.count(distinct(SentMessage.enrollment_id))
    for position, count in db().execute(
        select(SentMessage.step_position, messages)
        .join(Enrollment, in_sequence)
        .where(SentMessage.status == SendStatus.SENT)
        .group_by(SentMessage.step_position)
    ):
        if position in rows:
            rows[position].sent = int(count)
    other = aliased(Event)
    counted_open = and_(Event.kind == "open", Event.key.not_like("%:probable"))
    stages = {
        "opened": counted_open,
        "clicked": Event.kind == "click",
        "replied": Event.kind == "reply",
        "bounced": Event.kind == "bounce",
        # Prefetched by Apple's proxy, and never opened by anyone counted.
        "proxy": and_(
            Event.kind == "open",
            Event.key.like("%:probable"),
            ~exists().where(
                other.sent_message_id == SentMessage.id,
                other.kind == "open",
                other.key.not_like("%:probable"),
            ),
        ),
    }
    for stage, condition in stages.items():
        for position, count in db().execute(
            select(SentMessage.step_position, messages)
            .join(Enrollment, in_sequence)
            .join(Event, Event.sent_message_id == SentMessage.id)
            .where(condition)
            .group_by(SentMessage.step_position)
        ):
            if position in rows:
                setattr(rows[position], stage, int(count))
    return [rows[p] for p in sorted(rows)]


@dataclass
class Totals:
    sent: int = 0
    opened: int = 0
    replied: int = 0


def totals(sequence_ids: list[int]) -> dict[int, Totals]:
    """Messages sent, opened by people and replied to, per sequence (three grouped queries).

    A message is an (enrolment, step): a soft-bounce retry is not counted twice.
    """
    out = {i: Totals() for i in sequence_ids}
    if not sequence_ids:
        return out
    base = (
        select(Enrollment.sequence_id, SentMessage.enrollment_id, SentMessage.step_position)
        .join(SentMessage, SentMessage.enrollment_id == Enrollment.id)
        .where(Enrollment.sequence_id.in_(sequence_ids))
    )
    with_event = base.join(Event, Event.sent_message_id == SentMessage.id)
    queries = {
        "sent": base.where(SentMessage.status == SendStatus.SENT),
        "opened": with_event.where(Event.kind == "open", Event.key.not_like("%:probable")),
        "replied": with_event.where(Event.kind == "reply"),
    }
    for stage, query in queries.items():
        messages = query.distinct().subquery()
        for sequence_id, count in db().execute(
            select(messages.c.sequence_id, func.count()).group_by(messages.c.sequence_id)
        ):
            setattr(out[int(sequence_id)], stage, int(count))
    return out


def reply_times(sequence: Sequence) -> list[timedelta]:
    """Time from each replied message's send to its first reply."""
    first_reply = (
        select(Event.sent_message_id, func.min(Event.occurred_at).label("at"))
        .where(Event.kind == "reply")
        .group_by(Event.sent_message_id)
        .subquery()
    )
    rows = db().execute(
        select(SentMessage.sent_at, first_reply.c.at)
        .join(first_reply, first_reply.c.sent_message_id == SentMessage.id)
        .join(Enrollment, Enrollment.id == SentMessage.enrollment_id)
        .where(Enrollment.sequence_id == sequence.id, SentMessage.sent_at.is_not(None))
    )
    return [at - sent_at for sent_at, at in rows if at is not None and at >= sent_at]


def describe_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds < 3600:
        return f"{max(1, seconds // 60)} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# -- the chart -------------------------------------------------------------------------


BAR_HEIGHT = 16
ROW_GAP = 4
GROUP_GAP = 18
LABEL_WIDTH = 150
CHART_WIDTH = 640


def funnel_svg(rows: list[StepRow], label: str) -> Markup:
    """Horizontal bars per step and stage, widths relative to the most sent."""
    top = max((r.sent for r in rows), default=0) or 1
    plot = CHART_WIDTH - LABEL_WIDTH - 70
    height = sum(len(STAGES) * (BAR_HEIGHT + ROW_GAP) + GROUP_GAP + 18 for _ in rows) or 40
    parts = [
        f'<svg class="funnel-chart" viewBox="0 0 {CHART_WIDTH} {height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    y = 0
    for row in rows:
        parts.append(
            f'<text class="step-label" x="0" y="{y + 13}">Step {row.position + 1}: '
            f"{escape(row.subject[:70])}</text>"
        )
        y += 18
        for stage in STAGES:
            value = row.value(stage)
            width = plot * value / top
            parts.append(
                f'<text class="axis" x="{LABEL_WIDTH - 8}" y="{y + 12}" text-anchor="end">'
                f"{STAGE_LABELS[stage]}</text>"
                f'<rect class="bar stage-{stage}" x="{LABEL_WIDTH}" y="{y}" '
                f'width="{max(width, 0.5 if value else 0):.1f}" height="{BAR_HEIGHT}" '
                f'data-step="{row.position + 1}" data-stage="{stage}" data-count="{value}">'
                f"<title>Step {row.position + 1}, {STAGE_LABELS[stage]}: {value}</title></rect>"
                f'<text class="count" x="{LABEL_WIDTH + width + 6:.1f}" y="{y + 12}">{value}'
                f"{'' if stage == 'sent' else ' · ' + row.rate(stage)}</text>"
            )
            y += BAR_HEIGHT + ROW_GAP
        y += GROUP_GAP
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated value is escaped or numeric


# -- pages -----------------------------------------------------------------------------


@bp.get("/reports")
@login_required
def index() -> ResponseReturnValue:
    sequences = keyset_page(select(Sequence).where(Sequence.team_id == team_id()), Sequence.id)
    counts = totals([s.id for s in sequences.items])
    documents = None
    if team().plan == Plan.TEAM:
        documents = keyset_page(
            select(Document).where(
                Document.team_id == team_id(),
                Document.status == DocumentStatus.READY,
                Document.deleted_at.is_(None),
            ),
            Document.id,
            size=20,
        )
    return render_template(
        "app/reports.html",
        sequences=sequences,
        totals=counts,
        documents=documents,
        document_charts=_document_charts(documents.items if documents else []),
    )


def _document_charts(documents: list[Document]) -> dict[int, tuple[Markup, float, int]]:
    out = {}
    for document in documents:
        values = seconds_per_page(db(), document)
        summary = visit_summary(db(), document.id)
        chart = seconds_per_page_svg(values, f"Seconds per page of {document.name}")
        out[document.id] = (chart, summary.seconds, summary.visits)
    return out


@bp.get("/reports/sequences/<int:sequence_id>")
@login_required
def sequence(sequence_id: int) -> ResponseReturnValue:
    found = owned(Sequence, sequence_id)
    rows = funnel(found)
    times = reply_times(found)
    total_sent = sum(r.sent for r in rows)
    enrolled = int(
        db().scalar(
            select(func.count()).select_from(Enrollment).where(Enrollment.sequence_id == found.id)
        )
        or 0
    )
    replied_enrollments = int(
        db().scalar(
            select(func.count())
            .select_from(Enrollment)
            .where(Enrollment.sequence_id == found.id, Enrollment.state == "replied")
        )
        or 0
    )
    return render_template(
        "app/report_sequence.html",
        sequence=found,
        rows=rows,
        chart=funnel_svg(rows, f"Funnel by step of {found.name}"),
        stages=STAGES,
        stage_labels=STAGE_LABELS,
        median_reply=describe_duration(timedelta(seconds=median(t.total_seconds() for t in times)))
        if times
        else None,
        total_sent=total_sent,
        enrolled=enrolled,
        replied_enrollments=replied_enrollments,
        reply_rate=percent(replied_enrollments, enrolled),
    )
