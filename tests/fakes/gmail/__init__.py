"""A fake Gmail (REST API, batch, Google OAuth, Pub/Sub push) for the real client libraries.

``FakeGmail`` serves `tests.fakes.gmail.app` over TLS on 127.0.0.1. The real
google-api-python-client is pointed at it with
``build('gmail', 'v1', static_discovery=True, client_options={'api_endpoint': fake.api_endpoint})``
and google-auth / google-auth-oauthlib with ``fake.token_uri`` / ``fake.auth_uri``.

Test-side operations: ``add_user``, ``deliver`` (a message arrives in INBOX),
``grant`` (tokens as if the user had connected), ``revoke_user``,
``expire_history``, ``rate_limit``, ``subscribe_push`` (where Pub/Sub pushes),
``calls`` (every answer with its size and method label) and ``units_used``.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.httpfake import FakeHttpServer

from .app import GmailApp
from .pubsub import PUSH_SERVICE_ACCOUNT, PubSub, PushSubscription, SigningKey
from .store import GmailStore, GmailUser, HistoryRecord, StoredMessage

SCOPES = [
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
]


class FakeGmail:
    client_id = "1234567890-sightline.apps.googleusercontent.com"
    client_secret = "GOCSPX-fake-secret"
    topic = "projects/sightline-test/topics/gmail"

    def __init__(self, *, port: int = 0, push_threads: int = 1) -> None:
        self.store = GmailStore()
        self.key = SigningKey()
        self.pubsub = PubSub(self.key, threads=push_threads)
        self.store.on_change = self._changed
        self.app = GmailApp(self.store, self.pubsub, {self.key.kid: self.key.cert_pem})
        self.server = FakeHttpServer(self.app, name="fake-gmail", port=port)
        self.url = self.server.url
        self.reset()

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> FakeGmail:
        self.server.start()
        return self

    def stop(self) -> None:
        self.pubsub.stop()
        self.server.stop()

    def __enter__(self) -> FakeGmail:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        store = self.store
        with store.lock:
            store.users.clear()
            store.access_tokens.clear()
            store.message_tokens.clear()
            store.refresh_tokens.clear()
            store.codes.clear()
            store.clients = {self.client_id: self.client_secret}
            store.topics = {self.topic}
            store.faults.clear()
            store.message_id_policy = "keep"
            store.consenting_user = None
        self.pubsub.subscriptions.clear()
        self.pubsub.published.clear()
        self.pubsub.failures_to_inject = 0
        self.pubsub.paused.clear()
        self.server.calls.clear()

    # -- endpoints ---------------------------------------------------------------------

    @property
    def api_endpoint(self) -> str:
        return self.url + "/"

    @property
    def token_uri(self) -> str:
        return self.url + "/token"

    @property
    def auth_uri(self) -> str:
        return self.url + "/o/oauth2/auth"

    @property
    def revoke_uri(self) -> str:
        return self.url + "/revoke"

    @property
    def certs_url(self) -> str:
        return self.url + "/oauth2/v1/certs"

    def environment(self) -> dict[str, str]:
        """The settings a deployment would set to use this 'Google'."""
        return {
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
            "GOOGLE_AUTH_URI": self.auth_uri,
            "GOOGLE_TOKEN_URI": self.token_uri,
            "GOOGLE_REVOKE_URI": self.revoke_uri,
            "GMAIL_API_ENDPOINT": self.api_endpoint,
            "GMAIL_PUBSUB_TOPIC": self.topic,
            "GMAIL_PUSH_CERTS_URL": self.certs_url,
            "GMAIL_PUSH_SERVICE_ACCOUNT": PUSH_SERVICE_ACCOUNT,
        }

    # -- mailboxes ---------------------------------------------------------------------

    def add_user(self, email: str) -> GmailUser:
        return self.store.add_user(email)

    def deliver(self, email: str, raw: bytes) -> StoredMessage:
        return self.store.deliver(email, raw)

    def add_message(
        self, email: str, raw: bytes, labels: list[str], *, thread_with: str | None = None
    ) -> StoredMessage:
        return self.store.add_message(email, raw, labels, thread_with=thread_with)

    def messages(self, email: str, label: str | None = None) -> list[StoredMessage]:
        user = self.store.user(email)
        with self.store.lock:
            found = list(user.messages.values())
        return [m for m in found if label is None or label in m.labels]

    def grant(self, email: str, scopes: list[str] | None = None) -> dict[str, Any]:
        """Issue tokens as the OAuth connect flow would; return them as credentials JSON."""
        self.add_user(email)
        granted = scopes or SCOPES
        return {
            "refresh_token": self.store.issue_refresh_token(email, self.client_id, granted),
            "access_token": self.store.issue_access_token(email, self.client_id, granted),
            "expires_at": self.store.clock() + 3599,
            "scopes": granted,
        }

    def revoke_user(self, email: str) -> None:
        self.store.revoke_user(email)

    def expire_access_tokens(self, email: str | None = None) -> None:
        self.store.expire_access_tokens(email)

    def expire_history(self, email: str) -> None:
        self.store.expire_history(email)

    def rate_limit(
        self, email: str, calls: int = 1, status: int = 429, reason: str = "rateLimitExceeded"
    ) -> None:
        """The next `calls` API calls of this user answer `status` `reason` (Gmail uses
        429 rateLimitExceeded, and 403 userRateLimitExceeded or rateLimitExceeded)."""
        self.store.faults.rate_limit_calls[email.lower()] = calls
        self.store.faults.rate_limit_answer[email.lower()] = (status, reason)

    def units_used(self, email: str) -> int:
        return self.store.user(email).units_used

    @property
    def calls(self) -> Any:
        return self.server.calls

    # -- push --------------------------------------------------------------------------

    def subscribe_push(self, endpoint: str, *, audience: str | None = None) -> PushSubscription:
        return self.pubsub.subscribe(self.topic, endpoint, audience=audience)

    def _changed(self, user: GmailUser, record: HistoryRecord) -> None:
        watch = user.watch
        if watch is None or watch.expiration_ms <= self.store.clock() * 1000:
            return
        labels = {label for added in record.labels_at_add.values() for label in added}
        wanted = set(watch.label_ids)
        if wanted and watch.behavior.lower() == "include" and not wanted & labels:
            return
        if wanted and watch.behavior.lower() == "exclude" and wanted & labels:
            return
        self.pubsub.publish(watch.topic, user.email, record.id)


__all__ = ["SCOPES", "FakeGmail"]
