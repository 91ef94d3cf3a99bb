"""One-off emails: written by hand in the web app, sent now or at a chosen time.

What this module owns: turning a `OneOffEmail` into a claimed `SentMessage` at
its time, and the RQ jobs that do it. Everything after the claim is the
sequence steps' (`worker.sequences.delivering.deliver`): the same hand-over,
Message-ID read-back, tracking (pixel, click links, tracked document links),
`sent` event and Salesforce Task as a sequence step — so nothing about tracking
or logging differs between a step and an email written by hand. The body and
attachments written in the app are read at send time by `messages.composed_body`.

    compose (web) ──▶ OneOffEmail scheduled ──send now──▶ job oneoff:<id>
                                         └──send_at──▶ cron tick ──▶ job oneoff:<id>
    job: UPDATE one_off_emails SET status='claimed'
           WHERE id=:id AND status='scheduled' AND send_at <= now   (the claim)
         + INSERT sent_messages (status sending) + message_documents, one transaction
         ──▶ delivering.deliver(sent id)
    cancel (web): UPDATE … SET status='cancelled' WHERE status='scheduled'

The claim and a cancel are conditional UPDATEs on the same row: whichever
commits first wins, the other changes nothing. A job run twice finds nothing to
claim; a worker that dies after the claim leaves a `sending` message that
`jobs.recover_stuck_sends` hands over again.

Must never: send a cancelled email, send one twice, or send before `send_at`.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config import queues
from core.db import session_scope
from core.models import (
    Mailbox,
    MessageDocument,
    OneOffEmail,
    OneOffStatus,
    SendStatus,
    SentMessage,
    utcnow,
)
from worker.queueing import enqueue_once, job_started
from worker.sequences.delivering import deliver
from worker.sync.mime import new_message_id

log = logging.getLogger(__name__)

DUE_BATCH = 1000


def claim_one_off(session: Session, email_id: int, now: datetime) -> SentMessage | None:
    """Claim the email if it is scheduled and due. None if there is nothing to claim.

    Must run in its own transaction; the caller commits.
    """
    claimed = session.execute(
        update(OneOffEmail)
        .where(
            OneOffEmail.id == email_id,
            OneOffEmail.status == OneOffStatus.SCHEDULED,
            OneOffEmail.send_at <= now,
        )
        .values(status=OneOffStatus.CLAIMED)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None  # cancelled, not due yet, or another process got there first
    email = session.get_one(OneOffEmail, email_id)
    session.refresh(email)
    mailbox = session.get_one(Mailbox, email.mailbox_id)
    sent = SentMessage(
        team_id=email.team_id,
        mailbox_id=mailbox.id,
        enrollment_id=None,
        step_position=None,
        attempt=0,
        prospect_id=email.prospect_id,
        message_id=new_message_id(mailbox.email),
        subject=email.subject or "(no subject)",
        to_addrs=list(email.to_addrs),
        cc_addrs=list(email.cc_addrs),
        status=SendStatus.SENDING,
        claimed_at=now,
    )
    session.add(sent)
    session.flush()
    email.sent_message_id = sent.id
    for position, document_id in enumerate(email.document_ids or []):
        session.add(
            MessageDocument(
                team_id=email.team_id,
                document_id=int(document_id),
                sent_message_id=sent.id,
                tracked=True,
                position=position,
                created_at=now,
            )
        )
    session.flush()
    log.info("one_off_claimed email_id=%s sent_id=%s", email.id, sent.id)
    return sent


def request_send(email_id: int) -> bool:
    """Queue the email's send job now (it sends only once due). False if already queued."""
    return enqueue_once(
        f"oneoff:{email_id}",
        queues.SEND,
        "worker.sequences.oneoff.send_one_off",
        email_id,
        ttl=600,
        retry=None,  # the claim is the retry point; stuck sends are recovered by cron
    )


def send_one_off(email_id: int) -> str:
    """RQ job: claim the email if still scheduled and due, then hand it over."""
    job_started(f"oneoff:{email_id}")
    with session_scope() as session:
        sent = claim_one_off(session, email_id, utcnow())
        sent_id = sent.id if sent else None
    if sent_id is None:
        return "nothing due"
    return deliver(sent_id).status


def enqueue_due_one_offs() -> int:
    """Cron: queue a send job for every scheduled email whose time has come."""
    with session_scope() as session:
        due = session.scalars(
            select(OneOffEmail.id)
            .where(OneOffEmail.status == OneOffStatus.SCHEDULED, OneOffEmail.send_at <= utcnow())
            .order_by(OneOffEmail.send_at)
            .limit(DUE_BATCH)
        ).all()
    queued = sum(request_send(int(email_id)) for email_id in due)
    if queued:
        log.info("one_offs_queued count=%s", queued)
    return queued


def cancel(session: Session, email_id: int, team_id: int, now: datetime) -> bool:
    """Cancel a scheduled email. False if it was already claimed (or is not the team's)."""
    done = session.execute(
        update(OneOffEmail)
        .where(
            OneOffEmail.id == email_id,
            OneOffEmail.team_id == team_id,
            OneOffEmail.status == OneOffStatus.SCHEDULED,
        )
        .values(status=OneOffStatus.CANCELLED, cancelled_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]
