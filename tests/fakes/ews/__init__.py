"""A fake on-premises Exchange server (EWS SOAP) for exchangelib.

``FakeEws`` serves `tests.fakes.ews.app` at ``https://127.0.0.1:<port>/EWS/Exchange.asmx``.
Test-side operations: ``add_mailbox`` (address + password), ``deliver``,
``items``, ``change_password`` (credentials refused from now on),
``invalidate_sync_states``, ``busy`` (the next calls answer ErrorServerBusy
with BackOffMilliseconds), ``corrupt``, ``issue_token`` (OAuth bearer),
``close_streams`` / ``stream_seconds`` (how long GetStreamingEvents holds on),
``keepalive`` (how often, and in which server's shape, an idle stream is written to),
``stall_streams`` / ``resume_streams`` (streams held open with nothing written),
``hold_events`` (new mail waits, keep-alives go on),
``add_mailboxes`` and ``sync_state`` (many mailboxes already synced, for the scale
bench), ``live_streams`` / ``event_frames`` / ``sync_calls`` (streams open now,
frames that carried events, SyncFolderItems calls by folder).
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from tests.fakes.httpfake import FakeHttpServer

from .app import EwsApp
from .folders import DISPLAY
from .store import EwsItem, EwsMailbox, EwsStore

PASSWORD = "Exchange-Passw0rd!"
DOMAIN = "FAKECORP"


class FakeEws:
    def __init__(self) -> None:
        self.store = EwsStore()
        self.app = EwsApp(self.store)
        self.server = FakeHttpServer(self.app, name="fake-ews")
        self.url = self.server.url
        self._ntlm_dir = Path(tempfile.mkdtemp(prefix="fake-ews-ntlm-"))
        self.app.ntlm_users_file = str(self._ntlm_dir / "users")
        self.reset()

    @property
    def endpoint(self) -> str:
        return f"{self.url}/EWS/Exchange.asmx"

    def start(self) -> FakeEws:
        self.server.start()
        return self

    def stop(self) -> None:
        self.close_streams()
        self.server.stop()

    def __enter__(self) -> FakeEws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self.store.lock:
            self.store.mailboxes.clear()
            self.store.clear_subscriptions()
            self.store.bearer_tokens.clear()
            self.store.faults.clear()
            self.store.message_id_policy = "keep"
        self.app.stream_seconds = None
        self.app.subscribe_seconds = 0.0
        self.app.most_subscribing = 0
        self.keepalive(45.0)
        self.app.stalled.clear()
        self.app.held.clear()
        self.app.forget_connections()
        self.app.closing.clear()
        self._write_ntlm_users()
        self.server.calls.clear()

    def _write_ntlm_users(self) -> None:
        lines = [
            f"{DOMAIN}:{m.email.split('@')[0]}:{m.password}" for m in self.store.mailboxes.values()
        ]
        (self._ntlm_dir / "users").write_text("\n".join(lines) + "\n")

    def add_mailbox(self, email: str, password: str = PASSWORD) -> EwsMailbox:
        mailbox = self.store.add_mailbox(email, password)
        self._write_ntlm_users()
        return mailbox

    def add_mailboxes(self, emails: list[str], password: str = PASSWORD) -> None:
        """Many mailboxes at once (the scale bench's 10,000): the NTLM users file written once."""
        for email in emails:
            self.store.add_mailbox(email, password)
        self._write_ntlm_users()

    def sync_state(self, email: str, folder: str = "inbox") -> str:
        """The SyncState a client that has just synced `folder` holds (for a stored cursor)."""
        return self.store.sync_state(email, folder)

    def credentials(self, email: str, auth: str = "basic") -> dict[str, Any]:
        mailbox = self.store.mailbox(email)
        assert mailbox is not None
        if auth == "oauth":
            token = self.issue_token(email)
            return {"ews_url": self.endpoint, "auth": "oauth", "access_token": token}
        username = email if auth == "basic" else f"{DOMAIN}\\{email.split('@', maxsplit=1)[0]}"
        return {
            "ews_url": self.endpoint,
            "auth": auth,
            "username": username,
            "password": mailbox.password,
        }

    def issue_token(self, email: str) -> str:
        token = secrets.token_urlsafe(32)
        self.store.bearer_tokens[token] = email.lower()
        return token

    def deliver(self, email: str, raw: bytes, *, thread_with: str | None = None) -> EwsItem:
        return self.store.add_item(email, raw, "inbox", thread_with=thread_with)

    def file_into(self, email: str, raw: bytes, folder: str) -> EwsItem:
        """A rule files `raw` in `folder` ("Customers/Acme": display names, made where
        missing; "Junk Email" is the default folder of that name)."""
        return self.store.add_item(email, raw, self.folder_key(email, folder))

    def remove_folder(self, email: str, path: str) -> None:
        """The user deletes the folder at `path` (one they made) for good, with its
        subfolders and items: its id answers ErrorFolderNotFound from then on."""
        store = self.store
        with store.lock:
            mailbox = store.mailboxes[email.lower()]
            removed, pending = set(), [self.folder_key(email, path)]
            while pending:
                key = pending.pop()
                removed.add(key)
                pending += [k for k, parent in mailbox.folder_parents.items() if parent == key]
            for key in removed:
                for table in (mailbox.folder_ids, mailbox.folder_names, mailbox.folder_parents):
                    table.pop(key, None)
            for item_id in [i for i, item in mailbox.items.items() if item.folder in removed]:
                del mailbox.items[item_id]

    def folder_key(self, email: str, path: str) -> str:
        """The key the items of the folder at `path` carry (made where missing)."""
        parent = "msgfolderroot"
        for name in path.split("/"):
            default = [k for k, shown in DISPLAY.items() if shown.lower() == name.lower()]
            if parent == "msgfolderroot" and default:
                parent = default[0]
            else:
                parent = self.store.add_folder(email, name, parent)
        return parent

    def items(self, email: str, folder: str | None = None) -> list[EwsItem]:
        mailbox = self.store.mailbox(email)
        assert mailbox is not None
        with self.store.lock:
            found = list(mailbox.items.values())
        return [i for i in found if folder is None or i.folder == folder]

    def change_password(self, email: str) -> None:
        mailbox = self.store.mailbox(email)
        assert mailbox is not None
        mailbox.password = "changed-" + secrets.token_hex(4)
        with self.store.lock:
            for token, owner in list(self.store.bearer_tokens.items()):
                if owner == mailbox.email:
                    del self.store.bearer_tokens[token]
        self._write_ntlm_users()

    def invalidate_sync_states(self, email: str) -> None:
        self.store.invalidate_sync_states(email)

    def busy(self, email: str, calls: int = 1, back_off_ms: int = 1500) -> None:
        mailbox = self.store.mailbox(email)
        assert mailbox is not None
        mailbox.busy_calls = calls
        mailbox.back_off_ms = back_off_ms

    def fault(self, email: str, code: str, text: str, calls: int = 1) -> None:
        """The next `calls` EWS calls of this mailbox answer a SOAP fault `code` with `text`."""
        mailbox = self.store.mailbox(email)
        assert mailbox is not None
        with self.store.lock:
            mailbox.fault, mailbox.fault_calls = (code, text), calls

    def corrupt(self, item_id: str) -> None:
        self.store.faults.corrupt_ids.add(item_id)

    def close_streams(self) -> None:
        self.app.closing.set()
        self.app.wake_streams()

    def keepalive(self, seconds: float, style: str = "exchange") -> None:
        """Write to an idle stream every `seconds`, as Exchange ("exchange") or gromox does."""
        assert style in ("exchange", "gromox")
        self.app.keepalive_seconds = seconds
        self.app.keepalive_style = style
        self.app.wake_streams()  # a stream asleep until the old interval's end

    def stall_streams(self) -> None:
        """Open streams (and new ones) stay open with nothing written: a hung server."""
        self.app.stalled.set()

    def resume_streams(self) -> None:
        self.app.stalled.clear()

    def hold_events(self, held: bool) -> None:
        """Held: new mail waits on its subscription while keep-alives go on; released:
        what waited is written at once."""
        if held:
            self.app.held.set()
        else:
            self.app.held.clear()
            self.app.wake_streams()

    @property
    def live_streams(self) -> int:
        return self.app.live_streams

    @property
    def event_frames(self) -> int:
        return self.app.event_frames

    def sync_calls(self, folder: str = "inbox") -> int:
        return self.app.sync_calls.get(folder, 0)

    @property
    def calls(self) -> Any:
        return self.server.calls


__all__ = ["PASSWORD", "FakeEws"]
