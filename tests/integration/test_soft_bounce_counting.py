"""Which soft bounces count toward the limit, and how long each retry waits.

Found by mutation testing (`make mutation`): the soft-bounce rule
(worker/sequences/rules.py `_soft_bounce`) counted the prospect's soft bounces
in the window, and test_signals' one scenario passed as well when it counted
every other event instead, everybody's soft bounces, ones from any time, or
when the back-off grew by three instead of two. A prospect has opens and
clicks, other prospects bounce too, and old bounces lie outside the window:
only this prospect's soft bounces of the last `SIGHTLINE_SOFT_BOUNCE_WINDOW_DAYS`
count, and the n-th retry waits `retry seconds * 2**(n-1)`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from config import get_settings
from core.db import session_scope
from core.events import record_event
from core.models import EnrollmentTransition, Event, Prospect, utcnow
from tests.integration.test_signals import (
    PROSPECT,
    SENDER,
    deliver_inbound,
    enrollment,
    make_due,
    prospect,
    send_step,
    soft_bounce,
    team,
)

__all__ = ["team"]  # the fixture, shared with test_signals

RETRY_SECONDS = 600


def other_events(team_id: int) -> None:
    """What else happened: Dana opened and clicked; Lee soft-bounced; Dana bounced long ago."""
    dana = prospect().id
    now = utcnow()
    with session_scope() as session:
        lee = Prospect(team_id=team_id, email="lee@globex.test")
        session.add(lee)
        session.flush()
        for n, (kind, who) in enumerate(
            [("open", dana), ("click", dana), ("open", dana), ("soft_bounce", lee.id)]
        ):
            record_event(session, team_id=team_id, key=f"other:{n}", kind=kind, prospect_id=who)
        record_event(session, team_id=team_id, key="old", kind="soft_bounce", prospect_id=dana)
        session.execute(
            update(Event).where(Event.key == "old").values(created_at=now - timedelta(days=8))
        )


def last_reason(enrollment_id: int) -> str:
    with session_scope() as session:
        return str(
            session.scalars(
                select(EnrollmentTransition.reason)
                .where(EnrollmentTransition.enrollment_id == enrollment_id)
                .order_by(EnrollmentTransition.id.desc())
            ).first()
        )


def test_only_this_prospects_recent_soft_bounces_count_and_each_retry_waits_twice_as_long(
    team: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_SOFT_BOUNCE_LIMIT", "3")
    monkeypatch.setenv("SIGHTLINE_SOFT_BOUNCE_RETRY_SECONDS", str(RETRY_SECONDS))
    get_settings.cache_clear()
    other_events(team["team"])
    intro = team["intro"]

    for n in (1, 2):  # the first and second soft bounces are retried
        _, original = send_step(intro)
        before = utcnow()
        deliver_inbound(soft_bounce(original, SENDER, PROSPECT))
        retried = enrollment(intro)
        assert retried.state == "active", f"soft bounce {n}: {retried.state_reason}"
        assert f"soft bounce {n} " in last_reason(intro)
        wait = RETRY_SECONDS * 2 ** (n - 1)
        assert retried.next_step_at is not None
        assert before + timedelta(seconds=wait - 1) <= retried.next_step_at
        assert retried.next_step_at <= utcnow() + timedelta(seconds=wait)
        make_due(intro)

    _, original = send_step(intro)
    deliver_inbound(soft_bounce(original, SENDER, PROSPECT))
    stopped = enrollment(intro)
    assert stopped.state == "bounced"
    assert stopped.state_reason is not None and stopped.state_reason.startswith(
        "3 soft bounces in 7 days"
    )
