"""Request and response bodies of API v1 (pydantic), which also make its OpenAPI schemas.

Requests forbid unknown fields, so a typo ("delay_second") is an error naming the
field rather than a silently ignored value.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.header_text import check_header_text, header_text_problem
from core.zones.names import check_zone
from core.zones.windows import DAY_NAMES, HOLIDAY_LIMIT, SendWindow, minute_text
from web.redirects import is_safe_redirect_path
from worker.sync.folders import MAX_SKIPPED, check_skip_folders

_EMAIL = re.compile(
    r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


# Ids are PostgreSQL integers: a larger one names nothing (web.security bounds path ids too).
MAX_ID = 2**31 - 1


def check_email(value: str) -> str:
    value = value.strip()
    # The pattern's [^…\s] lets other control characters (NUL, BEL) into the local part.
    if len(value) > 320 or not _EMAIL.match(value) or header_text_problem(value):
        raise ValueError("not a valid email address")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ServerSettings(Request):
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    username: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1000)
    security: Literal["none", "starttls", "tls"] = "tls"


class MailboxCreate(Request):
    kind: Literal["imap"]
    email: str = Field(max_length=320)
    imap: ServerSettings
    smtp: ServerSettings
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1, max_length=20)
    append_to_sent: bool = True
    verify: bool = Field(
        default=True, description="Log in to IMAP and SMTP before saving (recommended)."
    )

    _email = field_validator("email")(check_email)

    def credentials(self) -> dict[str, Any]:
        """What is stored (encrypted) for the mailbox: both servers, folders, Sent copies."""
        return {
            "imap": self.imap.model_dump(),
            "smtp": self.smtp.model_dump(),
            "folders": self.folders,
            "append_to_sent": self.append_to_sent,
        }


class OAuthConnect(Request):
    """Start connecting (or reconnecting) a Gmail or Microsoft 365 mailbox with OAuth."""

    kind: Literal["gmail", "graph"]
    login_hint: str | None = Field(default=None, max_length=320)
    return_to: str | None = Field(
        default=None, max_length=500, description="A path on this site to return to afterwards."
    )

    @field_validator("login_hint")
    @classmethod
    def _hint(cls, value: str | None) -> str | None:
        return check_email(value) if value else None

    @field_validator("return_to")
    @classmethod
    def _return_to(cls, value: str | None) -> str | None:
        if value and not is_safe_redirect_path(value):
            raise ValueError(
                "must be a path on this site: one leading /, printable ASCII, no backslash, "
                "no // or dot segments"
            )
        return value or None


class OAuthStarted(BaseModel):
    authorization_url: str
    expires_in: int = Field(description="Seconds the link stays valid.")


class ExchangeMailboxCreate(Request):
    """An Exchange on-premises mailbox (EWS): NTLM or basic with a password, or an OAuth token."""

    kind: Literal["exchange"] = "exchange"
    email: str = Field(max_length=320)
    ews_url: str = Field(
        min_length=1, max_length=500, description="https://mail.example.com/EWS/Exchange.asmx"
    )
    auth: Literal["ntlm", "basic", "oauth"] = "ntlm"
    username: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1000)
    access_token: str | None = Field(default=None, max_length=8000)
    verify: bool = Field(
        default=True, description="Open Inbox and Drafts before saving (recommended)."
    )

    _email = field_validator("email")(check_email)

    @field_validator("ews_url")
    @classmethod
    def _ews_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+/", value):
            raise ValueError("must look like https://mail.example.com/EWS/Exchange.asmx")
        return value

    @model_validator(mode="after")
    def _secret(self) -> ExchangeMailboxCreate:
        if self.auth == "oauth" and not self.access_token:
            raise ValueError("access_token: is required with OAuth sign-in")
        if self.auth != "oauth" and not (self.username and self.password):
            raise ValueError(
                f"password: is required (with a user name) for {self.auth.upper()} sign-in"
            )
        return self

    def credentials(self) -> dict[str, Any]:
        """What is stored (encrypted) for the mailbox: the EWS URL and the chosen secret."""
        if self.auth == "oauth":
            return {"ews_url": self.ews_url, "auth": "oauth", "access_token": self.access_token}
        return {
            "ews_url": self.ews_url,
            "auth": self.auth,
            "username": self.username,
            "password": self.password,
        }


class StepCreate(Request):
    delay_seconds: int = Field(ge=0, le=365 * 24 * 3600)
    subject: str = Field(default="", max_length=998, description="One line (a mail header).")
    body_html: str = Field(min_length=1, max_length=1_000_000)
    same_thread: bool = False

    _subject = field_validator("subject")(check_header_text)


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")


def check_time_zone(value: str) -> str:
    """An IANA zone name (core.zones.names), canonical case; ValueError says what would do."""
    return check_zone(value)


def _workdays() -> list[Day]:
    return ["mon", "tue", "wed", "thu", "fri"]


def _minute(value: str) -> int:
    if not _CLOCK.match(value):
        raise ValueError("give a time as HH:MM, 00:00 to 24:00")
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


class SendWindowIn(Request):
    """When steps go out, in each prospect's zone (default Mon-Fri 08:00-18:00)."""

    days: list[Day] = Field(default_factory=_workdays, min_length=1, max_length=7)
    start: str = Field(default="08:00", max_length=5, description="HH:MM, local")
    end: str = Field(default="18:00", max_length=5, description="HH:MM, local; after start")
    holidays: list[date] = Field(default_factory=list, max_length=HOLIDAY_LIMIT)

    @model_validator(mode="after")
    def _valid(self) -> SendWindowIn:
        self.window()
        return self

    def window(self) -> SendWindow:
        names = [d.lower() for d in DAY_NAMES]
        start, end = _minute(self.start), _minute(self.end)
        if start >= 24 * 60:
            raise ValueError("start: the window must start before 24:00")
        days = sum(1 << names.index(d) for d in set(self.days))
        return SendWindow(days, start, end, frozenset(self.holidays)).check()


