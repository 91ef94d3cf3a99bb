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

from sqlalchemy.orm import Session

from web.addons.views import (
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

__all__ = [
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
    """The id of the Sightline user whose sign-in address is `email` (case ignored), else None.

    For the add-ons' authentication: Google's verified email, Outlook's identity.
    """
    raise NotImplementedError


def prospect_panel(session: Session, user_id: int, addresses: list[str]) -> ProspectPanel:
    """The people of an open thread: prospect, enrolments, recent activity, actions.

    `addresses` are the thread's From/To/Cc addresses (names and angle brackets
    allowed, at most MAX_ADDRESSES); the team's own addresses are left out.
    An address that is not a prospect of the user's team gets a panel with
    `prospect_id=None` and the sequences it could be added to.

    Raises:
        AddonError: not_found (no such user), invalid (field "addresses").
    """
    raise NotImplementedError


def add_to_sequence(
    session: Session, user_id: int, sequence_id: int, address: str, name: str | None = None
) -> ActionResult:
    """Enrol `address` in the team's sequence (the same path as the web app and the API).

    A refusal the enrolment rules make (opted out, already enrolled, erased …)
    is an `ActionResult(ok=False, message=…)`, not an exception.

    Raises:
        AddonError: not_found (user or sequence), invalid (field "address").
    """
    raise NotImplementedError


def pause(session: Session, user_id: int, enrollment_id: int) -> ActionResult:
    """Pause an active enrolment of the team until someone resumes it.

    Raises:
        AddonError: not_found (user, or an enrolment not of the user's team).
    """
    raise NotImplementedError


def resume(session: Session, user_id: int, enrollment_id: int) -> ActionResult:
    """Resume a paused enrolment; a step already due goes out at the next tick."""
    raise NotImplementedError


def stop(session: Session, user_id: int, enrollment_id: int) -> ActionResult:
    """End an active or paused enrolment: no further step (state ``finished``)."""
    raise NotImplementedError


def feed_items(session: Session, user_id: int, limit: int = 20) -> list[FeedItem]:
    """The newest `limit` (1-200) Live Feed items of the user's team, newest first."""
    raise NotImplementedError


def content_choices(session: Session, user_id: int) -> ContentChoices:
    """The team's ready library documents (newest first), or why content is unavailable."""
    raise NotImplementedError


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
    raise NotImplementedError
