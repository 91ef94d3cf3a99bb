"""One interface over the four mailbox back-ends, for the provider contract suite.

Each harness owns the server side of one provider kind — a real IMAP server
(Dovecot, Courier or GNU Mailutils) + the SMTP server delivering into it, the
fake Gmail, the fake EWS, the fake Graph — and offers what
the contract needs: fresh mailbox addresses with working credentials, mail
arriving, the sent copies as the provider stored them, and the provider's
failure modes (refused credentials, an expired cursor, throttling, a message it
cannot hand over).

Where a back-end has no such failure, the harness says so (`None`/False) and
the test is skipped with that reason: IMAP servers do not throttle with a wait,
and Dovecot cannot corrupt one message.
"""

from __future__ import annotations

import copy
import html
import re
from dataclasses import dataclass
from email import message_from_bytes
from typing import Any, Protocol

from sqlalchemy import update

from core.db import session_scope
from core.models import Mailbox
from tests.services.imap_server import ImapTestServer, unique_address
from worker.sync.imap_folders import folder_states


@dataclass(frozen=True)
class StoredCopy:
    message_id: str | None
    thread_id: str | None
    raw: bytes


class Harness(Protocol):
    kind: str
    has_threads: bool

    def new_address(self) -> str: ...

    def credentials(self, address: str) -> dict[str, Any]: ...

    def deliver(self, address: str, raw: bytes) -> str | None:
        """Put `raw` in the mailbox's inbox; returns the provider's id for it if it has one."""

    def sent_copies(self, address: str) -> list[StoredCopy]: ...

    def deliver_threaded(self, address: str, raw: bytes, thread_with: str) -> None:
        """Deliver `raw`; a provider with threads files it in `thread_with`'s thread."""

    def file_into(self, address: str, raw: bytes, folder: str) -> bool:
        """Deliver `raw` straight into `folder` (made if missing), as a rule would; True."""

    def revoke(self, address: str, mailbox_id: int) -> None: ...

    def expire_cursor(self, address: str, mailbox_id: int) -> None: ...

    def throttle(self, address: str, calls: int) -> bool: ...

    def corrupt(self, address: str, provider_ref: str | None) -> bool: ...


class ImapHarness:
    kind = "imap"
    has_threads = False

    def __init__(self, server: ImapTestServer, smtp_server: Any) -> None:
        self.server = server
        self.smtp = smtp_server

    def new_address(self) -> str:
        address = unique_address("seller.test", "rep")
        self.server.ensure_user(address)
        return address

    def credentials(self, address: str) -> dict[str, Any]:
        server = {"username": address, "security": "none"}
        return {
            "imap": {
                **server,
                "host": self.server.host,
                "port": self.server.imap_port,
                "password": self.server.password,
            },
            "smtp": {
                **server,
                "host": self.smtp.host,
                "port": self.smtp.port,
                "password": self.smtp.password,
            },
        }

    def deliver(self, address: str, raw: bytes) -> str | None:
        self.server.deliver(address, raw)
        return None

    def deliver_threaded(self, address: str, raw: bytes, thread_with: str) -> None:
        self.server.deliver(address, raw)  # IMAP has no threads: the subject rule's case

    def file_into(self, address: str, raw: bytes, folder: str) -> bool:
        self.server.file_into(address, folder, raw)
        return True

    def sent_copies(self, address: str) -> list[StoredCopy]:
        copies = []
        for raw in self.server.messages(address, folder=self.server.sent_folder):
            parsed = message_from_bytes(raw)
            copies.append(StoredCopy(str(parsed.get("Message-ID") or "") or None, None, raw))
        return copies

    def revoke(self, address: str, mailbox_id: int) -> None:
        # The test servers have one shared password; a changed password looks like this.
        from core.crypto import encrypt_json

        creds = self.credentials(address)
        creds["imap"]["password"] = "changed-by-the-user"
        with session_scope() as session:
            session.execute(
                update(Mailbox)
                .where(Mailbox.id == mailbox_id)
                .values(credentials_encrypted=encrypt_json(creds))
            )

    def expire_cursor(self, address: str, mailbox_id: int) -> None:
        # A server that renumbered INBOX: the stored UIDVALIDITY no longer matches.
        with session_scope() as session:
            mailbox = session.get_one(Mailbox, mailbox_id)
            cursor = copy.deepcopy(mailbox.sync_cursor or {})
            states = folder_states(cursor)
            inbox = dict(states.get("INBOX") or {})
            inbox["uidvalidity"] = int(inbox.get("uidvalidity", 1)) + 1000
            states["INBOX"] = inbox
            mailbox.sync_cursor = cursor

    def throttle(self, address: str, calls: int) -> bool:
        return False

    def corrupt(self, address: str, provider_ref: str | None) -> bool:
        return False


