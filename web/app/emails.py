"""The emails a team sent and scheduled, and each one with what happened to it.

Owns `/emails` (sent, scheduled and cancelled, newest first: one-off emails and
sequence steps, with each recipient's state), `/emails/<id>` (one email: its
recipients, its body, its attachments and documents, its history and hits) and
cancelling a scheduled one (a conditional UPDATE in `worker.sequences.oneoff`:
too late once the worker has claimed it). Writing one is `web.app.compose`'s.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from core.models import (
    Document,
    Enrollment,
    Event,
    OneOffAttachment,
    OneOffEmail,
    OneOffStatus,
    SendStatus,
    SentMessage,
    Sequence,
    TrackingHit,
    utcnow,
)
from web.app.common import (
    app_blueprint,
    keyset_page,
    owned,
    team_id,
)
from web.app.preview import (
    build_preview,
)
from web.app.timeline import history, recipient_states
from web.auth import login_required
from web.db import db
from worker.sequences import oneoff

bp = app_blueprint("emails", __name__)
log = logging.getLogger(__name__)

VIEWS = ("sent", "scheduled", "cancelled")


# -- the lists -------------------------------------------------------------------------


@bp.get("/emails")
@login_required
def index() -> ResponseReturnValue:
    view = request.args.get("view") or "sent"
    if view not in VIEWS:
        view = "sent"
    if view == "sent":
        page = keyset_page(
            select(SentMessage, OneOffEmail.id, Sequence.id, Sequence.name)
            .outerjoin(OneOffEmail, OneOffEmail.sent_message_id == SentMessage.id)
            .outerjoin(Enrollment, Enrollment.id == SentMessage.enrollment_id)
            .outerjoin(Sequence, Sequence.id == Enrollment.sequence_id)
            .where(SentMessage.team_id == team_id()),
            SentMessage.id,
            scalars=False,
            key=lambda row: int(row[0].id),
        )
        states = recipient_states(row[0] for row in page.items)
    else:
        page = keyset_page(
            select(OneOffEmail).where(
                OneOffEmail.team_id == team_id(),
                OneOffEmail.status
                == (OneOffStatus.SCHEDULED if view == "scheduled" else OneOffStatus.CANCELLED),
            ),
            OneOffEmail.id,
        )
        states = {}
    scheduled = db().scalar(
        select(func.count())
        .select_from(OneOffEmail)
        .where(OneOffEmail.team_id == team_id(), OneOffEmail.status == OneOffStatus.SCHEDULED)
    )
    return render_template(
        "app/emails.html", page=page, view=view, states=states, scheduled=int(scheduled or 0)
    )


# -- one email -------------------------------------------------------------------------


def send_phase(email: OneOffEmail, sent: SentMessage | None) -> str:
    """The one true thing about this email now: scheduled, sending, waiting, sent, failed…

    A due email not yet claimed is already "sending" (its job is queued, or the next
    cron tick queues it), never "scheduled for" a time that has passed.
    """
    if sent is not None:
        if sent.status == SendStatus.SENDING and sent.error:
            return "waiting"  # the mailbox refused our login: it goes once reconnected
        return str(sent.status)
    if email.status == OneOffStatus.SCHEDULED:
        return "sending" if email.send_at <= utcnow() else "scheduled"
    return "sending" if email.status == OneOffStatus.CLAIMED else str(email.status)


@bp.get("/emails/<int:email_id>")
@login_required
def detail(email_id: int) -> ResponseReturnValue:
    email = owned(OneOffEmail, email_id)
    sent = db().get(SentMessage, email.sent_message_id) if email.sent_message_id else None
    attachments = (
        db()
        .execute(
            select(OneOffAttachment.id, OneOffAttachment.filename, OneOffAttachment.size_bytes)
            .where(OneOffAttachment.email_id == email.id)
            .order_by(OneOffAttachment.id)
        )
        .all()
    )
    documents = (
        list(db().scalars(select(Document).where(Document.id.in_(email.document_ids or []))))
        if email.document_ids
        else []
    )
    timeline = None
    hits: dict[str, int] = {}
    if sent is not None:
        timeline = history(
            event_filter=(Event.sent_message_id == sent.id) & (Event.team_id == sent.team_id)
        )
        for hit_class, count in db().execute(
            select(TrackingHit.hit_class, func.count())
            .where(TrackingHit.sent_message_id == sent.id)
            .group_by(TrackingHit.hit_class)
        ):
            hits[str(hit_class)] = int(count)
    preview_doc = build_preview(email.subject, email.body_html, None, None).document
    return render_template(
        "app/email.html",
        email=email,
        sent=sent,
        phase=send_phase(email, sent),
        states=recipient_states([sent]) if sent else {},
        attachments=attachments,
        documents=documents,
        timeline=timeline,
        hits=hits,
        preview_doc=preview_doc,
    )


@bp.post("/emails/<int:email_id>/cancel")
@login_required
def cancel(email_id: int) -> ResponseReturnValue:
    email = owned(OneOffEmail, email_id)
    if oneoff.cancel(db(), email.id, team_id(), utcnow()):
        db().commit()
        flash("Cancelled: this email will not be sent.", "ok")
    else:
        db().rollback()
        flash("Too late to cancel: it is already being sent.", "error")
    return redirect(url_for("emails.detail", email_id=email.id))
