"""A draft's tracking record: what "Insert" in Gmail or Outlook makes, once per draft.

    insert_for_draft(user, source, draft_ref, recipients, document?, pixel?)
      ─▶ external_drafts (user, source, draft_ref)      insert-or-find
           └─ sent_messages (status draft, origin, a placeholder Message-ID)
      ─▶ document_links (document, sent, recipient 0)   insert-or-find (ensure_link)
      ─▶ <a href="<base>/d/<token>">  and/or  <img src="<base>/o/<token>.gif">

One To: the link and the pixel are that person's (the sent message's prospect,
made if new), as a one-off email's recipient 0 is. Several recipients (or none
yet): the draft's own: no prospect, so the viewer asks nothing and the feed
says "A recipient". The tokens are signed and name the sent message and the
team, which is how the sync recognises the sent copy later
(`worker.sync.sent_mail`). The placeholder Message-ID is on `sightline.invalid`
(RFC 2606): nothing real can ever answer it before the sent copy's replaces it.

Must never: make a second record for a draft pressed twice; put another
team's document in a draft; create a prospect for an erased person.
"""

from __future__ import annotations

import html
import secrets
import time
from email.utils import getaddresses

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.documents.tokens import link_token
from core.erasure import ERASED_MESSAGE, ErasedError
from core.events import insert_ignore
from core.models import (
    Document,
    DocumentStatus,
    ExternalDraft,
    Mailbox,
    MailboxKind,
    MailboxStatus,
    Plan,
    SendStatus,
    SentMessage,
    Team,
    User,
    utcnow,
)
from core.tracking.tokens import open_token
from core.tracking_domains import tracking_base_url
from web.addons.views import AddonError, DraftInsert, Recipients, Source
from web.api.schemas import check_email
from web.app.prospects import upsert_prospect
from web.documents.common import PLAN_MESSAGE
from worker.documents.outgoing import ensure_link, trackable

MAX_DRAFT_REF = 500
MAX_RECIPIENTS = 100
# Which mailbox kinds an add-on's sent copy may be filed by, best first.
_KINDS = {
    "gmail": (MailboxKind.GMAIL,),
    "outlook": (MailboxKind.GRAPH, MailboxKind.EXCHANGE, MailboxKind.IMAP),
}


def named_addresses(raw: list[str], field: str) -> list[tuple[str, str]]:
    """(display name, lower-cased address) in order, without repeats ("Dana <dana@x>").

    Raises:
        AddonError: invalid, naming `field`, for anything that is not an address.
    """
    if len(raw) > MAX_RECIPIENTS:
        raise AddonError("invalid", f"at most {MAX_RECIPIENTS} addresses", field)
    out: list[tuple[str, str]] = []
    for name, address in getaddresses([str(r) for r in raw]):
        if not address.strip():
            continue
        try:
            checked = check_email(address).lower()
        except ValueError:
            raise AddonError(
                "invalid", f"“{address[:80]}” is not a valid email address", field
            ) from None
        if checked not in [a for _, a in out]:
            out.append((" ".join(name.split())[:200], checked))
    return out


def clean_addresses(raw: list[str], field: str) -> list[str]:
    """Lower-cased addresses in order, without repeats (see `named_addresses`)."""
    return [address for _, address in named_addresses(raw, field)]


def pick_mailbox(session: Session, user: User, source: Source, sender: str | None) -> Mailbox:
    """The user's mailbox the sent copy will be filed in: the sender's, else the
    user's first of a kind the add-on sends from, else their first."""
    mailboxes = list(
        session.scalars(
            select(Mailbox)
            .where(
                Mailbox.team_id == user.team_id,
                Mailbox.user_id == user.id,
                Mailbox.status != MailboxStatus.DISABLED,
            )
            .order_by(Mailbox.id)
        )
    )
    if sender:
        wanted = sender.strip().lower()
        for mailbox in mailboxes:
            if mailbox.email.lower() == wanted:
                return mailbox
    for kind in _KINDS[source]:
        for mailbox in mailboxes:
            if mailbox.kind == kind:
                return mailbox
    if mailboxes:
        return mailboxes[0]
    raise AddonError(
        "no_mailbox",
        "Connect the mailbox you send from on Sightline's Mailboxes page first: "
        "Sightline reads its Sent folder to know the email went out and to match the replies.",
    )


def _document(session: Session, team: Team, document_id: int) -> Document:
    document = session.get(Document, document_id)
    if document is None or document.team_id != team.id or document.deleted_at is not None:
        raise AddonError("not_found", f"document {document_id} not found", "document_id")
    if team.plan != Plan.TEAM:
        raise AddonError("plan_required", PLAN_MESSAGE, "document_id")
    if document.status != DocumentStatus.READY:
        raise AddonError(
            "invalid",
            f"{document.name} is not ready yet ({document.status}); try again in a moment",
            "document_id",
        )
    return document