class GmailHarness:
    kind = "gmail"
    has_threads = True

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def new_address(self) -> str:
        address = unique_address("seller.test", "rep")
        self.fake.add_user(address)
        return address

    def credentials(self, address: str) -> dict[str, Any]:
        creds: dict[str, Any] = self.fake.grant(address)
        return creds

    def deliver(self, address: str, raw: bytes) -> str | None:
        return str(self.fake.deliver(address, raw).id)

    def deliver_threaded(self, address: str, raw: bytes, thread_with: str) -> None:
        labels = ["INBOX", "UNREAD", "CATEGORY_PERSONAL"]
        self.fake.add_message(address, raw, labels, thread_with=thread_with)

    def file_into(self, address: str, raw: bytes, folder: str) -> bool:
        # A filter's "skip the Inbox, apply label": a user label, no INBOX.
        self.fake.add_message(address, raw, ["Label_12", "UNREAD"])
        return True

    def sent_copies(self, address: str) -> list[StoredCopy]:
        return [
            StoredCopy(m.header("Message-ID"), m.thread_id, m.raw)
            for m in self.fake.messages(address, "SENT")
        ]

    def revoke(self, address: str, mailbox_id: int) -> None:
        self.fake.revoke_user(address)

    def expire_cursor(self, address: str, mailbox_id: int) -> None:
        self.fake.expire_history(address)

    def throttle(self, address: str, calls: int) -> bool:
        self.fake.rate_limit(address, calls)
        return True

    def corrupt(self, address: str, provider_ref: str | None) -> bool:
        assert provider_ref is not None
        self.fake.store.faults.corrupt_message_ids.add(provider_ref)
        return True


def form_post_fields(page: str) -> dict[str, str]:
    """The hidden fields of a response_mode=form_post page (what the browser would POST)."""
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"/>', page)
    return {html.unescape(k): html.unescape(v) for k, v in fields}


def graph_sign_in(fake: Any, address: str) -> dict[str, Any]:
    """Connect `address` through the real MSAL auth-code flow against the fake."""
    import requests

    from worker.sync import graph_oauth

    fake.store.consenting_user = address
    try:
        url, flow = graph_oauth.authorization_url(
            "https://sightline.test/connect/graph/callback", "s1"
        )
        answer = requests.get(url, allow_redirects=False, timeout=10)
        params = form_post_fields(answer.text)
        connected, credentials = graph_oauth.exchange_code(flow, params)
    finally:
        fake.store.consenting_user = None
    assert connected == address
    return credentials


class GraphHarness:
    kind = "graph"
    has_threads = True

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def new_address(self) -> str:
        address = unique_address("seller.test", "rep")
        self.fake.add_user(address)
        return address

    def credentials(self, address: str) -> dict[str, Any]:
        return graph_sign_in(self.fake, address)

    def deliver(self, address: str, raw: bytes) -> str | None:
        return str(self.fake.deliver(address, raw).id)

    def deliver_threaded(self, address: str, raw: bytes, thread_with: str) -> None:
        self.fake.deliver(address, raw, thread_with=thread_with)

    def file_into(self, address: str, raw: bytes, folder: str) -> bool:
        self.fake.file_into(address, raw, folder)
        return True

    def sent_copies(self, address: str) -> list[StoredCopy]:
        return [
            StoredCopy(m.internet_message_id, m.conversation_id, m.raw)
            for m in self.fake.messages(address, "sentitems")
        ]

    def revoke(self, address: str, mailbox_id: int) -> None:
        self.fake.revoke_user(address)

    def expire_cursor(self, address: str, mailbox_id: int) -> None:
        self.fake.expire_delta(address)

    def throttle(self, address: str, calls: int) -> bool:
        self.fake.throttle(address, calls)
        return True

    def corrupt(self, address: str, provider_ref: str | None) -> bool:
        assert provider_ref is not None
        self.fake.corrupt(provider_ref)
        return True


