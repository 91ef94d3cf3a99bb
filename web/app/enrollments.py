"""One enrolment: its history, and pausing, resuming or finishing it by hand.

The history is every event of the enrolment (sends, opens, clicks, replies with
their text, auto-replies, bounces, complaints, document views) merged with every
state change and its reason (`web.app.timeline`). State changes made here go
through `worker.sequences.by_hand` (what the add-ons share), the same conditional
UPDATE the workers use, so a reply arriving at the same moment wins or loses cleanly and
the history records who did what:

    active ──pause──▶ paused ──resume──▶ active (the next step goes out now, or
      │                  │                 at its time if that is still ahead)
      └──finish──────────┴──────────────▶ finished (no further step)
"""

from __future__ import annotations

from datetime import datetime

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from core.models import (
    Enrollment,
    Event,
    Mailbox,
    Prospect,
    SentMessage,
    Sequence,
)
from web.app.common import app_blueprint, owned, user
from web.app.timeline import history, recipient_states
from web.auth import login_required
from web.db import db
from worker.sequences.by_hand import Action, change_by_hand

bp = app_blueprint("enrollments", __name__)
DONE = {
    "pause": "Paused: no step goes out until you resume.",
    "resume": "Resumed.",
    "finish": "Finished: no further step goes out.",
}


def _before() -> datetime | None:
    raw = request.args.get("before_time") or ""
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@bp.get("/enrollments/<int:enrollment_id>")
@login_required
def detail(enrollment_id: int) -> ResponseReturnValue:
    enrollment = owned(Enrollment, enrollment_id)
    sequence = db().get_one(Sequence, enrollment.sequence_id)
    prospect = db().get_one(Prospect, enrollment.prospect_id)
    timeline = history(
        event_filter=(Event.enrollment_id == enrollment.id) & (Event.team_id == enrollment.team_id),
        enrollment_ids=[enrollment.id],
        before=_before(),
    )
    messages = list(
        db().scalars(
            select(SentMessage)
            .where(SentMessage.enrollment_id == enrollment.id)
            .order_by(SentMessage.id)
            .limit(200)
        )
    )
    return render_template(
        "app/enrollment.html",
        enrollment=enrollment,
        sequence=sequence,
        prospect=prospect,
        mailbox=db().get(Mailbox, sequence.mailbox_id),
        timeline=timeline,
        messages=messages,
        states=recipient_states(messages),
    )


def _change(enrollment_id: int, action: Action) -> ResponseReturnValue:
    enrollment = owned(Enrollment, enrollment_id)
    who = user().email
    changed = change_by_hand(db(), enrollment.id, action, who)
    db().commit()
    if changed:
        flash(DONE[action], "ok")
    else:
        db().refresh(enrollment)
        flash(
            f"Nothing changed: the enrolment is {enrollment.state.replace('_', ' ')} now "
            "(something else changed it first).",
            "error",
        )
    return redirect(url_for("enrollments.detail", enrollment_id=enrollment.id))


@bp.post("/enrollments/<int:enrollment_id>/pause")
@login_required
def pause(enrollment_id: int) -> ResponseReturnValue:
    return _change(enrollment_id, "pause")


@bp.post("/enrollments/<int:enrollment_id>/resume")
@login_required
def resume(enrollment_id: int) -> ResponseReturnValue:
    return _change(enrollment_id, "resume")


@bp.post("/enrollments/<int:enrollment_id>/finish")
@login_required
def finish(enrollment_id: int) -> ResponseReturnValue:
    return _change(enrollment_id, "finish")
