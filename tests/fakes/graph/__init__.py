"""A fake Microsoft 365 (identity platform + Graph mail) for MSAL and requests.

``FakeGraph`` serves `tests.fakes.graph.app` over TLS (MSAL accepts only an https
authority). Point MSAL at ``fake.authority`` (with ``instance_discovery=False``)
and Graph calls at ``fake.graph_endpoint``.

Test-side operations: ``add_user``, ``deliver`` (a message arrives in Inbox and
subscriptions are notified), ``file_into`` (a rule files it in another folder:
subscriptions on ``me/messages`` hear of it, those on Inbox do not),
``consenting_user`` (who signs in at the consent screen), ``revoke_user``,
``expire_delta``, ``throttle``, ``corrupt``, ``subscriptions``, ``notifications``
(what was POSTed to notification URLs).
Change notifications are POSTed by background threads (``notify_threads``), like
Graph does, through ``transport`` (requests by default, one kept-alive connection
per delivery thread; tests may route them to a Flask test client). A notification
is posted once: its status is recorded, a refused one is not retried. ``paused``
holds deliveries (they wait in the queue) while set.

For benches that need thousands of connected mailboxes without signing each in:
``grant`` (an MSAL token cache with live tokens, as a sign-in leaves it),
``subscribe`` (a live subscription, as if validated when it was made),
``delta_link`` and ``folder_id`` (a cursor at the mailbox's current state),
``delta_rounds`` (delta rounds started per folder) and ``delivered`` (2xx answers).
"""

from __future__ import annotations

import http.client
import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import requests

from tests.fakes.httpfake import FakeHttpServer, post_kept_alive

from .app import GraphApp, delta_token
from .store import MAX_SUBSCRIPTION_MINUTES, GraphMessage, GraphStore, GraphUser, Subscription

SCOPES = ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"]
# What Sightline's connect flow asks for (worker.sync.graph_api.SCOPES): a granted
# cache holds its access token for exactly these.
GRANTED_SCOPES = [*SCOPES, "https://graph.microsoft.com/User.Read"]
Transport = Callable[[str, dict[str, str], bytes], tuple[int, str]]
_MAILBOX_RESOURCE = re.compile(r"^(me|users/[^/]+)/messages$", re.IGNORECASE)
_FOLDER_RESOURCE = re.compile(
    r"^(?:me|users/[^/]+)/mailFolders(?:\('([^']+)'\)|/([^/]+))/messages$", re.IGNORECASE
)


