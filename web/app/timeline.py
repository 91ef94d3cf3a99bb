"""What happened, in order: events and state changes as one list, and state per recipient.

Owns how the app words each event (sent, open, click, reply, auto-reply, bounce,
soft bounce, delay, complaint, a teammate's answer, messages that are no reply,
document views) and each enrolment state change
with its reason, for an enrolment, a prospect or one email; and the per-recipient
state of sent emails (sent, opened, clicked, replied, bounced) for the sent list.

Opens are told apart as the README's tracking table says: a counted open (a
person, Gmail's proxy, or inferred from a click) is "Opened"; an Apple Mail
prefetch is "Probably opened" and never makes a recipient `opened`. Events
exist only for reader activity: own devices, scanners and bots never appear.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select

from core.models import EnrollmentTransition, Event, InboundMessage, SentMessage
from web.db import db

HISTORY_PAGE = 100
STATE_ORDER = ("sent", "opened", "clicked", "replied", "bounced")


@dataclass(frozen=True)
class Item:
    at: datetime
    kind: str  # event kind, or "state"
    label: str
    detail: str = ""
    text: str | None = None  # a reply's new text
    css: str = ""
    sent_message_id: int | None = None
    order: int = 0  # tie-break: events before state changes they caused


# What an "other" message was (worker.matching.classify's note).
_OTHER_LABELS = {
    "delivered": "Delivery confirmed (a success notice)",
    "read_receipt": "Read receipt",
    "calendar": "Calendar invitation or response",
    "automatic": "Automatic message (not a reply)",
    "bulk": "Newsletter or notification (not a reply)",
}


def _not_the_prospect(kind: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """Label and detail of an answer that halted nothing: a teammate, a receipt, no reply."""
    sender = f"from {data.get('from') or 'someone'}"
    if kind == "auto_reply" and data.get("acknowledgement"):
        return "Auto-reply (acknowledgement, nothing paused)", sender
    if kind == "teammate_reply":
        return "A teammate answered (not the prospect; nothing halted)", sender
    if kind == "other":
        return _OTHER_LABELS.get(str(data.get("note") or ""), "Not a reply"), sender
    return None


def _open_label(data: dict[str, Any]) -> tuple[str, str]:
    if data.get("inferred"):
        return "Opened (seen from a click)", "open"
    if data.get("probable"):
        return "Probably opened (Apple Mail prefetch, not counted)", "proxy"
    if data.get("hit_class") == "google_proxy":
        return "Opened (Gmail, device unknown)", "open"
    return "Opened", "open"


def _bounce_detail(data: dict[str, Any]) -> str:
    parts = [str(data.get(k) or "") for k in ("status", "reason")]
    text = " ".join(p for p in parts if p)
    if data.get("recipient"):
        text = f"{text} ({data['recipient']})" if text else str(data["recipient"])
    diagnostic = str(data.get("diagnostic") or "")
    return f"{text} — {diagnostic}" if diagnostic else text


def describe(event: Event, subject: str | None, step: int | None) -> Item:
    data = dict(event.data or {})
    kind = event.kind
    where = f"step {step + 1}: " if step is not None else ""
    label, detail, css = kind.replace("_", " ").capitalize(), "", kind
    if kind == "sent":
        label, detail = "Sent", f"{where}{subject or data.get('subject') or ''}"
    elif kind == "open":
        label, css = _open_label(data)
        detail = f"{where}{subject or ''}"
    elif kind == "click":
        label, detail = "Clicked", str(data.get("url") or "")
    elif kind == "reply":
        sender = data.get("from") or "someone"
        label = "Asked to be removed" if data.get("unsubscribe") else "Replied"
        detail = f"from {sender}"
    elif (not_the_prospect := _not_the_prospect(kind, data)) is not None:
        label, detail = not_the_prospect
    elif kind == "auto_reply":
        until = str(data.get("until") or "")[:10]
        label = "Auto-reply (out of office)"
        detail = f"back {until}" if until else "no return date given"
        if data.get("resume_at"):
            detail += f"; sequence resumes {str(data['resume_at'])[:16].replace('T', ' ')} UTC"
    elif kind == "bounce":
        label, detail = "Bounced", _bounce_detail(data)
    elif kind == "soft_bounce":
        label, detail = "Soft bounce (will retry)", _bounce_detail(data)
    elif kind == "delayed":
        label, detail = "Delivery delayed (the server is still trying)", _bounce_detail(data)
    elif kind == "complaint":
        label, detail = "Marked as spam", str(data.get("feedback_type") or "")
    elif kind.startswith("document_"):
        label, detail = "Document", str(data.get("text") or data.get("document") or "")
        css = "document"
    return Item(
        at=event.occurred_at,
        kind=kind,
        label=label,
        detail=detail,
        css=css,
        sent_message_id=event.sent_message_id,
    )


def _transition_item(row: EnrollmentTransition) -> Item:
    if row.from_state == row.to_state:
        label = f"Still {row.to_state.replace('_', ' ')}"
    elif row.from_state == "new":
        label = f"Enrolled ({row.to_state})"
    else:
        label = f"{row.from_state.replace('_', ' ')} → {row.to_state.replace('_', ' ')}"
    return Item(at=row.at, kind="state", label=label, detail=row.reason, css="state", order=1)


@dataclass(frozen=True)
class History:
    items: list[Item]
    next_before: str | None  # ISO time: the next page holds what happened before it


def history(
    *,
    event_filter: ColumnElement[bool],
    enrollment_ids: list[int] | None = None,
    before: datetime | None = None,
    size: int = HISTORY_PAGE,
) -> History:
    """Events matching `event_filter` and the enrolments' state changes, newest first."""
    session = db()
    events_q = (
        select(Event, SentMessage.subject, SentMessage.step_position, InboundMessage.text)
        .outerjoin(SentMessage, SentMessage.id == Event.sent_message_id)
        .outerjoin(InboundMessage, InboundMessage.id == Event.inbound_message_id)
        .where(event_filter)
    )
    if before is not None:
        events_q = events_q.where(Event.occurred_at < before)
    rows = session.execute(
        events_q.order_by(Event.occurred_at.desc(), Event.id.desc()).limit(size + 1)
    ).all()
    items: list[Item] = []
    for event, subject, step, text in rows:
        item = describe(event, subject, step)
        if event.kind in ("reply", "auto_reply") and text:
            item = replace(item, text=text)
        items.append(item)
    if enrollment_ids:
        transitions_q = select(EnrollmentTransition).where(
            EnrollmentTransition.enrollment_id.in_(enrollment_ids)
        )
        if before is not None:
            transitions_q = transitions_q.where(EnrollmentTransition.at < before)
        transitions = session.scalars(
            transitions_q.order_by(
                EnrollmentTransition.at.desc(), EnrollmentTransition.id.desc()
            ).limit(size + 1)
        ).all()
        items.extend(_transition_item(t) for t in transitions)
    items.sort(key=lambda i: (i.at, -i.order), reverse=True)
    more = len(items) > size
    items = items[:size]
    next_before = items[-1].at.isoformat() if more and items else None
    return History(items=items, next_before=next_before)


