"""Connecting, reconnecting and disconnecting a mailbox: what every way in shares.

The API (`web.connect.api`), the pages (`web.connect.page`, `web.app.imap`) and
the OAuth confirm step (`web.connect.oauth`) all connect through here, so a
mailbox is stored, checked and started the same way whoever asks:

    connect_imap ──▶ policy check of both servers ─▶ IMAP + SMTP login (unless told not to)
    (Exchange: check_ews_url, verify_exchange; OAuth: the provider's tokens)
        ─▶ save_mailbox: the mailbox this address connects (target), credentials
           Fernet-encrypted, status active, one commit
        ─▶ the first sync queued, push started (Gmail, Microsoft 365), listeners woken
    disconnect ─▶ status disabled at once, one commit ─▶ worker.sync.push.disconnect_job
        (queued by name) stops push, revokes, wipes the tokens; the history stays

Every refusal is a `ConnectError` with a `code` the caller turns into its own
answer (the API's status, a form's message): `not_found`, `wrong_account`,
`conflict`, `mailbox_unreachable`, `address_not_allowed`. Functions take the
session they work in (a web request's) and commit it themselves.

Must never: save credentials unencrypted, log a password or token, reach a
server the outbound policy (core.outbound) refuses, or connect one team's
address into another team's mailbox.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import get_settings, queues
from core import outbound_deadline
from core.crypto import encrypt_json
from core.models import Mailbox, MailboxKind, MailboxStatus, utcnow
from core.outbound import OutboundError, resolve, resolve_url
from worker.listener import announce_mailbox_change
from worker.queueing import enqueue
from worker.sync.base import MailboxProvider, ProviderError
from worker.sync.engine import request_sync
from worker.sync.imap_connect import LoginUnavailableError
from worker.sync.push import DISCONNECT_JOB, request_renewal
from worker.sync.registry import open_provider

log = logging.getLogger(__name__)

OAUTH_KINDS = (MailboxKind.GMAIL, MailboxKind.GRAPH)
PROVIDER_NAMES = {
    "imap": "IMAP",
    "gmail": "Gmail",
    "exchange": "Exchange",
    "graph": "Microsoft 365",
}


# A connect's login check holds the page (and a web worker) this long at most, or a
# sync's deadline if shorter: a server answering a byte at a time is cut off then
# (core.outbound_deadline).
CHECK_SECONDS = 30


def _check_seconds() -> int:
    return min(CHECK_SECONDS, get_settings().sync_deadline_seconds)


def _log_in(opened: Callable[[], AbstractContextManager[MailboxProvider]], field: str) -> None:
    """Open and verify a provider under the check's deadline; a server still answering
    then is a ConnectError naming `field`. Anything else (a ProviderError) goes on up."""
    with outbound_deadline.deadline(_check_seconds()):
        try:
            with opened() as provider:
                provider.verify()
        except Exception:
            if not outbound_deadline.cut_off():
                raise
            slow = (
                f"the server was still answering after {_check_seconds()} s: "
                "check the host and port, or try again later"
            )
            raise ConnectError("mailbox_unreachable", slow, {field: slow}, try_later=True) from None


class ConnectError(Exception):
    """A mailbox was not connected; `message` tells the person why, `field` what to change.

    `try_later`: the server could not log in for now and said so; nothing typed is
    known to be wrong, and the same form sent again later may connect.
    """

    def __init__(
        self,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        *,
        try_later: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields
        self.try_later = try_later


def save_mailbox(
    session: Session,
    *,
    team_id: int,
    user_id: int | None,
    kind: str,
    email: str,
    credentials: dict[str, Any],
    mailbox_id: int | None,
) -> Mailbox:
    """Create the mailbox, or give an existing one (same team and address) new credentials.

    Raises:
        ConnectError: a reconnect signed in as another address, or the mailbox is gone.
    """
    email = email.lower()
    mailbox = target(session, team_id, kind, email, mailbox_id)
    return _store(session, mailbox, team_id, user_id, kind, email, credentials)


def target(
    session: Session, team_id: int, kind: str, email: str, mailbox_id: int | None
) -> Mailbox | None:
    """The team's mailbox that `email` would connect (None: a new one). Raises ConnectError."""
    if mailbox_id is not None:
        mailbox = session.get(Mailbox, mailbox_id)
        if mailbox is None or mailbox.team_id != team_id:
            raise ConnectError("not_found", f"mailbox {mailbox_id} not found")
        if mailbox.email != email:
            raise ConnectError(
                "wrong_account",
                f"you signed in as {email}, but this mailbox is {mailbox.email}",
                {"email": f"sign in as {mailbox.email}"},
            )
    else:
        mailbox = session.scalar(
            select(Mailbox).where(Mailbox.team_id == team_id, Mailbox.email == email)
        )
    if mailbox is not None and mailbox.kind != kind:
        existing = PROVIDER_NAMES.get(mailbox.kind, mailbox.kind)
        raise ConnectError("conflict", f"{email} is already connected as a {existing} mailbox")
    return mailbox


