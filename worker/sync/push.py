"""Push for Gmail and Microsoft 365: starting, renewing and stopping it, and what a push names.

Owns the `mailbox_push` rows (`core.models.MailboxPush`) and the jobs that keep
them alive; it never reads mail (the engine does) and never answers HTTP (the
webhooks in `web.webhooks` do, and look mailboxes up with `mailbox_for_*`).

    connect / cron tick ─▶ renew_push_job(mailbox)  (one waiting per mailbox)
        gmail: users.watch(topic, INBOX)           ─▶ row: external_id = address, expires_at
        graph: PATCH subscription, or POST a new one ─▶ row: external_id = subscription id
               (clientState = "<mailbox id>.<HMAC(SECRET_KEY, mailbox id)>": checked on
               every notification before the database is asked anything)
    cron renew_due: rows expiring within RENEW_BEFORE, failed rows, and push-capable
        mailboxes without a row → renew_push_job
    disconnect ─▶ disconnect_job: stop the watch / delete the subscription, revoke
        (Gmail), wipe the stored tokens. The mailbox row stays (its history is kept).

A Gmail watch lasts 7 days and Google advises renewing it daily; a Graph
subscription on messages lasts at most 10,080 minutes. Renewing a day ahead
covers both, and a failed renewal is retried on the next tick while the
poll keeps the mailbox fresh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from sqlalchemy import bindparam, delete, select, update

from config import get_settings, queues
from core.crypto import CredentialsError, decrypt_json, encrypt_json
from core.db import autocommit_connection, session_scope
from core.events import insert_ignore
from core.models import Mailbox, MailboxKind, MailboxPush, MailboxStatus, PushKind, utcnow
from worker.queueing import enqueue_once, job_started
from worker.sync.base import MailboxProvider, ProviderError
from worker.sync.credentials import credential_saver
from worker.sync.folders import with_skip_folders
from worker.sync.registry import open_provider

if TYPE_CHECKING:
    # Only for types: the providers are opened through the registry and told apart
    # by their kind, so this module (imported by the web process for the webhooks
    # and connects) never loads a vendor SDK itself.
    from worker.sync.gmail import GmailProvider
    from worker.sync.graph import GraphProvider

log = logging.getLogger(__name__)

RENEW_BEFORE = timedelta(days=1)
RENEW_JOB = "worker.sync.push.renew_push_job"
DISCONNECT_JOB = "worker.sync.push.disconnect_job"
PUSH_KINDS = {
    MailboxKind.GMAIL: PushKind.GMAIL_WATCH,
    MailboxKind.GRAPH: PushKind.GRAPH_SUBSCRIPTION,
}


# -- Graph's clientState ----------------------------------------------------------------
#
# A subscription's clientState is "<mailbox id>.<mac>", mac = HMAC-SHA256(key,
# "graph-client-state:<id>") in unpadded base64url (43 characters): the webhook
# reads the mailbox from it and checks the mac with no database access, so a
# flood of forged notifications costs HMACs, not queries. Subscriptions made
# before this format carry the bare mac ("legacy"); Graph's PATCH renews only a
# subscription's expiry, never its clientState, so those are recognised from a
# table of every Graph mailbox's bare macs, built with one query and rebuilt at
# most once per LEGACY_REFRESH_SECONDS per process (and only when a legacy-shaped
# state is not in it).

MAC_LENGTH = 43
LEGACY_REFRESH_SECONDS = 60.0


def _mac(key: str, mailbox_id: int) -> str:
    message = f"graph-client-state:{mailbox_id}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _client_state(key: str, mailbox_id: int) -> str:
    return f"{mailbox_id}.{_mac(key, mailbox_id)}"


def client_state(mailbox_id: int) -> str:
    """The secret Graph echoes in every notification for this mailbox's subscription."""
    return _client_state(get_settings().secret_key, mailbox_id)


