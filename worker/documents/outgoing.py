"""A document in an email: a per-recipient tracked link, or a plain MIME attachment.

Called while the message handed to the provider is built
(`worker.sequences.messages.outgoing_message`). Documents come from `message_documents`
rows on the message's sequence step and on the sent message itself (one-off
emails).

- ``tracked``: a `DocumentLink` row is made once per (document, sent message,
  recipient) — a retried send finds the same row and writes the same URL — and
  the email gets ``<base>/d/<signed token>``. The anchor carries
  ``data-sightline-untracked`` so click tracking leaves it alone: the viewer
  records the visit itself. If the team is not (or no longer) on the team plan,
  or has tracking off, or the prospect is marked "do not track", the link still
  works and records nothing (`tracked` false).
- plain: the file as an ordinary attachment, never tracked: the original, except
  a PDF with active content, which goes as the copy without it
  (`core.documents.findings.attachment_blob`; the API refuses to add one as a
  plain attachment when no such copy could be made).

Must never: put a tracked link where the sender's own copy is kept (the
Salesforce description gets the names only), or send a link for a document of
another team.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.documents.findings import attachment_blob
from core.documents.storage import get_blob_store
from core.documents.tokens import link_token
from core.events import insert_ignore
from core.models import (
    Document,
    DocumentLink,
    Enrollment,
    MessageDocument,
    Plan,
    Prospect,
    SentMessage,
    SequenceStep,
    Team,
    utcnow,
)
from worker.sync.base import Attachment

log = logging.getLogger(__name__)

_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class MessageDocuments:
    html: str = ""  # a block of links (or names) to add to the body
    attachments: list[Attachment] = field(default_factory=list)

    def add_to(self, body_html: str) -> str:
        """`body_html` with the block placed before ``</body>`` (or at the end)."""
        if not self.html:
            return body_html
        ends = list(_BODY_END.finditer(body_html))
        if ends:
            at = ends[-1].start()
            return body_html[:at] + self.html + body_html[at:]
        return body_html + self.html


def trackable(team: Team) -> bool:
    """Trackable attachments are for team plans, and only while tracking is on."""
    return team.plan == Plan.TEAM and team.tracking_enabled


def attached_documents(
    session: Session, sent: SentMessage
) -> list[tuple[MessageDocument, Document]]:
    step_id = None
    if sent.enrollment_id is not None and sent.step_position is not None:
        sequence_id = session.scalar(
            select(Enrollment.sequence_id).where(Enrollment.id == sent.enrollment_id)
        )
        step_id = session.scalar(
            select(SequenceStep.id).where(
                SequenceStep.sequence_id == sequence_id,
                SequenceStep.position == sent.step_position,
            )
        )
    conditions = [MessageDocument.sent_message_id == sent.id]
    if step_id is not None:
        conditions.append(MessageDocument.step_id == step_id)
    rows = session.execute(
        select(MessageDocument, Document)
        .join(Document, Document.id == MessageDocument.document_id)
        .where(or_(*conditions), Document.team_id == sent.team_id)
        .order_by(MessageDocument.position, MessageDocument.id)
    )
    return [(row[0], row[1]) for row in rows]


def ensure_link(
    session: Session, document: Document, sent: SentMessage, recipient: int, tracked: bool
) -> DocumentLink:
    """The recipient's link to the document, made once."""
    now = utcnow()
    expires_at = (
        now + timedelta(days=document.expires_after_days)
        if document.expires_after_days is not None
        else None
    )
    insert_ignore(
        session,
        DocumentLink.__table__,  # type: ignore[arg-type]
        {
            "team_id": sent.team_id,
            "document_id": document.id,
            "sent_message_id": sent.id,
            "recipient": recipient,
            "prospect_id": sent.prospect_id if recipient == 0 else None,
            "tracked": tracked,
            "allow_download": document.allow_download,
            "expires_at": expires_at,
            "created_at": now,
        },
        ["document_id", "sent_message_id", "recipient"],
    )
    return session.scalars(
        select(DocumentLink).where(
            DocumentLink.document_id == document.id,
            DocumentLink.sent_message_id == sent.id,
            DocumentLink.recipient == recipient,
        )
    ).one()


def _do_not_track(session: Session, sent: SentMessage, recipient: int) -> bool:
    """The prospect (recipient 0) asked not to be tracked: their links record nothing."""
    if recipient != 0 or sent.prospect_id is None:
        return False
    return bool(
        session.scalar(select(Prospect.do_not_track).where(Prospect.id == sent.prospect_id))
    )


def _pages(document: Document) -> str:
    if not document.page_count:
        return ""
    return f" · {document.page_count} page{'s' if document.page_count != 1 else ''}"


def documents_for_message(
    session: Session, sent: SentMessage, *, base_url: str, recipient: int = 0, sending: bool
) -> MessageDocuments:
    """What the message carries. With `sending` false: names only, no links, no files."""
    attached = attached_documents(session, sent)
    if not attached:
        return MessageDocuments()
    team = session.get_one(Team, sent.team_id)
    tracked_here = trackable(team) and not _do_not_track(session, sent, recipient)
    lines: list[str] = []
    attachments: list[Attachment] = []
    for row, document in attached:
        name = html.escape(document.name)
        if document.deleted_at is not None:
            log.warning("document_skipped_deleted sent_id=%s document_id=%s", sent.id, document.id)
            continue
        if not row.tracked:
            blob = attachment_blob(document.kind, document.active_content, document.download_blob)
            if blob is None:
                # The API refuses this; a row from before the check is skipped, not sent.
                log.warning("document_not_attached sent_id=%s document_id=%s", sent.id, document.id)
            elif sending:
                data = get_blob_store().get(document.id, blob)
                attachments.append(Attachment(document.name, document.content_type, data))
            continue
        if not sending:
            lines.append(f"<p>[{name}]</p>")
            continue
        link = ensure_link(session, document, sent, recipient, tracked_here)
        token = link_token(link.id, document.id, sent.id, recipient)
        url = html.escape(f"{base_url}/d/{token}", quote=True)
        lines.append(
            f'<p style="margin:4px 0"><a href="{url}" data-sightline-untracked>{name}</a>'
            f'<span style="color:#5b6675">{html.escape(_pages(document))}</span></p>'
        )
    block = (
        '<div class="sightline-documents" style="margin-top:16px">' + "".join(lines) + "</div>"
        if lines
        else ""
    )
    return MessageDocuments(html=block, attachments=attachments)
