"""The mailboxes page, `/mailboxes` (signed-in users): the list and the actions as forms.

Each mailbox with its status and the messages its sync keeps but could not read
(quarantined: sender, subject, what happened and happens next); every provider
listed to connect (`provider_choices`: Gmail or Microsoft 365 by OAuth,
`web.connect.oauth`, shown disabled with the settings the operator must add
when their OAuth client is not configured; Exchange; IMAP), forms to reconnect,
to name the folders never read for replies, and to disconnect (CSRF-protected).
IMAP connects on its own form (`web.app.imap`). What is stored and started is
`worker.sync.connecting`'s; a refusal is shown on this page with its status,
never redirected away.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy import select

from config import get_settings
from config.settings.providers import GOOGLE_OAUTH_VARIABLES, MICROSOFT_OAUTH_VARIABLES
from core.crypto import decrypt_json
from core.models import Mailbox, MailboxKind, Sequence, SequencePause, utcnow
from web.api.common import CONNECT_STATUS
from web.api.schemas import ExchangeMailboxCreate
from web.auth import current_user, login_required, protect
from web.connect.oauth import start_oauth
from web.db import db
from web.validation import labelled_messages
from worker.sequences.pacing import (
    daily_cap,
    is_paused,
    resume_mailbox,
    resume_sequence,
    sends_today,
)
from worker.sync import quarantine
from worker.sync.base import ProviderError
from worker.sync.connecting import (
    OAUTH_KINDS,
    PROVIDER_NAMES,
    ConnectError,
    connect_exchange,
    disconnect,
    set_skip_folders,
)
from worker.sync.folders import parse_skip_text, skip_in_force

pages = Blueprint("mailboxes", __name__)
protect(pages)


@pages.get("/mailboxes")
@login_required
def page() -> ResponseReturnValue:
    return _page(request.args.get("message"))


def _page(
    message: str | None, status: int = 200, exchange: dict[str, str] | None = None
) -> ResponseReturnValue:
    """The mailboxes page with `message`; an error is shown with its 4xx, not redirected.

    `exchange`: what was typed into the Exchange form (never the password), shown again.
    """
    user = current_user()
    assert user is not None
    rows = (
        db()
        .scalars(select(Mailbox).where(Mailbox.team_id == user.team_id).order_by(Mailbox.id))
        .all()
    )
    providers = get_settings().providers
    return render_template(
        "mailboxes.html",
        mailboxes=rows,
        names=PROVIDER_NAMES,
        choices=provider_choices(),
        held=_held_back(list(rows)),
        now=utcnow(),
        is_paused=is_paused,
        daily_cap=daily_cap,
        sends_today={m.id: sends_today(db(), m.id, utcnow()) for m in rows},
        skip_in_force=skip_in_force,
        skip_default=", ".join(providers.skip_folders) or "none: every folder is read",
        paused_sequences=db()
        .execute(
            select(Sequence.id, Sequence.name, SequencePause.reason, SequencePause.paused_at)
            .join(SequencePause, SequencePause.sequence_id == Sequence.id)
            .where(Sequence.team_id == user.team_id)
            .order_by(Sequence.name)
        )
        .all(),
        message=message,
        error=status >= 400,
        exchange=exchange or {},
    ), status


@dataclass(frozen=True)
class ProviderChoice:
    """One way to connect a mailbox, as the page lists it: every provider, always.

    `missing` names what the operator must set when this server cannot offer it
    (the OAuth client of Google or Microsoft): the page shows it disabled with
    that one line, rather than leaving a user to wonder where Gmail went.
    """

    kind: str
    name: str
    missing: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return not self.missing

    @property
    def operator_line(self) -> str:
        names = " and ".join(self.missing)
        return f"Not set up on this server: the operator must set {names} (see the README)."


def provider_choices() -> list[ProviderChoice]:
    """Gmail, Microsoft 365, Exchange and IMAP, each with what it still needs, if anything."""
    providers = get_settings().providers
    google = () if providers.google_configured else GOOGLE_OAUTH_VARIABLES
    microsoft = () if providers.microsoft_configured else MICROSOFT_OAUTH_VARIABLES
    return [
        ProviderChoice("gmail", "Gmail (Google Workspace)", google),
        ProviderChoice("graph", "Microsoft 365", microsoft),
        ProviderChoice("exchange", "Exchange Server (on-premises)"),
        ProviderChoice("imap", "IMAP (any other mail server)"),
    ]


@dataclass(frozen=True)
class _HeldBack:
    """A mailbox's quarantined messages as its row on the page shows them."""

    count: int
    newest: list[dict[str, str]]  # sender, subject, what happened and happens next


def _held_back(mailboxes: list[Mailbox]) -> dict[int, _HeldBack]:
    """Per mailbox with any: how many messages the sync keeps but could not read, newest 3."""
    counts = quarantine.counts(db(), [m.id for m in mailboxes])
    return {
        mailbox_id: _HeldBack(
            count,
            [
                {
                    "sender": row.from_addr or "unknown sender",
                    "subject": row.subject or "(no subject)",
                    "summary": quarantine.describe(row.error, row.details),
                }
                for row in quarantine.newest(db(), mailbox_id, 3)
            ],
        )
        for mailbox_id, count in counts.items()
    }


@pages.post("/mailboxes/connect/<kind>")
@login_required
def page_connect(kind: str) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    if kind not in OAUTH_KINDS:
        return redirect(url_for("mailboxes.page", message="Unknown provider."))
    try:
        url = start_oauth(
            kind, team_id=user.team_id, user_id=user.id, return_to=url_for("mailboxes.page")
        )
    except ProviderError as exc:
        return redirect(url_for("mailboxes.page", message=str(exc)))
    return redirect(url, code=303)