class SequenceCreate(Request):
    name: str = Field(min_length=1, max_length=200)
    mailbox_id: int = Field(ge=1, le=MAX_ID)
    steps: list[StepCreate] = Field(min_length=1, max_length=50)
    time_zone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA zone for prospects whose own zone is not known",
    )
    send_window: SendWindowIn = Field(default_factory=SendWindowIn)
    stop_at_company: bool = Field(
        default=False,
        description="A real reply stops every live enrollment of the team at the prospect's "
        "company (the Salesforce Account when known, else the email domain, never free mail)",
    )
    tracking: bool | None = Field(
        default=None,
        description="Opens and clicks tracked in its emails; null follows the team's "
        "tracking_enabled (tracking on by default) when each step is sent",
    )

    _time_zone = field_validator("time_zone")(check_time_zone)

    @model_validator(mode="after")
    def _threading(self) -> SequenceCreate:
        if self.steps[0].same_thread:
            raise ValueError("steps.0.same_thread: the first step cannot reply in a thread")
        for index, step in enumerate(self.steps):
            if not step.same_thread and not step.subject:
                raise ValueError(f"steps.{index}.subject: required unless same_thread is true")
        return self


class EnrollmentCreate(Request):
    sequence_id: int = Field(ge=1, le=MAX_ID)
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)
    time_zone: str | None = Field(
        default=None, max_length=64, description="IANA zone: the prospect's, set by hand"
    )

    _email = field_validator("email")(check_email)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_zone(value) if value else None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        # Filled into subjects ({{first_name}}): one line, like any header text.
        return check_header_text(value) if value else value