def _record(
    session: Session,
    user: User,
    mailbox: Mailbox,
    source: Source,
    draft_ref: str,
) -> tuple[ExternalDraft, SentMessage]:
    """The draft's record and sent message, made on the first insert."""
    found = session.scalar(
        select(ExternalDraft).where(
            ExternalDraft.user_id == user.id,
            ExternalDraft.source == source,
            ExternalDraft.draft_ref == draft_ref,
        )
    )
    if found is not None:
        return found, session.get_one(SentMessage, found.sent_message_id)
    now = utcnow()
    sent = SentMessage(
        team_id=user.team_id,
        mailbox_id=mailbox.id,
        message_id=f"<draft.{secrets.token_hex(16)}@sightline.invalid>",
        subject="",
        to_addrs=[],
        cc_addrs=[],
        status=SendStatus.DRAFT,
        origin=source,
        claimed_at=now,
    )
    session.add(sent)
    session.flush()
    inserted = insert_ignore(
        session,
        ExternalDraft.__table__,  # type: ignore[arg-type]
        {
            "team_id": user.team_id,
            "user_id": user.id,
            "mailbox_id": mailbox.id,
            "source": source,
            "draft_ref": draft_ref,
            "sent_message_id": sent.id,
            "per_recipient": False,
            "created_at": now,
            "updated_at": now,
        },
        ["user_id", "source", "draft_ref"],
    )
    if inserted is None:
        # Another request for the same draft got there first: use its record.
        session.delete(sent)
        session.flush()
        return _record(session, user, mailbox, source, draft_ref)
    return session.get_one(ExternalDraft, inserted), sent


def insert_for_draft(
    session: Session,
    user: User,
    *,
    source: Source,
    draft_ref: str,
    recipients: Recipients,
    document_id: int | None,
    track_opens: bool,
    sender: str | None = None,
) -> DraftInsert:
    """See `web.addons.service.insert_for_draft`. Commits."""
    if source not in _KINDS:
        raise AddonError("invalid", "source must be gmail or outlook", "source")
    draft_ref = (draft_ref or "").strip()
    if not draft_ref or len(draft_ref) > MAX_DRAFT_REF:
        raise AddonError("invalid", f"a draft id of 1 to {MAX_DRAFT_REF} characters", "draft_ref")
    if document_id is None and not track_opens:
        raise AddonError("invalid", "choose a document, or Track opens, or both", "document_id")
    named_to = named_addresses(recipients.to, "recipients.to")
    to = [address for _, address in named_to]
    cc = clean_addresses(recipients.cc, "recipients.cc")
    team = session.get_one(Team, user.team_id)
    document = _document(session, team, document_id) if document_id is not None else None
    mailbox = pick_mailbox(session, user, source, sender)
    draft, sent = _record(session, user, mailbox, source, draft_ref)
    per_recipient = len(to) == 1
    prospect_id = None
    if per_recipient:
        try:
            name = named_to[0][0] or None
            prospect_id = upsert_prospect(session, team.id, to[0], name, None).id
        except ErasedError:
            raise AddonError("invalid", f"{to[0]}: {ERASED_MESSAGE}", "recipients.to") from None
    sent.prospect_id = prospect_id
    sent.to_addrs, sent.cc_addrs = to, cc
    draft.per_recipient = per_recipient
    draft.updated_at = utcnow()
    base = tracking_base_url(team)
    parts: list[str] = []
    link_url = pixel_url = None
    if document is not None:
        link = ensure_link(session, document, sent, 0, trackable(team))
        # A link made while the draft had several recipients is the draft's; one To
        # makes it that person's (and the other way round): the latest insert decides.
        link.prospect_id = prospect_id
        link_url = f"{base}/d/{link_token(link.id, document.id, sent.id, 0)}"
        parts.append(
            f'<a href="{html.escape(link_url, quote=True)}" data-sightline-untracked>'
            f"{html.escape(document.name)}</a>"
        )
    if track_opens:
        pixel_url = f"{base}/o/{open_token(sent.id, team.id, 0, int(time.time()))}.gif"
        parts.append(
            f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">'
        )
    session.commit()
    return DraftInsert(
        sent_message_id=sent.id,
        html="".join(parts),
        link_url=link_url,
        pixel_url=pixel_url,
        per_recipient=per_recipient,
        document_name=document.name if document is not None else None,
    )