EXCHANGE_LABELS = {
    "email": "Email address",
    "ews_url": "EWS URL",
    "auth": "Sign-in",
    "username": "User name",
    "password": "Password",
}
EXCHANGE_FIELDS = ("email", "ews_url", "auth", "username")  # kept after an error; no password


@pages.post("/mailboxes/exchange")
@login_required
def page_connect_exchange() -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    typed = {name: (request.form.get(name) or "").strip() for name in EXCHANGE_FIELDS}
    form: dict[str, str] = {k: v for k, v in typed.items() if v}
    if request.form.get("password"):
        form["password"] = request.form["password"]
    # An empty user name is the email address, as on the IMAP form.
    if "username" not in form and form.get("auth", "ntlm") != "oauth" and "email" in form:
        form["username"] = form["email"]
    try:
        body = ExchangeMailboxCreate.model_validate(form)
    except ValidationError as exc:
        return _page(" ".join(labelled_messages(exc, EXCHANGE_LABELS).values()), 422, typed)
    try:
        connect_exchange(
            db(),
            team_id=user.team_id,
            user_id=user.id,
            email=body.email,
            credentials=body.credentials(),
        )
    except ConnectError as exc:
        return _page(exc.message, CONNECT_STATUS[exc.code], typed)
    return redirect(url_for("mailboxes.page", message=f"{body.email} is connected."))


@pages.post("/mailboxes/<int:mailbox_id>/reconnect")
@login_required
def page_reconnect(mailbox_id: int) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    mailbox = _owned(mailbox_id, user.team_id)
    if mailbox is None:
        return _page(f"mailbox {mailbox_id} not found", 404)
    try:
        if mailbox.kind in OAUTH_KINDS:
            url = start_oauth(
                mailbox.kind,
                team_id=user.team_id,
                user_id=user.id,
                mailbox_id=mailbox.id,
                login_hint=mailbox.email,
                return_to=url_for("mailboxes.page"),
            )
            return redirect(url, code=303)
        if mailbox.kind == MailboxKind.EXCHANGE:
            stored = decrypt_json(mailbox.credentials_encrypted)
            credentials = {**stored, "password": request.form.get("password", "")}
            connect_exchange(
                db(),
                team_id=user.team_id,
                user_id=user.id,
                email=mailbox.email,
                credentials=credentials,
                mailbox_id=mailbox.id,
            )
            return redirect(
                url_for("mailboxes.page", message=f"{mailbox.email} is connected again.")
            )
    except ConnectError as exc:
        return _page(exc.message, CONNECT_STATUS[exc.code])
    except ProviderError as exc:  # the OAuth provider's sign-in is unreachable
        return redirect(url_for("mailboxes.page", message=str(exc)))
    # IMAP: the connect form, filled in with the stored servers (never the passwords).
    return redirect(url_for("imap.connect", mailbox_id=mailbox_id))


@pages.post("/mailboxes/<int:mailbox_id>/disconnect")
@login_required
def page_disconnect(mailbox_id: int) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    mailbox = _owned(mailbox_id, user.team_id)
    if mailbox is None:
        return redirect(url_for("mailboxes.page", message=f"mailbox {mailbox_id} not found"))
    disconnect(db(), mailbox)
    return redirect(url_for("mailboxes.page", message=f"{mailbox.email} is disconnected."))


@pages.post("/mailboxes/<int:mailbox_id>/folders")
@login_required
def page_skip_folders(mailbox_id: int) -> ResponseReturnValue:
    """The folders a mailbox never reads for replies: typed, or back to the default."""
    user = current_user()
    assert user is not None
    mailbox = _owned(mailbox_id, user.team_id)
    if mailbox is None:
        return _page(f"mailbox {mailbox_id} not found", 404)
    skip: list[str] | None = None
    if not request.form.get("default"):
        try:
            skip = parse_skip_text(request.form.get("skip_folders", ""))
        except ValueError as exc:
            return _page(f"The folders for {mailbox.email} were not saved: {exc}.", 422)
    set_skip_folders(db(), mailbox, skip)
    shown = ", ".join(skip_in_force(skip)) or "none: every folder is read"
    return redirect(url_for("mailboxes.page", message=f"{mailbox.email} does not read: {shown}."))


def _owned(mailbox_id: int, team_id: int) -> Mailbox | None:
    mailbox = db().get(Mailbox, mailbox_id)
    return mailbox if mailbox is not None and mailbox.team_id == team_id else None


@pages.post("/mailboxes/<int:mailbox_id>/resume")
@login_required
def page_resume(mailbox_id: int) -> ResponseReturnValue:
    """Lift a mailbox's pause (the bounce guard's, or a quota's before it resets)."""
    user = current_user()
    assert user is not None
    mailbox = _owned(mailbox_id, user.team_id)
    if mailbox is None:
        return _page(f"mailbox {mailbox_id} not found", 404)
    released = resume_mailbox(db(), mailbox.id, utcnow())
    db().commit()
    return redirect(
        url_for("mailboxes.page", message=f"{mailbox.email} sends again ({released} waiting).")
    )


@pages.post("/mailboxes/sequences/<int:sequence_id>/resume")
@login_required
def page_resume_sequence(sequence_id: int) -> ResponseReturnValue:
    """Lift a sequence's pause by the bounce guard."""
    user = current_user()
    assert user is not None
    sequence = db().get(Sequence, sequence_id)
    if sequence is None or sequence.team_id != user.team_id:
        return _page(f"sequence {sequence_id} not found", 404)
    released = resume_sequence(db(), sequence.id, utcnow())
    db().commit()
    return redirect(
        url_for("mailboxes.page", message=f"{sequence.name} sends again ({released} waiting).")
    )
