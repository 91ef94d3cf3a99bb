"""After the drain: what the product holds, against what the ledger says it must.

The expected side comes from the ledger only (`tests.chaos.ledger`); the actual
side is read where a user would find it: the database the app shows, the
org's Tasks, the Redis counter an operator reads.

    hits        every acknowledged hit (pixel 200, click 302) is one tracking_hits
                row, found by the marker in its User-Agent: lost = acknowledged
                without a row, duplicated = extra rows; shed = answers marked
                shed, or the product's counter, whichever is more
    answers     every injected reply, out-of-office, bounce and delay notice is
                recorded against the delivered message it answers
    sends       each step reached each prospect once (the SMTP server's log)
    enrolments  halted exactly as the message demands (replied / bounced / paused
                then resumed and finished / finished), no step claimed after a
                reply or bounce was recorded
    Salesforce  the Tasks the ledger owes, by (WhoId, Subject): none missing, none
                twice, none unexplained (strangers); each sent email's open and
                click counters within what the acknowledged hits demand; dead
                letters (rows given up on) listed
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from core.db import session_scope
from core.models import (
    Enrollment,
    EnrollmentTransition,
    Event,
    InboundMessage,
    OutboxStatus,
    SalesforceOutbox,
    SendStatus,
    SentMessage,
    TrackingHit,
)
from core.redis import get_redis
from tests.chaos.ledger import Ledger, Prospect, Range
from tests.chaos.load import MARKER
from tests.chaos.result import FSYNC_WINDOW_SECONDS, ChaosResult
from web.tracking.limits import SHED_KEY
from worker.matching.msgid import normalize_msgid

HALTS = {"reply": "replied", "bounce": "bounced"}
SIGNALS = {"reply": "reply", "auto_reply": "auto_reply", "bounce": "bounce", "delayed": "delayed"}


def check_all(ledger: Ledger, result: ChaosResult, admin: Any, crash_at: float | None) -> None:
    check_hits(ledger, result, crash_at)
    sents = sent_rows()
    check_answers(ledger, result, sents)
    check_sends(ledger, result, sents)
    check_enrollments(ledger, result, sents)
    check_salesforce(ledger, result, admin)


# -- hits -------------------------------------------------------------------------------


def check_hits(ledger: Ledger, result: ChaosResult, crash_at: float | None) -> None:
    with session_scope() as session:
        rows = {
            str(ua).rpartition(" ")[2]: int(n)
            for ua, n in session.execute(
                select(TrackingHit.user_agent, func.count())
                .where(TrackingHit.user_agent.like(f"%{MARKER}%"))
                .group_by(TrackingHit.user_agent)
            )
        }
    result.hits_sent = len(ledger.hits)
    for hit in ledger.hits:
        stored = rows.get(hit.marker, 0)
        result.hits_duplicated += max(0, stored - 1)
        result.shed_seen += hit.shed
        if not hit.acknowledged:
            result.hits_refused[hit.error or f"http {hit.status}"] += 1
            result.hits_recorded_unacknowledged += stored > 0
            continue
        result.hits_acknowledged += 1
        if stored or hit.shed:
            continue  # a shed hit is counted as shed, not as lost
        result.hits_lost += 1
        if crash_at is not None and 0 <= crash_at - hit.finished <= FSYNC_WINDOW_SECONDS:
            result.hits_lost_in_fsync_window += 1
            result.fsync_loss_oldest = max(result.fsync_loss_oldest, crash_at - hit.finished)
        elif len(result.problems) < 200:
            result.problems.append(
                f"hit {hit.marker} ({hit.kind}) acknowledged at {hit.finished:.3f} is not recorded"
            )
    counted = get_redis().hgetall(SHED_KEY)
    result.shed_counted = sum(int(v) for v in counted.values())


# -- answers, sends, enrolments ---------------------------------------------------------


def sent_rows() -> list[tuple[Any, ...]]:
    """(id, enrollment id, step position, status, claimed_at, sent_at, Message-ID) per send."""
    with session_scope() as session:
        return [
            (
                int(s.id),
                s.enrollment_id,
                s.step_position,
                str(s.status),
                s.claimed_at,
                s.sent_at,
                normalize_msgid(s.message_id) or s.message_id,
            )
            for s in session.scalars(select(SentMessage))
        ]


def _signals() -> tuple[dict[int, list[tuple[str, datetime]]], Counter[int]]:
    """(enrolment → its answers' signals and when recorded, inbound id → events for it)."""
    signal_at: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    per_inbound: Counter[int] = Counter()
    with session_scope() as session:
        for event in session.scalars(select(Event).where(Event.inbound_message_id.is_not(None))):
            per_inbound[int(event.inbound_message_id or 0)] += 1
            if event.enrollment_id is not None:
                signal_at[int(event.enrollment_id)].append((str(event.kind), event.created_at))
    return signal_at, per_inbound


def check_answers(ledger: Ledger, result: ChaosResult, sents: list[tuple[Any, ...]]) -> None:
    """Each injected answer recorded once, against the message it answers, with its signal."""
    message_of = {sent_id: message_id for sent_id, *_, message_id in sents}
    with session_scope() as session:
        inbound = {
            str(m.rfc_message_id): (int(m.id), m.sent_message_id, bool(m.quarantined))
            for m in session.scalars(select(InboundMessage))
            if m.rfc_message_id
        }
    result.quarantined = sum(1 for _, _, q in inbound.values() if q)
    signal_at, per_inbound = _signals()
    for rfc_id, answer in ledger.answers.items():
        result.delivered[answer.outcome] += 1
        found = inbound.get(rfc_id)
        if found is None or found[2]:
            result.answers_lost += 1
            result.problems.append(
                f"{answer.outcome} {rfc_id} to {answer.answers.message_id} "
                f"({answer.prospect.email}) " + ("quarantined" if found else "not recorded")
            )
            continue
        inbound_id, matched_sent, _ = found
        matched = message_of.get(int(matched_sent)) if matched_sent is not None else None
        kinds = [k for k, _ in signal_at.get(answer.prospect.enrollment_id or 0, [])]
        if matched == answer.answers.message_id and SIGNALS[answer.outcome] in kinds:
            result.matched[answer.outcome] += 1
        else:
            result.answers_lost += 1
            result.problems.append(
                f"{answer.outcome} {rfc_id} matched {matched} (it answers "
                f"{answer.answers.message_id}), signals {kinds}"
            )
        result.answers_duplicated += max(0, per_inbound[inbound_id] - 1)


def check_sends(ledger: Ledger, result: ChaosResult, sents: list[tuple[Any, ...]]) -> None:
    """Each step reached its prospect once: the SMTP server's log, and the product's rows."""
    per_step: Counter[tuple[str, int]] = Counter()
    for delivery in ledger.delivered():
        per_step[(delivery.prospect, delivery.step)] += 1
    for (prospect, step), n in per_step.items():
        result.sends[step] += 1
        if n > 1:
            result.sends_duplicated += n - 1
            result.problems.append(f"step {step} reached {prospect} {n} times")
    rows: Counter[tuple[int, int]] = Counter()
    for _, enrollment_id, step, status, *_ in sents:
        if status == SendStatus.SENT and enrollment_id is not None and step is not None:
            rows[(int(enrollment_id), int(step))] += 1
    for (enrollment_id, step), n in rows.items():
        if n > 1:
            result.problems.append(f"enrolment {enrollment_id} step {step + 1}: {n} sent rows")


def check_enrollments(ledger: Ledger, result: ChaosResult, sents: list[tuple[Any, ...]]) -> None:
    with session_scope() as session:
        enrollments = {
            int(e.id): (str(e.state), int(e.steps_sent))
            for e in session.scalars(select(Enrollment))
        }
        transitions: dict[int, list[tuple[datetime, str, str]]] = defaultdict(list)
        ordered = select(EnrollmentTransition).order_by(EnrollmentTransition.id)
        for t in session.scalars(ordered):
            transitions[int(t.enrollment_id)].append((t.at, str(t.from_state), str(t.to_state)))
    signal_at, _ = _signals()
    for prospect in ledger.prospects:
        eid = prospect.enrollment_id
        if eid is None or eid not in enrollments:
            result.wrong_halts += 1
            result.problems.append(f"{prospect.email}: never enrolled")
            continue
        state, steps_sent = enrollments[eid]
        result.states[state] += 1
        history = transitions.get(eid, [])
        if any(to == "paused" for _, _, to in history) and state == "finished":
            result.paused_and_resumed += 1
        mine = [s for s in sents if s[1] == eid]
        wrong = wrong_halt(
            ledger, result, prospect, state, steps_sent, history, signal_at.get(eid, []), mine
        )
        if wrong:
            result.wrong_halts += 1
            result.problems.append(f"{prospect.email} (enrolment {eid}): {wrong}")


def wrong_halt(
    ledger: Ledger,
    result: ChaosResult,
    prospect: Prospect,
    state: str,
    steps_sent: int,
    history: list[tuple[datetime, str, str]],
    signals: list[tuple[str, datetime]],
    mine: list[tuple[Any, ...]],
) -> str | None:
    """Why this enrolment did not end as its prospect's answer demands, or None.

    What reached the prospect comes from the ledger (the SMTP server); when the
    product recorded the answer, and when it claimed each step, from its rows.
    """
    delivered = sorted(ledger.steps_of(prospect.email))
    halting = [at for kind, at in signals if kind in HALTS]
    want = HALTS.get(prospect.outcome)
    if want is None:
        if halting:
            return f"halted by a {prospect.outcome}"
        if state != "finished" or steps_sent != 2:
            return f"expected finished after 2 steps, is {state} after {steps_sent}"
        if delivered != [1, 2]:
            return f"finished, yet the SMTP server delivered steps {delivered}"
        if prospect.outcome == "auto_reply" and not any(k == "auto_reply" for k, _ in signals):
            return "its out-of-office was not recorded"
        return None
    if not halting:
        return f"its {prospect.outcome} never halted it (state {state})"
    recorded = min(halting)
    after = [s for s in mine if s[3] == "sent" and s[4] > recorded]
    if after:
        return f"step {after[0][2] + 1} claimed after the {prospect.outcome} was recorded"
    result.handover_window += sum(1 for s in mine if s[3] == "sent" and s[5] and s[5] > recorded)
    if any(to == "finished" and at <= recorded for at, _, to in history):
        result.halted_after_last_step[prospect.outcome] += 1
        if delivered != [1, 2]:
            return f"finished before its {prospect.outcome}, yet delivered steps {delivered}"
        return None
    if state != want:
        return f"{prospect.outcome} recorded while live, yet the enrolment is {state}"
    if delivered not in ([1], [1, 2]):
        return f"{state}, and the SMTP server delivered steps {delivered}"
    return None


# -- Salesforce -------------------------------------------------------------------------


def check_salesforce(ledger: Ledger, result: ChaosResult, admin: Any) -> None:
    with session_scope() as session:
        for row_key, kind, error in session.execute(
            select(SalesforceOutbox.key, SalesforceOutbox.kind, SalesforceOutbox.last_error).where(
                SalesforceOutbox.status == OutboxStatus.FAILED
            )
        ):
            result.dead_letters.append(f"{row_key} ({kind}): {error}")
        unsettled = session.execute(
            select(
                SalesforceOutbox.key, SalesforceOutbox.status, SalesforceOutbox.last_error
            ).where(SalesforceOutbox.status.not_in([OutboxStatus.DONE, OutboxStatus.FAILED]))
        ).all()
    for row_key, status, error in unsettled:
        result.problems.append(f"outbox {row_key} left {status}: {error}")

    tasks = admin.tasks()
    owed = ledger.expected_tasks()
    held: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for task in tasks:
        held[(str(task.get("WhoId")), str(task.get("Subject")))].append(task)
    result.tasks_expected = sum(owed.values())
    result.tasks_in_org = len(tasks)
    for key in sorted(owed):
        count = len(held.get(key, []))
        if count == 0:
            result.tasks_missing += 1
            if result.tasks_missing <= 20:
                result.problems.append(f"no Task {key[1]!r} on {key[0]}")
        result.tasks_duplicated += max(0, count - 1)
    for key, unexplained in sorted(held.items()):
        if key not in owed:
            result.strangers += len(unexplained)
            result.problems.append(f"{len(unexplained)} Task(s) {key[1]!r} on {key[0]} nobody owed")
    check_engagement(ledger, result, held)


def check_engagement(
    ledger: Ledger, result: ChaosResult, held: dict[tuple[str, str], list[dict[str, Any]]]
) -> None:
    """Each sent email's Task counts the opens and clicks the acknowledged hits demand."""
    expected = ledger.expected_engagement()
    who = {p.email: p.who_id for p in ledger.prospects}
    for delivery in ledger.delivered():
        tasks = held.get((who.get(delivery.prospect, ""), f"Email: {delivery.subject}"), [])
        if len(tasks) != 1:
            continue  # missing or twice: counted above
        task = tasks[0]
        opens, clicks = expected[delivery.message_id]
        got = (
            int(task.get("Sightline_Opens__c") or 0),
            int(task.get("Sightline_Clicks__c") or 0),
        )
        result.engagement_checked += 1
        for value, wanted, what in ((got[0], opens, "opens"), (got[1], clicks, "clicks")):
            _compare(result, value, wanted, f"{delivery.message_id} {what}")


def _compare(result: ChaosResult, value: int, wanted: Range, what: str) -> None:
    if wanted.holds(value):
        return
    if value < wanted.low:
        result.engagement_short += wanted.low - value
    else:
        result.engagement_over += value - wanted.high
    if result.engagement_mismatches <= 20:
        result.problems.append(f"{what}: the Task counts {value}, the hits demand {wanted}")