def _requests_transport(url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    answer = requests.post(url, data=body, headers=headers, timeout=10)
    return answer.status_code, answer.text


def _kept_alive_transport(url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """One notification, on the delivery thread's kept-alive connection."""
    status, answer = post_kept_alive(url, headers, body, timeout=10)
    return status, answer.decode("utf-8", "replace")


@dataclass
class Notification:
    subscription_id: str
    url: str
    payload: dict[str, Any]
    queued_at: float
    status: int | None = None
    delivered_at: float | None = None


class FakeGraph:
    client_id = "5d3e2c1a-0b9f-4e8d-a7c6-1f2e3d4c5b6a"
    client_secret = "fake~graph~secret"
    tenant = "common"

    def __init__(self, *, notify_threads: int = 1) -> None:
        self.store = GraphStore()
        self.transport: Transport = _requests_transport
        self.app = GraphApp(self.store, lambda: self.url, self._transport)
        self.server = FakeHttpServer(self.app, name="fake-graph")
        self.url = self.server.url
        self.notifications: list[Notification] = []
        self.paused = threading.Event()  # set: notifications wait (the endpoint is "down")
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._stop = threading.Event()
        self._delivered = 0
        self._delivered_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._deliver_loop, name=f"fake-graph-notify-{n}", daemon=True)
            for n in range(notify_threads)
        ]
        self.store.on_new_message = self._notify_new
        self.reset()

    def _transport(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        return self.transport(url, headers, body)

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> FakeGraph:
        self.server.start()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.server.stop()

    def __enter__(self) -> FakeGraph:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        store = self.store
        with store.lock:
            store.users.clear()
            store.codes.clear()
            store.refresh_tokens.clear()
            store.access_tokens.clear()
            store.subscriptions.clear()
            store.clients = {self.client_id: self.client_secret}
            store.strict_rotation = True
            store.consenting_user = None
            store.corrupt_ids.clear()
            store.message_id_policy = "keep"
        self.app.folders.clear()
        self.app.delta_rounds.clear()
        self.notifications.clear()
        self.paused.clear()
        with self._delivered_lock:
            self._delivered = 0
        self.transport = _requests_transport
        self.server.calls.clear()

    # -- endpoints ---------------------------------------------------------------------

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant}"

    @property
    def graph_endpoint(self) -> str:
        return f"{self.url}/v1.0"

    def environment(self) -> dict[str, str]:
        return {
            "MICROSOFT_CLIENT_ID": self.client_id,
            "MICROSOFT_CLIENT_SECRET": self.client_secret,
            "MICROSOFT_AUTHORITY": self.authority,
            "MICROSOFT_GRAPH_ENDPOINT": self.graph_endpoint,
        }

    # -- mailboxes ---------------------------------------------------------------------

    def add_user(self, email: str) -> GraphUser:
        return self.store.add_user(email)

    def deliver(self, email: str, raw: bytes, *, thread_with: str | None = None) -> GraphMessage:
        return self.store.add_message(email, raw, "inbox", thread_with=thread_with)

    def file_into(self, email: str, raw: bytes, folder: str) -> GraphMessage:
        """A rule files `raw` in `folder` ("Customers/Acme": a path of display names,
        made where missing; "Junk Email" is the well-known folder of that name)."""
        return self.store.add_message(email, raw, self.folder_key(email, folder))

    def folder_key(self, email: str, path: str) -> str:
        """The key the messages of the folder at `path` carry (made where missing)."""
        user = self.store.user(email)
        parent: str | None = None
        for name in path.split("/"):
            parent = self.app.folders.ensure(user, name, parent)
        assert parent is not None
        return parent

    def remove_folder(self, email: str, path: str) -> None:
        """The user deletes the folder at `path` for good, with its subfolders and mail."""
        user = self.store.user(email)
        removed = self.app.folders.remove(user, self.folder_key(email, path))
        with self.store.lock:
            for key in [k for k, m in user.messages.items() if m.folder in removed]:
                del user.messages[key]

    def messages(self, email: str, folder: str | None = None) -> list[GraphMessage]:
        user = self.store.user(email)
        with self.store.lock:
            found = list(user.messages.values())
        return [m for m in found if folder is None or m.folder == folder]

    def grant(self, email: str) -> dict[str, Any]:
        """Credentials as Sightline's connect flow stores them (worker.sync.graph_oauth):
        an MSAL token cache holding a live access token, a refresh token and the account,
        as MSAL itself fills it from the token endpoint's answer, with no sign-in made."""
        import msal

        self.add_user(email)
        response = self.app.token_response(
            self.tenant, email, self.client_id, [*GRANTED_SCOPES, "offline_access"], None
        )
        cache = msal.SerializableTokenCache()
        cache.add(
            {
                "client_id": self.client_id,
                "scope": response["scope"].split(),
                "token_endpoint": f"{self.authority}/oauth2/v2.0/token",
                "environment": urlparse(self.url).hostname,
                "grant_type": "authorization_code",
                "response": response,
            }
        )
        user = self.store.user(email)
        return {
            "token_cache": cache.serialize(),
            "home_account_id": f"{user.oid}.{self.store.tenant_id}",
            "username": email.lower(),
        }

    def subscribe(
        self, email: str, notification_url: str, client_state: str, resource: str = "me/messages"
    ) -> Subscription:
        """A live `created` subscription, as if made (and validated) a moment ago."""
        subscription = Subscription(
            id=str(uuid.uuid4()),
            email=self.add_user(email).email,
            resource=resource,
            change_type="created",
            notification_url=notification_url,
            client_state=client_state,
            expiration=datetime.now(UTC) + timedelta(minutes=MAX_SUBSCRIPTION_MINUTES - 1),
            lifecycle_url=notification_url,
        )
        with self.store.lock:
            self.store.subscriptions[subscription.id] = subscription
        return subscription

    def folder_id(self, email: str, key: str) -> str:
        """The id Graph shows for the folder with this key (a well-known name, or an id)."""
        return self.app.folders.folders(self.store.user(email))[key].id

    def delta_link(self, email: str, key: str, select: str | None, expand: str | None) -> str:
        """The deltaLink a delta round on this folder ($select, $expand) would end with now."""
        user = self.store.user(email)
        with self.store.lock:
            seq = user.seq
        state = {"u": user.oid, "f": key, "sel": select, "exp": expand, "s": seq}
        base = f"{self.graph_endpoint}/me/mailFolders/{key}/messages/delta"  # as the app links
        return f"{base}?$deltatoken={delta_token(state)}"

    def delta_rounds(self, key: str = "inbox") -> int:
        """Delta rounds started on folders with this key, over every mailbox."""
        with self.store.lock:
            return self.app.delta_rounds.get(key, 0)

    def revoke_user(self, email: str) -> None:
        self.store.revoke_user(email)

    def expire_access_tokens(self, email: str | None = None) -> None:
        self.store.expire_access_tokens(email)

    def expire_delta(self, email: str) -> None:
        self.store.expire_delta(email)

    def throttle(self, email: str, calls: int = 1, retry_after: int = 3) -> None:
        user = self.store.user(email)
        with self.store.lock:
            user.throttle_calls = calls
            user.retry_after = retry_after

    def exceed_submission_quota(self, email: str, over: bool = True) -> None:
        """Sends from `email` are taken (202), then bounce back with Exchange's quota NDR."""
        user = self.store.user(email)
        with self.store.lock:
            user.over_submission_quota = over

    def corrupt(self, message_id: str) -> None:
        self.store.corrupt_ids.add(message_id)

    def subscriptions(self, email: str | None = None) -> list[Subscription]:
        with self.store.lock:
            if email is not None:
                return self.store.subscriptions.of(email)
            return list(self.store.subscriptions.values())

    @property
    def calls(self) -> Any:
        return self.server.calls

    # -- change notifications ----------------------------------------------------------

    def _notify_new(self, user: GraphUser, message: GraphMessage) -> None:
        now = datetime.now(UTC)
        for subscription in self.subscriptions(user.email):
            if subscription.expiration <= now or "created" not in subscription.change_type:
                continue
            if not self._covers(user, subscription.resource, message.folder):
                continue
            resource = f"Users/{user.oid}/Messages/{message.id}"
            payload = {
                "value": [
                    {
                        "subscriptionId": subscription.id,
                        "subscriptionExpirationDateTime": subscription.expiration.strftime(
                            "%Y-%m-%dT%H:%M:%S.0000000+00:00"
                        ),
                        "changeType": "created",
                        "resource": resource,
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Message",
                            "@odata.id": resource,
                            "@odata.etag": f'W/"{message.change_key}"',
                            "id": message.id,
                        },
                        "clientState": subscription.client_state,
                        "tenantId": self.store.tenant_id,
                    }
                ]
            }
            note = Notification(
                subscription.id, subscription.notification_url, payload, time.monotonic()
            )
            self.notifications.append(note)
            self._queue.put(note)

    def _covers(self, user: GraphUser, resource: str, folder: str) -> bool:
        """Whether a subscription on `resource` hears of a message created in `folder`:
        ``me/messages`` (or ``users/{id}/messages``) every folder, ``me/mailFolders('x')/
        messages`` folder x only."""
        path = resource.strip("/")
        match = _FOLDER_RESOURCE.match(path)
        if match is None:
            return bool(_MAILBOX_RESOURCE.match(path))
        named = match.group(1) or match.group(2) or ""
        return self.app.folders.resolve(user, named) == folder

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            try:
                note = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            send = self.transport
            if send is _requests_transport:
                send = _kept_alive_transport
            try:
                status, _ = send(
                    note.url,
                    {"Content-Type": "application/json"},
                    json.dumps(note.payload).encode(),
                )
            except (requests.RequestException, OSError, http.client.HTTPException):
                status = 0
            note.status = status
            if 200 <= status < 300:
                note.delivered_at = time.monotonic()
                with self._delivered_lock:
                    self._delivered += 1

    def delivered(self) -> int:
        """Notifications answered 2xx so far."""
        with self._delivered_lock:
            return self._delivered

    def wait_notified(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n.status is not None for n in self.notifications):
                return True
            time.sleep(0.02)
        return False


__all__ = ["SCOPES", "FakeGraph"]
