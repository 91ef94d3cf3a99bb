"""The message a claimed `SentMessage` becomes, for its mailbox and for its Salesforce Task.

A sequence step's body is its template filled in for the prospect; a one-off
email's body was written, filled in and checked when it was composed (its
`OneOffEmail` row, with its attachments). Either way the documents on the
message are added (tracked links made per recipient only when sending, or
files), and tracking is applied only to what is actually sent: never to the
copy in a Salesforce description, only when the email has it on (a one-off's
own switch; a sequence's own choice, else the team's "tracking on by default"),
only to an HTML body, and never for a prospect marked "do not track". The
plain-text part keeps the real links.

A sequence step carries List-Unsubscribe (https and mailto) and
List-Unsubscribe-Post (RFC 8058 one-click) when its team has them on (the
default); a one-off email a person writes does not: it is one person's mail,
not a campaign, and a one-click header there would let a mail client end the
prospect's sequences from a personal note. ``{{unsubscribe_link}}`` works in both.

Both senders (`delivering`, for steps and one-offs alike) and the claim (the
sender's name and signature: `mailbox_sender`) read from here. This module never sends,
never claims and never changes a row's status.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import get_settings
from core.models import (
    Enrollment,
    Mailbox,
    OneOffAttachment,
    OneOffEmail,
    Prospect,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    User,
)
from core.tracking.html import apply_tracking
from core.tracking.tokens import now_seconds, unsubscribe_url
from core.tracking_domains import tracking_base_url
from worker.documents.outgoing import documents_for_message
from worker.salesforce.task_limits import DESCRIPTION_LIMIT
from worker.sequences.optouts import UNSUBSCRIBE_SUBJECT
from worker.sequences.render import html_to_text, render_template
from worker.sync.base import Attachment, OutgoingMessage


@dataclass(frozen=True)
class Sender:
    """The mailbox owner's own values: ``{{sender_name}}``, ``{{signature}}``."""

    user_id: int | None
    name: str | None
    signature: str | None


def mailbox_sender(session: Session, mailbox: Mailbox) -> Sender:
    """Who sends from `mailbox` (its owner), with the values only they can fill in."""
    if mailbox.user_id is None:
        return Sender(None, None, None)
    found = session.execute(
        select(User.name, User.signature).where(User.id == mailbox.user_id)
    ).first()
    if found is None:
        return Sender(None, None, None)
    return Sender(mailbox.user_id, found.name, found.signature)


def outgoing_message(
    session: Session, sent: SentMessage, mailbox: Mailbox, *, tracked: bool = False
) -> OutgoingMessage:
    """The message as handed over; `tracked` applies the pixel and click links.

    Tracking is applied only to what is actually sent (never to the copy in a
    Salesforce description), only when the email has it on, and only to an HTML
    body. The plain-text part keeps the real links.
    """
    prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
    body_html = ""
    # Tracking is chosen per email: a one-off's own switch, a sequence's own choice,
    # else the team's default (Team.tracking_enabled, "tracking on by default").
    team = session.get_one(Team, sent.team_id)
    track_this = team.tracking_enabled
    extra_attachments: list[Attachment] = []
    headers: dict[str, str] = {}
    if sent.enrollment_id is not None and sent.step_position is not None:
        if prospect is not None and team.unsubscribe_headers:
            headers = unsubscribe_headers(sent.team_id, prospect.email, mailbox.email)
        enrollment = session.get_one(Enrollment, sent.enrollment_id)
        chosen = session.scalar(
            select(Sequence.tracking).where(Sequence.id == enrollment.sequence_id)
        )
        track_this = team.tracking_enabled if chosen is None else chosen
        step = session.scalar(
            select(SequenceStep).where(
                SequenceStep.sequence_id == enrollment.sequence_id,
                SequenceStep.position == sent.step_position,
            )
        )
        if step is not None:
            sender = mailbox_sender(session, mailbox)
            body_html = render_template(
                step.body_html,
                prospect,
                mailbox,
                html=True,
                sender_name=sender.name,
                sender_signature=sender.signature,
            )
    else:
        # A one-off email: its body was written, filled in and checked when composed.
        composed = composed_body(session, sent, with_files=tracked)
        if composed is not None:
            body_html, track_this, extra_attachments = composed
    # Links, the pixel and document links use the team's verified tracking host, if any.
    base_url = tracking_base_url(team)
    # Documents on the step: tracked links (made per recipient only when sending) and files.
    documents = documents_for_message(session, sent, base_url=base_url, sending=tracked)
    body_html = documents.add_to(body_html)
    sent_html = body_html
    # A prospect marked "do not track" is never tracked, whatever the email chose.
    tracking_on = track_this and not (prospect is not None and prospect.do_not_track)
    if tracked and body_html.strip() and tracking_on:
        sent_html = apply_tracking(
            body_html,
            base_url=base_url,
            own_urls=(get_settings().public_base_url,),
            sent_message_id=sent.id,
            team_id=sent.team_id,
            recipient=0,  # a step goes to one prospect: to_addrs[0]
            issued_at=now_seconds(),
        ).html
    return OutgoingMessage(
        from_addr=mailbox.email,
        to=list(sent.to_addrs),
        cc=list(sent.cc_addrs),
        subject=sent.subject,
        html=sent_html,
        text=html_to_text(body_html),
        message_id=sent.message_id,
        in_reply_to=sent.in_reply_to,
        references=(sent.references or "").split(),
        thread_id=sent.thread_id,
        extra_headers=headers,
        attachments=[*documents.attachments, *extra_attachments],
    )


def unsubscribe_headers(team_id: int, email: str, sender: str) -> dict[str, str]:
    """RFC 2369 List-Unsubscribe (https first, then mailto) and RFC 8058 one-click.

    The https link is what one-click clients POST to; the mailto asks the sender's
    own mailbox, where the sync reads a message with that subject as a request
    to be removed (`worker.sync.inbound`).
    """
    url = unsubscribe_url(get_settings().public_base_url, team_id, email)
    return {
        "List-Unsubscribe": f"<{url}>, <mailto:{sender}?subject={UNSUBSCRIBE_SUBJECT}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def sent_description(session: Session, sent: SentMessage) -> str:
    mailbox = session.get_one(Mailbox, sent.mailbox_id)
    body = html_to_text(outgoing_message(session, sent, mailbox).html)
    header = f"To: {', '.join(sent.to_addrs)}\nFrom: {mailbox.email}\nSubject: {sent.subject}\n\n"
    return (header + body)[:DESCRIPTION_LIMIT]


def composed_body(
    session: Session, sent: SentMessage, *, with_files: bool
) -> tuple[str, bool, list[Attachment]] | None:
    """(body HTML, tracking on, plain attachments) of the one-off email behind `sent`."""
    email = session.scalar(select(OneOffEmail).where(OneOffEmail.sent_message_id == sent.id))
    if email is None:
        return None
    files: list[Attachment] = []
    if with_files:
        rows = session.scalars(
            select(OneOffAttachment)
            .where(OneOffAttachment.email_id == email.id)
            .order_by(OneOffAttachment.id)
        )
        files = [Attachment(r.filename, r.content_type, r.data) for r in rows]
    return email.body_html, email.tracked, files
