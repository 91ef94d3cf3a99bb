"""Cloud Pub/Sub push, as Gmail's `users.watch` uses it.

A watched mailbox's change is published to its topic; a push subscription
POSTs the envelope Pub/Sub documents to the push endpoint::

    {"message": {"data": base64(JSON {"emailAddress", "historyId"}),
                 "messageId", "message_id", "publishTime", "publish_time",
                 "attributes": {}},
     "subscription": "projects/<p>/subscriptions/<s>"}

with `Authorization: Bearer <OIDC token>` when the subscription has push
authentication: an RS256 JWT from Google (`iss` https://accounts.google.com,
`aud` the configured audience, `email` the service account, `email_verified`),
whose key is published at `/oauth2/v1/certs` as `{kid: PEM certificate}`.
A non-2xx answer is retried with exponential back-off, as Pub/Sub does (the
minimum back-off is configurable so tests need not wait 10 s).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.fakes.httpfake import post_kept_alive

log = logging.getLogger(__name__)

Deliver = Callable[[str, dict[str, str], bytes], int]
# The account a push subscription authenticates as (Google signs its tokens for it).
PUSH_SERVICE_ACCOUNT = "gmail-push@sightline-test.iam.gserviceaccount.com"


@dataclass
class PushSubscription:
    name: str  # projects/<p>/subscriptions/<s>
    topic: str
    endpoint: str
    audience: str | None = None  # None: no push authentication
    service_account: str = PUSH_SERVICE_ACCOUNT


@dataclass
class Published:
    subscription: str
    email: str
    history_id: int
    published_at: float
    delivered_at: float | None = None
    attempts: int = 0
    status: int | None = None


@dataclass
class _Job:
    subscription: PushSubscription
    record: Published
    body: bytes
    due: float = field(default_factory=time.monotonic)


class SigningKey:
    """Google's OIDC signing key for push tokens, with its certificate for /oauth2/v1/certs."""

    def __init__(self) -> None:
        self.kid = secrets.token_hex(20)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")]
        )
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=14))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._private_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._private_pem, algorithm="RS256", headers={"kid": self.kid})


def oidc_token(
    key: SigningKey,
    audience: str,
    service_account: str,
    *,
    issuer: str = "https://accounts.google.com",
    lifetime: int = 3600,
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    return key.sign(
        {
            "aud": audience,
            "azp": "1" + str(secrets.randbelow(10**20)).zfill(20),
            "email": service_account,
            "email_verified": True,
            "exp": issued + lifetime,
            "iat": issued,
            "iss": issuer,
            "sub": "1" + str(secrets.randbelow(10**20)).zfill(20),
        }
    )


def _post(url: str, headers: dict[str, str], body: bytes) -> int:
    """One push, on the delivery thread's kept-alive connection."""
    status, _ = post_kept_alive(url, headers, body, timeout=30)
    return status


class PubSub:
    """Topics, push subscriptions and a delivery thread."""

    def __init__(self, key: SigningKey, project: str = "sightline-test", threads: int = 1) -> None:
        self.key = key
        self.project = project
        self.subscriptions: dict[str, PushSubscription] = {}
        self.published: list[Published] = []
        self.deliver: Deliver = _post
        self.min_backoff = 0.2
        self.max_backoff = 600.0
        self.paused = threading.Event()  # set: hold deliveries (the endpoint is "down")
        self.failures_to_inject = 0
        self._tokens: dict[str, tuple[str, float]] = {}
        self._queue: queue.PriorityQueue[tuple[float, int, _Job]] = queue.PriorityQueue()
        self._seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"fake-pubsub-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def topic_name(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscribe(
        self, topic: str, endpoint: str, *, audience: str | None = None, name: str = "gmail-push"
    ) -> PushSubscription:
        subscription = PushSubscription(
            name=f"projects/{self.project}/subscriptions/{name}",
            topic=topic,
            endpoint=endpoint,
            audience=audience,
        )
        self.subscriptions[subscription.name] = subscription
        return subscription

    def envelope(self, email: str, history_id: int, subscription: str) -> bytes:
        data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
        message_id = str(10**15 + secrets.randbelow(10**15))
        published = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return json.dumps(
            {
                "message": {
                    "attributes": {},
                    "data": base64.b64encode(data).decode(),
                    "messageId": message_id,
                    "message_id": message_id,
                    "publishTime": published,
                    "publish_time": published,
                },
                "subscription": subscription,
            }
        ).encode()

    def headers_for(self, subscription: PushSubscription) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "APIs-Google"}
        if subscription.audience is not None:
            # Google reuses a push token for most of its hour, as does this fake.
            key = f"{subscription.name}|{subscription.audience}|{subscription.service_account}"
            cached = self._tokens.get(key)
            if cached is None or cached[1] < time.time() + 300:
                token = oidc_token(self.key, subscription.audience, subscription.service_account)
                cached = (token, time.time() + 3600)
                self._tokens[key] = cached
            headers["Authorization"] = f"Bearer {cached[0]}"
        return headers

    def publish(self, topic: str, email: str, history_id: int) -> None:
        for subscription in list(self.subscriptions.values()):
            if subscription.topic != topic:
                continue
            record = Published(subscription.name, email, history_id, time.monotonic())
            with self._lock:
                self.published.append(record)
                self._seq += 1
                seq = self._seq
            job = _Job(subscription, record, self.envelope(email, history_id, subscription.name))
            self._queue.put((job.due, seq, job))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                due, seq, job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait > 0 or self.paused.is_set():
                self._queue.put((max(due, time.monotonic() + 0.05), seq, job))
                time.sleep(min(max(wait, 0.01), 0.05))
                continue
            self._attempt(job, seq)

    def _attempt(self, job: _Job, seq: int) -> None:
        job.record.attempts += 1
        status = 0
        with self._lock:
            failing = self.failures_to_inject > 0
            if failing:
                self.failures_to_inject -= 1
        if not failing:
            try:
                status = self.deliver(
                    job.subscription.endpoint, self.headers_for(job.subscription), job.body
                )
            except (OSError, http.client.HTTPException) as exc:
                log.debug(
                    "fake pubsub push failed endpoint=%s error=%s", job.subscription.endpoint, exc
                )
        job.record.status = status
        if 200 <= status < 300 or status == 102:
            job.record.delivered_at = time.monotonic()
            return
        backoff = min(self.max_backoff, self.min_backoff * 2 ** (job.record.attempts - 1))
        job.due = time.monotonic() + backoff
        self._queue.put((job.due, seq, job))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every published message was delivered (acknowledged)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(p.delivered_at is not None for p in self.published):
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