class ExchangeHarness:
    kind = "exchange"
    has_threads = True

    def __init__(self, fake: Any, auth: str = "ntlm") -> None:
        self.fake = fake
        self.auth = auth

    def new_address(self) -> str:
        address = unique_address("seller.test", "rep")
        self.fake.add_mailbox(address)
        return address

    def credentials(self, address: str) -> dict[str, Any]:
        creds: dict[str, Any] = self.fake.credentials(address, self.auth)
        return creds

    def deliver(self, address: str, raw: bytes) -> str | None:
        return str(self.fake.deliver(address, raw).id)

    def deliver_threaded(self, address: str, raw: bytes, thread_with: str) -> None:
        self.fake.deliver(address, raw, thread_with=thread_with)

    def file_into(self, address: str, raw: bytes, folder: str) -> bool:
        self.fake.file_into(address, raw, folder)
        return True

    def sent_copies(self, address: str) -> list[StoredCopy]:
        return [
            StoredCopy(i.internet_message_id, i.conversation_id, i.raw)
            for i in self.fake.items(address, "sentitems")
        ]

    def revoke(self, address: str, mailbox_id: int) -> None:
        self.fake.change_password(address)

    def expire_cursor(self, address: str, mailbox_id: int) -> None:
        self.fake.invalidate_sync_states(address)

    def throttle(self, address: str, calls: int) -> bool:
        self.fake.busy(address, calls)
        return True

    def corrupt(self, address: str, provider_ref: str | None) -> bool:
        assert provider_ref is not None
        self.fake.corrupt(provider_ref)
        return True


def run_jobs(*queue_names: str) -> int:
    """Run what is queued, as the processes would, until nothing is left. Returns what ran.

    RQ jobs with RQ's own in-process worker (as `worker` would); on the sync queue,
    the mailboxes that want a sync as the `sync` process would
    (`worker.sync.drain.drain_waiting`). A job may ask for a sync and a sync for a
    job: rounds go on until both are empty.
    """
    from rq import Queue, SimpleWorker

    from config import queues
    from core.redis import get_redis
    from worker.sync.drain import drain_waiting

    names = queue_names or (queues.SYNC, queues.DEFAULT)
    redis = get_redis()
    ran = 0
    while True:
        pending = sum(len(Queue(n, connection=redis)) for n in names)
        if pending:
            worker = SimpleWorker([Queue(n, connection=redis) for n in names], connection=redis)
            worker.work(burst=True, with_scheduler=False)
        drained = drain_waiting() if queues.SYNC in names else 0
        if not pending and not drained:
            return ran
        ran += pending + drained


def queued(queue_name: str, function: str) -> list[tuple[Any, ...]]:
    """The argument tuples of the jobs of `function` waiting on `queue_name`.

    On the sync queue, a mailbox that wants a sync (`worker.sync.wanted`) counts
    as a waiting `SYNC_JOB` for it: that is what a sync job was.
    """
    from rq import Queue

    from config import queues
    from core.redis import get_redis
    from worker.sync import wanted
    from worker.sync.engine import SYNC_JOB

    queue = Queue(queue_name, connection=get_redis())
    jobs = [tuple(j.args) for j in queue.get_jobs() if j.func_name == function]
    if queue_name == queues.SYNC and function == SYNC_JOB:
        jobs += [(mailbox_id,) for mailbox_id in wanted.waiting()]
    return jobs


def forget_queued_syncs() -> None:
    """Drop every waiting sync request (as if a sync had just taken them)."""
    from core.redis import get_redis
    from worker.sync import wanted

    get_redis().delete(wanted.WANTED_KEY, wanted.STREAM_KEY)