class MailboxPacing(Request):
    """PATCH /mailboxes/{id}: a field left out is kept; null means the default for its kind."""

    daily_cap: int | None = Field(default=None, ge=1, le=10000)
    send_spacing_seconds: int | None = Field(default=None, ge=0, le=86400)
    resume: bool = Field(default=False, description="lift a pause (bounce guard or quota)")
    skip_folders: list[str] | None = Field(
        default=None,
        max_length=MAX_SKIPPED,
        description=(
            "Folders never read for replies: role words (Sent, Drafts, Trash, Junk) name "
            "the provider's own folder, anything else a folder by name; [] reads every "
            "folder; null: the server's default (SIGHTLINE_SKIP_FOLDERS)."
        ),
    )

    @field_validator("skip_folders")
    @classmethod
    def _skip_folders(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_skip_folders(value)


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SendWindowOut(Response):
    days: list[Day]
    start: str
    end: str
    holidays: list[date]


def send_window_out(days: int, start: int, end: int, holidays: list[str] | None) -> SendWindowOut:
    names: list[Day] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    return SendWindowOut(
        days=[n for i, n in enumerate(names) if days >> i & 1],
        start=minute_text(start),
        end=minute_text(end),
        holidays=[date.fromisoformat(h) for h in holidays or []],
    )


class MailboxOut(Response):
    id: int
    kind: str
    email: str
    status: str
    status_reason: str | None
    last_synced_at: datetime | None
    # Why the copy of a sent message missed the Sent folder (the message went out).
    sent_copy_error: str | None = None
    # Does the mailbox's push announce new mail promptly? (measured; None: not yet)
    push_prompt: bool | None = None
    # Messages the sync could not read (over the time budget, or unreadable): kept,
    # tried again later; GET /mailboxes/{id}/quarantine lists them with the reason.
    quarantined: int = 0
    # Pacing (README, "Healthy mailboxes"): its own cap and spacing (None: the default
    # for its kind), the cap in force, what it sent today (UTC), and a pause if any.
    daily_cap: int | None = None
    send_spacing_seconds: int | None = None
    daily_cap_in_force: int = 0
    sends_today: int = 0
    paused_at: datetime | None = None
    paused_until: datetime | None = None  # None while paused: until a person resumes it
    pause_reason: str | None = None
    # Folders never read for replies: its own (None: the default) and those in force.
    skip_folders: list[str] | None = None
    skip_folders_in_force: list[str] = Field(default_factory=list)
    created_at: datetime


class StepOut(Response):
    position: int
    delay_seconds: int
    subject: str
    body_html: str
    same_thread: bool


class SequenceOut(Response):
    id: int
    name: str
    mailbox_id: int
    steps: list[StepOut]
    time_zone: str
    send_window: SendWindowOut
    stop_at_company: bool
    tracking: bool | None = Field(description="null: the team's default")
    created_at: datetime


class TransitionOut(Response):
    from_state: str
    to_state: str
    reason: str
    at: datetime


class EnrollmentOut(Response):
    id: int
    sequence_id: int
    prospect_id: int
    email: str
    name: str | None
    state: Literal["active", "paused", "replied", "bounced", "opted_out", "finished"]
    state_reason: str | None
    state_changed_at: datetime
    steps_sent: int
    next_step: int
    next_step_at: datetime | None
    resume_at: datetime | None
    # Why a due step has not gone out yet ("waiting for the send window: Mon 08:00 ...").
    wait_reason: str | None
    time_zone: str
    time_zone_source: Literal["set", "salesforce", "phone", "domain", "sequence default"]
    transitions: list[TransitionOut]
    warnings: list[str] = Field(
        default_factory=list,
        description="on enrolling: values the sender or the prospect lacks that a step "
        "needs, which will make the enrolment wait at that step",
    )


class MessageOut(Response):
    id: int
    enrollment_id: int | None
    step_position: int | None
    message_id: str
    thread_id: str | None
    in_reply_to: str | None
    subject: str
    to: list[str]
    cc: list[str]
    status: str
    error: str | None
    sent_at: datetime | None


class EventOut(Response):
    id: int
    kind: str
    occurred_at: datetime
    sent_message_id: int | None
    enrollment_id: int | None
    prospect_id: int | None
    data: dict[str, Any]


class MessageList(Response):
    messages: list[MessageOut]


class EventList(Response):
    events: list[EventOut]
    next_after_id: int | None = Field(
        description="Pass as after_id to get the next page; null on the last page."
    )


class MailboxList(Response):
    mailboxes: list[MailboxOut]


class QuarantinedMessageOut(Response):
    """A message the sync keeps but could not read, and what happens to it next."""

    id: int
    from_addr: str | None
    subject: str | None
    received_at: datetime | None
    held_since: datetime
    reason: str  # the latest try's ("classification took longer than 1.5 s")
    tries: int
    next_try_at: datetime | None  # None: not tried again (gave up, or cannot be fetched)
    summary: str  # reason, tries and next step in one sentence, as the mailboxes page shows it


class QuarantineList(Response):
    count: int  # all of the mailbox's quarantined messages; `messages` lists the newest 100
    messages: list[QuarantinedMessageOut]


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: dict[str, str] | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class ApiIndexOut(Response):
    api: str
    version: int
    openapi: str = Field(description="Where the OpenAPI document is")
