"""Mail sent from Gmail or Outlook itself that carries an add-on's link or pixel.

A salesperson inserts a tracked document link or the pixel into a draft with
the Gmail add-on or the Outlook add-in (`web.addons.drafts`): a `sent_messages`
row in status ``draft`` stands for it, and the tokens in its URLs name that row.
The mail client sends it; the sync then finds the copy in the mailbox's Sent
folder (Gmail label SENT, IMAP's \\Sent folder) and, here, recognises it::

    Sent-folder copy ──read_sent / first MAX_SENT_BYTES──▶ text parts
      ──/o/<token>.gif, /d/<token>──▶ signature checked (core tokens), ≤ MAX_TOKENS
      ──▶ sent_messages: ours (the mailbox's team), origin gmail/outlook?  no ──▶ nothing
      ──▶ draft → sent: the copy's Message-ID, thread, recipients, subject
          (a conditional UPDATE: another sync got there first → nothing more)
          + event sent:<id> + Salesforce "sent email" Task task:sent:<id>, once
          + external_drafts.recognised_at, provider_id

From then on a reply naming that Message-ID (or in that Gmail thread) is matched
by `worker.sync.inbound` like a reply to anything Sightline sent, and its opens
and document views are the feed's "— sent from Gmail" items (`web.feed`).

Must never: store a sent message with no token of ours (nothing is written for
it; the cursor remembers it was seen); let a token of another team's link,
pasted into this mailbox's mail, touch that team's rows (the token's team and
the row's team must be the mailbox's); read an attachment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.orm import Session

from core.db import session_scope
from core.documents.tokens import read_link_token
from core.events import natural_key, queue_salesforce_task, record_event
from core.models import ExternalDraft, Prospect, SendStatus, SentMessage, utcnow
from core.tracking.tokens import read_open_token
from worker.matching.matcher import find_sent_messages
from worker.salesforce.task_limits import DESCRIPTION_LIMIT
from worker.sequences.render import html_to_text
from worker.sync.base import ChangeBatch, MailboxProvider, ProviderError, SentCopy
from worker.sync.inbound import MailboxRef
from worker.sync.sent_copy import MAX_SENT_BYTES, READ_SENT_SINCE, sent_copy_from_bytes

log = logging.getLogger(__name__)

# A pixel (/o/<token>.gif) or a document link (/d/<token>); the token's characters
# are itsdangerous's (base64url and dots). No nested quantifier: linear time.
_TOKEN_PATH = re.compile(r"/([od])/([A-Za-z0-9_.\-]{16,600})")
# Signature checks per message: an email full of pasted links costs no more than this.
MAX_TOKENS = 20
ORIGIN_NAMES = {"gmail": "Gmail", "outlook": "Outlook"}


def token_sent_ids(text: str, team_id: int) -> set[int]:
    """Sent-message ids named by valid tokens of `team_id` in `text` (a document link's
    team is checked against its row by the caller's query, its token has none)."""
    if "%2F" in text or "%2f" in text:
        # Links wrapped by a gateway (Safe Links) carry ours percent-encoded.
        text = f"{text}\n{unquote(text)}"
    found: set[int] = set()
    seen: set[str] = set()
    for match in _TOKEN_PATH.finditer(text):
        kind, token = match.group(1), match.group(2)
        if kind == "o":
            if not token.endswith(".gif"):
                continue
            token = token[: -len(".gif")]
        if token in seen:
            continue
        seen.add(token)
        if len(seen) > MAX_TOKENS:
            break
        if kind == "o":
            pixel = read_open_token(token)
            if pixel is not None and pixel.team_id == team_id:
                found.add(pixel.sent_message_id)
        else:
            link = read_link_token(token)
            if link is not None:
                found.add(link.sent_message_id)
    return found


def _drafts(session: Session, team_id: int, ids: Iterable[int]) -> list[SentMessage]:
    """The team's add-on messages among `ids`, oldest first (never another team's)."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return list(
        session.scalars(
            select(SentMessage)
            .where(
                SentMessage.id.in_(wanted),
                SentMessage.team_id == team_id,
                SentMessage.origin.is_not(None),
            )
            .order_by(SentMessage.id)
        )
    )


def recognise(
    session: Session, team_id: int, mailbox_email: str, provider_id: str, copy: SentCopy
) -> str:
    """Recognise one Sent-folder copy. Returns what happened: "recognised",
    "seen" (recognised before), "not_ours" (nothing of ours in it) or "no_id"."""
    drafts = _drafts(session, team_id, token_sent_ids(copy.text, team_id))
    if not drafts:
        return "not_ours"
    if copy.message_id is None:
        log.warning("sent_copy_without_message_id provider_id=%s", provider_id)
        return "no_id"
    if copy.message_id in find_sent_messages(session, team_id, [copy.message_id]):
        return "seen"
    draft = next((d for d in drafts if d.status == SendStatus.DRAFT), None)
    if draft is None:
        # Its link went out in an earlier message already (pasted again): that one counts.
        return "seen"
    now = utcnow()
    sent_at = copy.sent_at or now
    done = session.execute(
        update(SentMessage)
        .where(SentMessage.id == draft.id, SentMessage.status == SendStatus.DRAFT)
        .values(
            status=SendStatus.SENT,
            message_id=copy.message_id,
            provider_message_id=provider_id[:500],
            thread_id=copy.thread_id,
            subject=copy.subject,
            to_addrs=copy.to,
            cc_addrs=copy.cc,
            sent_at=sent_at,
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return "seen"  # another sync got there first
    session.execute(
        update(ExternalDraft)
        .where(ExternalDraft.sent_message_id == draft.id)
        .values(recognised_at=now, provider_id=provider_id[:500])
    )
    _record_sent(session, draft.id, mailbox_email, copy, sent_at)
    log.info(
        "sent_copy_recognised sent_id=%s origin=%s provider_id=%s",
        draft.id,
        draft.origin,
        provider_id,
    )
    return "recognised"


def _record_sent(
    session: Session, sent_id: int, mailbox_email: str, copy: SentCopy, sent_at: datetime
) -> None:
    """The "sent" event and the Salesforce Task, once each (their keys)."""
    sent = session.get_one(SentMessage, sent_id)
    session.refresh(sent)
    origin = ORIGIN_NAMES.get(sent.origin or "", sent.origin or "")
    event_id = record_event(
        session,
        team_id=sent.team_id,
        key=natural_key("sent", sent.id),
        kind="sent",
        occurred_at=sent_at,
        sent_message_id=sent.id,
        prospect_id=sent.prospect_id,
        data={"message_id": sent.message_id, "subject": sent.subject, "origin": sent.origin},
    )
    prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
    who = prospect.email if prospect is not None else next(iter([*copy.to, *copy.cc]), None)
    if event_id is None or who is None:
        return
    header = (
        f"To: {', '.join(copy.to)}\nFrom: {mailbox_email}\nSubject: {copy.subject}\n"
        f"Sent from {origin}.\n\n"
    )
    queue_salesforce_task(
        session,
        team_id=sent.team_id,
        key=natural_key("task", "sent", sent.id),
        kind="task_sent",
        who_email=who,
        event_id=event_id,
        payload={
            "subject": f"Email: {copy.subject}"[:255],
            "description": (header + html_to_text(copy.text))[:DESCRIPTION_LIMIT],
            "activity_date": sent_at.date().isoformat(),
            "message_id": sent.message_id,
        },
    )


def oldest_waiting_draft(team_id: Any) -> ScalarSelect[datetime]:
    """The creation time of the team's oldest add-on draft not found in Sent yet.

    A scalar subquery (`team_id` may be a column): the sync reads it with the
    mailbox's own row, one statement for both.
    """
    return (
        select(func.min(ExternalDraft.created_at))
        .where(ExternalDraft.team_id == team_id, ExternalDraft.recognised_at.is_(None))
        .scalar_subquery()
    )


def sent_wanted(oldest: datetime | None) -> dict[str, str]:
    """What a provider is opened with so that it lists its Sent folder, given the team's
    `oldest_waiting_draft`: nothing when none waits (then IMAP and Graph do not list
    Sent at all). Gmail's history lists SENT anyway."""
    if oldest is None:
        return {}
    # A little earlier than the insert: the provider's clock may differ from ours.
    return {READ_SENT_SINCE: (oldest - timedelta(hours=1)).isoformat()}


def recognise_sent(
    provider: MailboxProvider,
    mailbox: MailboxRef,
    batch: ChangeBatch,
    count: Callable[[str], None],
) -> ChangeBatch:
    """Recognise the batch's Sent-folder copies, each in its own transaction, and
    return the rest of the batch (what reply matching reads). `count` is told each
    copy's outcome ("sent_recognised", "sent_not_ours" …)."""
    if not any(m.in_sent for m in batch.messages):
        return batch
    rest = [m for m in batch.messages if not m.in_sent]
    with session_scope() as session:
        waiting = session.scalar(
            select(ExternalDraft.id)
            .where(ExternalDraft.team_id == mailbox.team_id, ExternalDraft.recognised_at.is_(None))
            .limit(1)
        )
    if waiting is None:
        # No add-on draft of the team is waiting: nothing in Sent can be ours to find.
        return ChangeBatch(messages=rest, cursor=batch.cursor)
    for summary in batch.messages:
        if not summary.in_sent:
            continue
        try:
            copy = provider.read_sent(summary.fetch_ref) or sent_copy_from_bytes(
                provider.fetch(summary.fetch_ref, MAX_SENT_BYTES), summary.thread_id
            )
        except ProviderError as exc:
            if not exc.permanent or exc.needs_reconnect:
                raise
            # Gone, or unreadable: a sent copy is never quarantined (it answers nothing).
            log.warning(
                "sent_copy_unreadable mailbox_id=%s provider_id=%s reason=%s",
                mailbox.id,
                summary.provider_id,
                exc,
            )
            count("sent_unreadable")
            continue
        with session_scope() as session:
            outcome = recognise(session, mailbox.team_id, mailbox.email, summary.provider_id, copy)
        count(f"sent_{outcome}")
    return ChangeBatch(messages=rest, cursor=batch.cursor)