# -- state per recipient -----------------------------------------------------------------


@dataclass
class RecipientState:
    address: str
    states: list[str] = field(default_factory=lambda: ["sent"])
    probable_open: bool = False

    def add(self, state: str) -> None:
        if state not in self.states:
            self.states.append(state)
            self.states.sort(key=STATE_ORDER.index)

    @property
    def state(self) -> str:
        """The furthest state reached: replied beats clicked beats opened."""
        return self.states[-1]


@dataclass
class MessageState:
    """Each recipient's state; opens and clicks of an email to several people are the email's.

    One message goes to every To and Cc address, so its pixel cannot tell who
    opened it: with more than one recipient, opens and clicks are shown for the
    email as a whole rather than pinned on the first address.
    """

    recipients: list[RecipientState]
    replies_from_others: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)  # opened / clicked by someone on it
    shared_probable: bool = False


def recipient_states(messages: Iterable[SentMessage]) -> dict[int, MessageState]:
    """Per sent message, each recipient's state, from the messages' events (one query)."""
    by_id = {m.id: m for m in messages}
    out: dict[int, MessageState] = {}
    for message in by_id.values():
        recipients = [RecipientState(a) for a in [*message.to_addrs, *message.cc_addrs]]
        if message.status != "sent":
            for r in recipients:
                r.states = [message.status]
        out[message.id] = MessageState(recipients)
    if not by_id:
        return out
    rows = db().execute(
        select(Event.sent_message_id, Event.kind, Event.data).where(
            Event.sent_message_id.in_(list(by_id)),
            Event.kind.in_(["open", "click", "reply", "bounce", "complaint"]),
        )
    )
    for sent_id, kind, data in rows:
        _apply(out[int(sent_id)], str(kind), data or {})
    return out


def _apply(state: MessageState, kind: str, data: dict[str, Any]) -> None:
    """Move the recipient an event is about: opens and clicks by index, the rest by address."""
    if kind in ("open", "click"):
        probable = kind == "open" and bool(data.get("probable"))
        if len(state.recipients) > 1:
            if probable:
                state.shared_probable = True
                return
            for reached in ("opened", "clicked") if kind == "click" else ("opened",):
                if reached not in state.shared:
                    state.shared.append(reached)
            return
        index = int(data.get("recipient") or 0)
        if index >= len(state.recipients):
            return
        target = state.recipients[index]
        if probable:
            target.probable_open = True
            return
        target.add("opened")
        if kind == "click":
            target.add("clicked")
        return
    who = data.get("from") if kind == "reply" else data.get("recipient")
    address = str(who or "").lower()
    match = next((r for r in state.recipients if r.address.lower() == address), None)
    if match is None and kind == "reply":
        # A colleague or someone on CC answered: the email was replied to.
        if address and address not in state.replies_from_others:
            state.replies_from_others.append(address)
        if len(state.recipients) == 1:
            state.recipients[0].add("replied")
        return
    fallback = match or (state.recipients[0] if state.recipients else None)
    if fallback is not None:
        fallback.add("replied" if kind == "reply" else "bounced")