def _store(
    session: Session,
    mailbox: Mailbox | None,
    team_id: int,
    user_id: int | None,
    kind: str,
    email: str,
    credentials: dict[str, Any],
) -> Mailbox:
    """Save `credentials` (encrypted) on `mailbox`, or on a new one; mark it active; sync it."""
    if mailbox is None:
        mailbox = Mailbox(
            team_id=team_id, user_id=user_id, kind=kind, email=email, created_at=utcnow()
        )
        session.add(mailbox)
    mailbox.credentials_encrypted = encrypt_json(credentials)
    mailbox.status = MailboxStatus.ACTIVE
    mailbox.status_reason = None
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # another request connected it between our read and our write
        raise ConnectError("conflict", f"{email} is already connected") from None
    _after_connect(mailbox)
    log.info("mailbox_connected mailbox_id=%s kind=%s team_id=%s", mailbox.id, kind, team_id)
    return mailbox


def _after_connect(mailbox: Mailbox) -> None:
    """Queue the first sync and start push; wake the listener for Exchange."""
    request_sync(mailbox.id)
    if mailbox.kind in OAUTH_KINDS:
        request_renewal(mailbox.id)
    announce_mailbox_change()


def connect_imap(
    session: Session,
    *,
    team_id: int,
    user_id: int | None,
    email: str,
    credentials: dict[str, Any],
    verify: bool = True,
) -> Mailbox:
    """Connect an IMAP + SMTP mailbox: the one path of the API and the web form.

    Logs in to both servers first (unless `verify` is false), then stores the
    credentials (`{"imap": {...}, "smtp": {...}, "folders", "append_to_sent"}`)
    Fernet-encrypted and queues the first sync. The team's IMAP mailbox at the
    same address that needs reconnecting, failed or was disconnected is
    reconnected: it gets the new credentials and keeps its history. A working
    one is left alone.

    Raises:
        ConnectError: ``mailbox_unreachable`` or ``address_not_allowed`` (``fields``
            names ``imap`` or ``smtp``: the server that refused, and why; never the
            password; ``try_later`` when that server could not log in for now, or
            was still answering after `CHECK_SECONDS`), ``conflict`` when the team
            already has this address
            connected and working, or connected with another provider.
    """
    email = email.lower()
    mailbox = session.scalar(
        select(Mailbox).where(Mailbox.team_id == team_id, Mailbox.email == email)
    )
    if mailbox is not None and mailbox.kind != MailboxKind.IMAP:
        existing = PROVIDER_NAMES.get(mailbox.kind, mailbox.kind)
        raise ConnectError("conflict", f"{email} is already connected as a {existing} mailbox")
    if mailbox is not None and mailbox.status == MailboxStatus.ACTIVE:
        raise ConnectError("conflict", f"{email} is already connected")
    # Even unverified, a server the outbound policy refuses is never saved: the sync
    # would be refused later anyway, and the team should hear it now.
    for field in ("imap", "smtp"):
        check_server(field, str(credentials[field]["host"]), int(credentials[field]["port"]))
    if verify:
        try:
            _log_in(lambda: open_provider(MailboxKind.IMAP, email, credentials), "imap")
        except ProviderError as exc:
            server = "smtp" if str(exc).startswith("SMTP") else "imap"
            raise ConnectError(
                "mailbox_unreachable",
                str(exc),
                {server: str(exc)},
                try_later=isinstance(exc, LoginUnavailableError),
            ) from None
    return _store(session, mailbox, team_id, user_id, MailboxKind.IMAP, email, credentials)


def connect_exchange(
    session: Session,
    *,
    team_id: int,
    user_id: int | None,
    email: str,
    credentials: dict[str, Any],
    mailbox_id: int | None = None,
    verify: bool = True,
) -> Mailbox:
    """Connect (or, with `mailbox_id`, reconnect) an Exchange mailbox over EWS.

    `credentials`: `{"ews_url", "auth", "username", "password"}` or, with auth
    "oauth", `{"ews_url", "auth", "access_token"}`. The EWS URL must pass the
    outbound policy, also unverified; with `verify` the mailbox is opened first.

    Raises:
        ConnectError: ``address_not_allowed`` or ``mailbox_unreachable`` (naming
            ``ews_url``), or what `save_mailbox` refuses.
    """
    check_ews_url(str(credentials["ews_url"]))
    if verify:
        verify_exchange(email, credentials)
    return save_mailbox(
        session,
        team_id=team_id,
        user_id=user_id,
        kind=MailboxKind.EXCHANGE,
        email=email,
        credentials=credentials,
        mailbox_id=mailbox_id,
    )


def refused(field: str, exc: OutboundError) -> ConnectError:
    """The refusal of a destination the outbound policy (core.outbound) will not reach."""
    code = "address_not_allowed" if exc.permanent else "mailbox_unreachable"
    return ConnectError(code, str(exc), {field: str(exc)})


