"""The mail-window add-ons' service: what Gmail and Outlook show and do, without Flask.

Both add-ons (the Gmail Workspace add-on's cards, the Outlook add-in's task pane
through API v1) call these functions with a database session and the id of the
Sightline user they authenticated; the team is always the user's own, so
nothing of another team can be named, shown or changed (another team's ids
read as "not found"). Every function raises `AddonError` only, whose code
maps onto the API's error answer::

    code          HTTP  when
    not_found     404   an id that is not the user's team's (or does not exist)
    invalid       422   bad input; `field` names it
    plan_required 403   trackable content on a Solo team (message: the web app's words)
    no_mailbox    409   inserting into a draft needs one of the user's mailboxes connected
    conflict      409   the enrolment's state does not allow the action any more

Functions that change something commit the session themselves (each is one
transaction); readers never commit.

Draft tracking (`insert_for_draft`): a draft composed in Gmail or Outlook gets
one `sent_messages` row (status ``draft``, origin ``gmail``/``outlook``) keyed
by the user, the add-on and the draft's own id (`draft_ref`), so pressing
"Insert" twice makes nothing twice. The pixel and document links name that row
in their signed tokens; when the sync later finds the sent copy in the
mailbox's Sent folder carrying one of those tokens, the row takes the copy's
real Message-ID, thread and recipients (replies then match it like any email
Sightline sent), its "sent" Task is queued, and the Live Feed words its
activity "— sent from Gmail" / "— sent from Outlook".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import Document, DocumentStatus, Plan, Team, User
from web import feed
from web.addons import drafts, panel
from web.addons.views import (
    FEED_LIMIT,
    MAX_ADDRESSES,
    ActionResult,
    AddonError,
    ContentChoices,
    DocumentChoice,
    DraftInsert,
    EnrollmentView,
    FeedItem,
    PersonPanel,
    ProspectPanel,
    Recipients,
    SequenceChoice,
    Source,
)
from web.documents.common import PLAN_MESSAGE

MAX_FEED_LIMIT = 200
MAX_DOCUMENTS = 200

__all__ = [
    "FEED_LIMIT",
    "MAX_ADDRESSES",
    "MAX_FEED_LIMIT",
    "ActionResult",
    "AddonError",
    "ContentChoices",
    "DocumentChoice",
    "DraftInsert",
    "EnrollmentView",
    "FeedItem",
    "PersonPanel",
    "ProspectPanel",
    "Recipients",
    "SequenceChoice",
    "Source",
    "add_to_sequence",
    "content_choices",
    "feed_items",
    "find_user",
    "insert_for_draft",
    "pause",
    "prospect_panel",
    "resume",
    "stop",
]


def find_user(session: Session, email: str) -> int | None:
    """The id of the Sightline user whose sign-in address is `email` (case ignored), else
    None (also for a user removed from their team).

    For the add-ons' authentication: Google's verified email, Outlook's identity.
    """
    user_id = session.scalar(
        select(User.id).where(
            func.lower(User.email) == email.strip().lower(), User.removed_at.is_(None)
        )
    )
    return int(user_id) if user_id is not None else None


def prospect_panel(session: Session, user_id: int, addresses: list[str]) -> ProspectPanel:
    """The people of an open thread: prospect, enrolments, recent activity, actions.

    `addresses` are the thread's From/To/Cc addresses (names and angle brackets
    allowed, at most MAX_ADDRESSES); the team's own addresses are left out.
    An address that is not a prospect of the user's team gets a panel with
    `prospect_id=None` and the sequences it could be added to.

    Raises:
        AddonError: not_found (no such user), invalid (field "addresses").
    """
    return panel.prospect_panel(session, _user(session, user_id), addresses)


def add_to_sequence(
    session: Session, user_id: int, sequence_id: int, address: str, name: str | None = None
) -> ActionResult:
    """Enrol `address` in the team's sequence (the same path as the web app and the API).

    A refusal the enrolment rules make (opted out, already enrolled, erased …)
    is an `ActionResult(ok=False, message=…)`, not an exception.

    Raises:
        AddonError: not_found (user or sequence), invalid (field "address").
    """
    return panel.add_to_sequence(session, _user(session, user_id), sequence_id, address, name)


def pause(session: Session, user_id: int, enrollment_id: int) -> ActionResult:
    """Pause an active enrolment of the team until someone resumes it.

    Raises:
        AddonError: not_found (user, or an enrolment not of the user's team).
    """
    return panel.change(session, _user(session, user_id), enrollment_id, "pause")


def resume(session: Session, user_id: int, enrollment_id: int) -> ActionResult:
    """Resume a paused enrolment; a step already due goes out at the next tick."""
    return panel.change(session, _user(session, user_id), enrollment_id, "resume")


def stop(session: Session, user_id: int, enrollment_id: int) -> ActionResult:
    """End an active or paused enrolment: no further step (state ``finished``)."""
    return panel.change(session, _user(session, user_id), enrollment_id, "stop")


def feed_items(session: Session, user_id: int, limit: int = FEED_LIMIT) -> list[FeedItem]:
    """The newest `limit` (1-200) Live Feed items of the user's team, newest first."""
    if not 1 <= limit <= MAX_FEED_LIMIT:
        raise AddonError("invalid", f"limit must be 1 to {MAX_FEED_LIMIT}", "limit")
    user = _user(session, user_id)
    items = []
    for item in feed.feed_items(session, team_id=user.team_id, limit=limit):
        prospect = item.get("prospect") or {}
        who = prospect.get("name") or prospect.get("email") or item.get("from") or ""
        subject = item.get("subject")
        # The feed page shows label, person and subject side by side; a card has one line.
        text = item.get("text") or "".join(
            (item["label"], f": {who}" if who else "", f" — “{subject}”" if subject else "")
        )
        items.append(
            FeedItem(
                id=item["id"],
                kind=item["kind"],
                label=item["label"],
                text=text,
                occurred_at=datetime.fromisoformat(item["occurred_at"])
                if item.get("occurred_at")
                else None,
                prospect_email=prospect.get("email"),
                prospect_name=prospect.get("name"),
                subject=subject,
                sequence_name=(item.get("sequence") or {}).get("name"),
                origin=item.get("origin"),
            )
        )
    return items


def content_choices(session: Session, user_id: int) -> ContentChoices:
    """The team's ready library documents (newest first), or why content is unavailable."""
    user = _user(session, user_id)
    team = session.get_one(Team, user.team_id)
    if team.plan != Plan.TEAM:
        return ContentChoices(documents=[], unavailable=PLAN_MESSAGE)
    rows = session.scalars(
        select(Document)
        .where(
            Document.team_id == team.id,
            Document.status == DocumentStatus.READY,
            Document.deleted_at.is_(None),
        )
        .order_by(Document.created_at.desc(), Document.id.desc())
        .limit(MAX_DOCUMENTS)
    )
    return ContentChoices(
        documents=[DocumentChoice(d.id, d.name, d.kind, d.page_count) for d in rows]
    )


def insert_for_draft(
    session: Session,
    user_id: int,
    *,
    source: Source,
    draft_ref: str,
    recipients: Recipients,
    document_id: int | None,
    track_opens: bool,
    sender: str | None = None,
) -> DraftInsert:
    """Make (or find again) the tracking record of a draft, and what to insert into it.

    Args:
        source: "gmail" or "outlook": which add-on, and how the feed words it.
        draft_ref: the draft's id in the mail client (Gmail draft id, Outlook item
            id), 1-500 characters; (user, source, draft_ref) is the record's key,
            so pressing twice returns the same record and the same links.
        recipients: the draft's To/Cc/Bcc now. Exactly one To: the link and the
            pixel are that person's (a prospect of the team, created if new);
            otherwise one link for the draft, the viewer asks nothing, and views
            are attributed to the draft.
        document_id: a ready document of the team's library, or None for the
            pixel alone.
        track_opens: add the pixel.
        sender: the address the draft is sent from, to pick the user's mailbox
            whose Sent folder will be read (else the user's first mailbox).

    Raises:
        AddonError: invalid (draft_ref, recipients, nothing to insert),
            not_found (document), plan_required (a document on a Solo team),
            no_mailbox (the user has no connected mailbox).
    """
    return drafts.insert_for_draft(
        session,
        _user(session, user_id),
        source=source,
        draft_ref=draft_ref,
        recipients=recipients,
        document_id=document_id,
        track_opens=track_opens,
        sender=sender,
    )


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.removed_at is not None:
        # Removed from the team: their add-on sees nothing of it any more.
        raise AddonError("not_found", f"user {user_id} not found")
    return user