def _mailbox_in_state(given: str) -> int | None:
    """The mailbox a current-format clientState names, if its mac is ours (any signing key).

    A subscription keeps the client state it was created with, so after a
    SECRET_KEY rotation its notifications still carry one made with a former key.
    """
    head, dot, mac = given.partition(".")
    if not dot or len(mac) != MAC_LENGTH or not head.isascii() or not head.isdigit():
        return None
    if len(head) > 10 or head.startswith("0"):
        return None
    mailbox_id = int(head)
    for key in get_settings().signing_keys:
        if hmac.compare_digest(mac.encode(), _mac(key, mailbox_id).encode()):
            return mailbox_id
    return None


class _LegacyStates:
    """Bare mac → mailbox for every Graph push row, rebuilt at most once a minute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table: dict[str, int] = {}
        self.built_at: float | None = None

    def mailbox(self, given: str) -> int | None:
        if len(given) != MAC_LENGTH:
            return None
        now = time.monotonic()
        with self.lock:
            found = self.table.get(given)
            fresh = self.built_at is not None and now - self.built_at < LEGACY_REFRESH_SECONDS
            if found is not None or fresh:
                return found
            self.built_at = now  # claimed before the query: one rebuild at a time
        with session_scope() as session:
            ids = session.scalars(
                select(MailboxPush.mailbox_id).where(
                    MailboxPush.kind == PushKind.GRAPH_SUBSCRIPTION
                )
            ).all()
        keys = get_settings().signing_keys
        table = {_mac(key, int(i)): int(i) for i in ids for key in keys}
        with self.lock:
            self.table = table
        log.info("graph_legacy_client_states mailboxes=%s", len(ids))
        return table.get(given)

    def forget(self) -> None:
        with self.lock:
            self.table = {}
            self.built_at = None


_legacy = _LegacyStates()


def forget_legacy_client_states() -> None:
    """Drop the legacy table (a test's new database, a key rotation in tests)."""
    _legacy.forget()


def mailbox_for_client_state(given: str) -> int | None:
    """The mailbox `given` is the clientState of, or None if it is not one of ours.

    Current-format states are checked with HMACs only; legacy ones with the table
    (at most one query per LEGACY_REFRESH_SECONDS per process).
    """
    if "." in given:
        return _mailbox_in_state(given)
    return _legacy.mailbox(given)


def client_state_matches(mailbox_id: int, given: str) -> bool:
    """True if `given` is this mailbox's client state (current or legacy format, any key)."""
    if "." in given:
        return _mailbox_in_state(given) == mailbox_id
    return any(
        hmac.compare_digest(given.encode(), _mac(key, mailbox_id).encode())
        for key in get_settings().signing_keys
    )


def request_renewal(mailbox_id: int) -> bool:
    return enqueue_once(f"push:{mailbox_id}", queues.DEFAULT, RENEW_JOB, mailbox_id, ttl=3600)


def renew_due() -> int:
    """Cron: queue a renewal for every push that expires soon, failed, or was never started."""
    cutoff = utcnow() + RENEW_BEFORE
    with session_scope() as session:
        rows = session.execute(
            select(Mailbox.id, MailboxPush.id, MailboxPush.expires_at, MailboxPush.last_error)
            .outerjoin(MailboxPush, MailboxPush.mailbox_id == Mailbox.id)
            .where(
                Mailbox.kind.in_(list(PUSH_KINDS)),
                Mailbox.status.in_([MailboxStatus.ACTIVE, MailboxStatus.ERROR]),
            )
        ).all()
    due = [
        mailbox_id
        for mailbox_id, push_id, expires_at, last_error in rows
        if push_id is None or last_error is not None or expires_at is None or expires_at <= cutoff
    ]
    return sum(request_renewal(int(mailbox_id)) for mailbox_id in due)


def renew_push_job(mailbox_id: int) -> dict[str, object]:
    """RQ job: start or renew the mailbox's push. Safe to run twice."""
    job_started(f"push:{mailbox_id}")
    with session_scope() as session:
        mailbox = session.get(Mailbox, mailbox_id)
        if mailbox is None or mailbox.kind not in PUSH_KINDS:
            return {"status": "none"}
        if mailbox.status in (MailboxStatus.NEEDS_RECONNECT, MailboxStatus.DISABLED):
            return {"status": "skipped", "mailbox_status": mailbox.status}
        kind, email = mailbox.kind, mailbox.email
        push = session.scalar(select(MailboxPush).where(MailboxPush.mailbox_id == mailbox_id))
        subscription_id = push.external_id if push is not None else None
        saver = credential_saver(mailbox.id, mailbox.credentials_encrypted)
        try:
            credentials = decrypt_json(mailbox.credentials_encrypted)
        except CredentialsError as exc:
            _record(mailbox_id, kind, None, None, str(exc))
            return {"status": "failed"}
        credentials = with_skip_folders(credentials, mailbox.skip_folders)
    providers = get_settings().providers
    topic, url = providers.gmail_pubsub_topic, providers.graph_notification_url
    if (kind == MailboxKind.GMAIL and not topic) or (kind == MailboxKind.GRAPH and not url):
        missing = "GMAIL_PUBSUB_TOPIC" if kind == MailboxKind.GMAIL else "GRAPH_NOTIFICATION_URL"
        _record(mailbox_id, kind, None, None, f"{missing} is not set: this mailbox is polled only")
        return {"status": "unconfigured"}
    try:
        with open_provider(kind, email, credentials, save_credentials=saver) as provider:
            if kind == MailboxKind.GMAIL:
                assert provider.kind == MailboxKind.GMAIL and topic
                expires = cast("GmailProvider", provider).start_watch(topic)
                external: str | None = email.lower()
            else:
                assert provider.kind == MailboxKind.GRAPH and url
                graph = cast("GraphProvider", provider)
                external, expires = _subscribe(graph, mailbox_id, subscription_id, url)
    except ProviderError as exc:
        _record(mailbox_id, kind, None, None, str(exc), keep_external=True)
        if exc.needs_reconnect:
            with session_scope() as session:
                session.execute(
                    update(Mailbox)
                    .where(Mailbox.id == mailbox_id)
                    .values(status=MailboxStatus.NEEDS_RECONNECT, status_reason=str(exc))
                )
            return {"status": "needs_reconnect"}
        if exc.permanent:
            return {"status": "failed"}
        raise
    _record(mailbox_id, kind, external, expires, None)
    log.info("push_renewed mailbox_id=%s kind=%s expires_at=%s", mailbox_id, kind, expires)
    return {"status": "renewed", "expires_at": expires.isoformat() if expires else None}


def _subscribe(
    provider: GraphProvider, mailbox_id: int, subscription_id: str | None, url: str
) -> tuple[str, datetime]:
    """Renew the Graph subscription, or make a new one when it is gone."""
    if subscription_id:
        try:
            return subscription_id, provider.renew(subscription_id)
        except ProviderError as exc:
            if not exc.permanent or exc.needs_reconnect:
                raise
            log.info("graph_subscription_gone mailbox_id=%s reason=%s", mailbox_id, exc)
    return provider.subscribe(url, client_state(mailbox_id))


def _record(
    mailbox_id: int,
    kind: str,
    external_id: str | None,
    expires_at: datetime | None,
    error: str | None,
    *,
    keep_external: bool = False,
) -> None:
    push_kind = PUSH_KINDS[MailboxKind(kind)]
    now = utcnow()
    with session_scope() as session:
        insert_ignore(
            session,
            MailboxPush.__table__,  # type: ignore[arg-type]
            {"mailbox_id": mailbox_id, "kind": push_kind, "created_at": now},
            "mailbox_id",
        )
        values: dict[str, object] = {"kind": push_kind, "last_error": error}
        if not keep_external:
            values["external_id"] = external_id
            values["expires_at"] = expires_at
            values["renewed_at"] = now if error is None else None
        session.execute(
            update(MailboxPush).where(MailboxPush.mailbox_id == mailbox_id).values(**values)
        )
    if error is not None:
        log.warning("push_failed mailbox_id=%s kind=%s error=%s", mailbox_id, kind, error)


def disconnect_job(mailbox_id: int) -> dict[str, object]:
    """RQ job: stop the push, give the grant back where the provider allows, wipe the tokens."""
    with session_scope() as session:
        mailbox = session.get(Mailbox, mailbox_id)
        if mailbox is None:
            return {"status": "none"}
        kind, email = mailbox.kind, mailbox.email
        push = session.scalar(select(MailboxPush).where(MailboxPush.mailbox_id == mailbox_id))
        subscription_id = push.external_id if push is not None else None
        try:
            credentials = decrypt_json(mailbox.credentials_encrypted)
        except CredentialsError:
            credentials = {}
    if credentials and kind in PUSH_KINDS:
        try:
            with open_provider(kind, email, credentials) as provider:
                _stop(provider, subscription_id)
        except ProviderError as exc:
            # The tokens are wiped below either way; a watch left behind expires by itself.
            log.warning("disconnect_cleanup_failed mailbox_id=%s error=%s", mailbox_id, exc)
    with session_scope() as session:
        session.execute(
            update(Mailbox)
            .where(Mailbox.id == mailbox_id, Mailbox.status == MailboxStatus.DISABLED)
            .values(credentials_encrypted=encrypt_json({}), sync_cursor=None)
        )
        session.execute(delete(MailboxPush).where(MailboxPush.mailbox_id == mailbox_id))
    log.info("mailbox_disconnected mailbox_id=%s kind=%s", mailbox_id, kind)
    return {"status": "disconnected"}


def _stop(provider: MailboxProvider, subscription_id: str | None) -> None:
    if provider.kind == MailboxKind.GMAIL:
        gmail = cast("GmailProvider", provider)
        gmail.stop_watch()
        gmail.revoke()
    elif provider.kind == MailboxKind.GRAPH and subscription_id:
        cast("GraphProvider", provider).unsubscribe(subscription_id)


# The push's mailboxes (built once; its compiled form is SQLAlchemy's cache's).
_GMAIL_PUSH_MAILBOXES = (
    select(Mailbox.id, Mailbox.sync_cursor)
    .join(MailboxPush, MailboxPush.mailbox_id == Mailbox.id)
    .where(
        MailboxPush.kind == PushKind.GMAIL_WATCH,
        MailboxPush.external_id == bindparam("address"),
        Mailbox.status.in_([MailboxStatus.ACTIVE, MailboxStatus.ERROR]),
    )
)


def mailboxes_for_gmail_push(address: str) -> list[tuple[int, dict[str, object] | None]]:
    """(mailbox id, sync cursor) of the active Gmail mailboxes a push for `address` is about.

    One indexed query per push, on a pooled connection in autocommit: no ORM
    session, no BEGIN and COMMIT round trips (a single SELECT needs neither).
    Deliberately not cached in the process: a remembered address → mailbox
    would, after a disconnect and a new connect of the same address (a new
    mailbox row), keep syncing the old row and never the new one — a missed
    sync, which the poll would not make up for while the watch is live — and
    the cursor's historyId (which skips redeliveries) changes with every sync.
    """
    with autocommit_connection() as connection:
        rows = connection.execute(_GMAIL_PUSH_MAILBOXES, {"address": address.lower()}).all()
    return [(int(i), c) for i, c in rows]


# The notification's subscriptions (built once; an expanding IN keeps one cache entry).
_GRAPH_SUBSCRIPTION_MAILBOXES = select(MailboxPush.external_id, MailboxPush.mailbox_id).where(
    MailboxPush.kind == PushKind.GRAPH_SUBSCRIPTION,
    MailboxPush.external_id.in_(bindparam("ids", expanding=True)),
)


def mailboxes_for_subscriptions(subscription_ids: Collection[str]) -> dict[str, int]:
    """Subscription id → mailbox, for those of `subscription_ids` that are ours. One query.

    Any mailbox status: the caller decides. The caller bounds the collection's size.
    As for Gmail's pushes: a pooled connection in autocommit, no ORM session and
    its BEGIN and COMMIT, and nothing remembered in the process (a subscription
    is replaced on renewal when Graph lost it; a stale entry would miss syncs).
    """
    if not subscription_ids:
        return {}
    with autocommit_connection() as connection:
        rows = connection.execute(
            _GRAPH_SUBSCRIPTION_MAILBOXES, {"ids": sorted(subscription_ids)}
        ).all()
    return {str(external): int(mailbox) for external, mailbox in rows if external is not None}