def check_server(field: str, host: str, port: int) -> None:
    """Raise a ConnectError naming `field` ("imap", "smtp") if the policy refuses host:port."""
    try:
        resolve(host, port, purpose=field.upper())
    except OutboundError as exc:
        raise refused(
            field, OutboundError(f"{field.upper()} server {exc}", permanent=exc.permanent)
        ) from None


def check_ews_url(url: str) -> None:
    """Raise a ConnectError naming `ews_url` if the policy refuses the EWS URL."""
    try:
        resolve_url(url, purpose="Exchange", schemes=("https", "http"))
    except OutboundError as exc:
        words = str(exc)
        if not exc.permanent:  # the name did not resolve
            words += ": check the server name in the EWS URL."
        elif "SIGHTLINE_ALLOWED_NETWORKS" in words:  # already says what to do
            words += "."
        else:
            words += ": check the EWS URL."
        raise refused(
            "ews_url", OutboundError(f"EWS URL {words}", permanent=exc.permanent)
        ) from None


_EWS_ANSWERED = re.compile(r"^Exchange answered (\w+) while [^:]*(?:: (.*))?$", re.S)


def exchange_refusal(exc: ProviderError) -> str:
    """One sentence for a failed Exchange connect: what went wrong and what to do.

    `exc` is `worker.sync.exchange_errors.ews_error`'s, whose words are already
    safe to show (an EWS error text only from a well-formed EWS answer); this
    adds what the person can do about it and drops which call it was.
    """
    words = str(exc)
    if exc.needs_reconnect and "refused the login" in words:
        return (
            "Exchange refused the sign-in: check the user name (DOMAIN\\user or the email "
            "address), the password and the sign-in type, then try again."
        )
    if exc.retry_after is not None:
        return "Exchange is busy and asked us to wait: try again in a minute."
    if words.startswith("Exchange has no such mailbox"):
        return (
            "Exchange has no mailbox for this email address: enter the mailbox's own "
            "(primary) address."
        )
    if words.startswith("Exchange unreachable"):
        why = words.partition(": ")[2] or "no answer"
        return (
            f"Exchange could not be reached: {why}; check the EWS URL and that the server "
            "accepts connections from Sightline."
        )
    if words.startswith("the server did not answer like Exchange"):
        return (
            "The server at this EWS URL did not answer like Exchange: check the URL (it "
            "usually ends in /EWS/Exchange.asmx)."
        )
    answered = _EWS_ANSWERED.match(words)
    if answered:
        code, text = answered.group(1), (answered.group(2) or "").rstrip(".")
        detail = f"{code}: {text}" if text else code
        return (
            f"Exchange refused the request ({detail}): check that this account may use "
            "Exchange Web Services, or ask your Exchange administrator."
        )
    return f"{words.rstrip('.')}: check the EWS URL, user name and password, then try again."


def verify_exchange(email: str, credentials: dict[str, Any]) -> None:
    """Open the mailbox with these credentials; a ConnectError naming `ews_url` if it fails."""
    # lazy import: exchangelib costs the web process 18 MiB RSS and 0.2 s (measured
    # after create_app); only an Exchange connect needs it.
    from worker.sync.exchange import ExchangeProvider

    try:
        _log_in(lambda: ExchangeProvider(email, credentials), "ews_url")
    except ProviderError as exc:
        message = exchange_refusal(exc)
        raise ConnectError("mailbox_unreachable", message, {"ews_url": message}) from None


def disconnect(session: Session, mailbox: Mailbox) -> None:
    """Disabled now; the job stops push, revokes and wipes the tokens."""
    mailbox.status = MailboxStatus.DISABLED
    mailbox.status_reason = "disconnected"
    session.commit()
    enqueue(queues.DEFAULT, DISCONNECT_JOB, mailbox.id)
    announce_mailbox_change()
    log.info("mailbox_disconnect_requested mailbox_id=%s", mailbox.id)


def set_skip_folders(session: Session, mailbox: Mailbox, skip: list[str] | None) -> None:
    """The folders `mailbox` never reads (None: SIGHTLINE_SKIP_FOLDERS), in force at once:
    the next sync reads by them, a held watch (IMAP IDLE, the EWS stream) starts again
    on the new folders, and a Gmail watch is renewed with the new labels left out."""
    mailbox.skip_folders = None if skip is None else list(skip)
    session.commit()
    if mailbox.kind == MailboxKind.GMAIL:
        request_renewal(mailbox.id)
    announce_mailbox_change()
    request_sync(mailbox.id)
    log.info("mailbox_skip_folders mailbox_id=%s count=%s", mailbox.id, len(skip or []))


def in_use(session: Session, kind: str, email: str) -> bool:
    """Whether a mailbox of any team holds a grant for this account."""
    found = session.scalar(
        select(Mailbox.id).where(
            Mailbox.kind == kind,
            Mailbox.email == email.lower(),
            Mailbox.status != MailboxStatus.DISABLED,
        )
    )
    return found is not None
