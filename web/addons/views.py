"""What the add-ons' service answers with: plain dataclasses and its one error type.

See `web.addons.service` for the functions and the error codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Source = Literal["gmail", "outlook"]
SOURCES: tuple[Source, ...] = ("gmail", "outlook")
EnrollmentAction = Literal["pause", "resume", "stop"]

ERROR_STATUS = {
    "not_found": 404,
    "invalid": 422,
    "plan_required": 403,
    "no_mailbox": 409,
    "conflict": 409,
}


class AddonError(Exception):
    """A request the service refuses; `message` is a sentence a user can act on."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.code, 400)


# -- the prospect panel ---------------------------------------------------------------


@dataclass(frozen=True)
class SequenceChoice:
    """One of the user's team's sequences a person can be added to."""

    id: int
    name: str


@dataclass(frozen=True)
class EnrollmentView:
    """An enrolment of the person: where it stands and what may be done to it."""

    id: int
    sequence_id: int
    sequence_name: str
    state: str  # active, paused, replied, bounced, opted_out, finished
    reason: str | None  # why it is in that state ("paused by dana@…", "replied")
    next_step: int | None  # 1-based number of the next step; None when none will go
    steps_total: int
    steps_sent: int
    state_changed_at: datetime
    # What the user may do now: a subset of ("pause", "resume", "stop").
    actions: tuple[EnrollmentAction, ...]


@dataclass(frozen=True)
class Activity:
    """One recent open, click or document reading, in the Live Feed's words."""

    kind: str  # open, click, document_view, document_download
    occurred_at: datetime
    text: str  # e.g. "Opened “Quick question”", "Read pricing.pdf — 7 of 12 pages, 5 min"
    subject: str | None = None
    url: str | None = None  # a click's destination
    document: str | None = None  # a document's name


@dataclass(frozen=True)
class PersonPanel:
    """What the panel shows for one address of the thread."""

    address: str  # lower-cased
    prospect_id: int | None  # None: not a prospect of the team yet
    name: str | None
    company: str | None
    enrollments: list[EnrollmentView]
    last_opens: list[Activity]  # newest first, at most ACTIVITY_LIMIT
    last_clicks: list[Activity]
    pages_read: list[Activity]  # document readings (visits), newest first
    # Sequences the person may be added to (active sequences of the team they are not in).
    add_to: list[SequenceChoice]
    # Why the person cannot be enrolled at all (opted out, undeliverable, erased), else None.
    not_enrollable: str | None = None


@dataclass(frozen=True)
class ProspectPanel:
    people: list[PersonPanel]
    # Addresses left out: the user's own team (mailboxes, users) and unparseable ones.
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ActionResult:
    """What an action did, in a sentence for the card or the task pane."""

    ok: bool
    message: str  # "Dana Scully added to Intro.", "Paused.", "Nothing changed: …"
    enrollment: EnrollmentView | None = None


# -- feed, content, drafts ----------------------------------------------------------


@dataclass(frozen=True)
class FeedItem:
    """One Live Feed item, as `web.feed.feed_items` words it."""

    id: int
    kind: str
    label: str  # "Opened", "Replied", "Read a document"
    text: str  # the whole sentence: "Dana Scully opened “Quick question” — sent from Gmail"
    occurred_at: datetime | None
    prospect_email: str | None
    prospect_name: str | None
    subject: str | None
    sequence_name: str | None
    origin: str | None  # "gmail" / "outlook" for mail sent from the add-ons, else None


@dataclass(frozen=True)
class DocumentChoice:
    id: int
    name: str
    kind: str  # pdf, docx, pptx, …
    page_count: int | None


@dataclass(frozen=True)
class ContentChoices:
    """The team's ready library documents, or why there are none to choose from."""

    documents: list[DocumentChoice]
    # Set when content cannot be used (Solo plan: the web app's words); documents is empty then.
    unavailable: str | None = None


@dataclass(frozen=True)
class Recipients:
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DraftInsert:
    """What to put into the draft.

    `html` is the snippet to insert at the cursor (the link, then the pixel when
    asked); `link_url` and `pixel_url` are the same URLs alone, for clients that
    build their own markup. `per_recipient` says whether views are attributed to
    the single To recipient (True) or to the draft as a whole (False).
    """

    sent_message_id: int  # the draft's tracking record
    html: str
    link_url: str | None
    pixel_url: str | None
    per_recipient: bool
    document_name: str | None = None


ACTIVITY_LIMIT = 5
FEED_LIMIT = 20
MAX_ADDRESSES = 50
