"""Gmail push: only our push subscription's account gets in, and made-up keys cost one fetch.

Anyone can have Google sign an OIDC token for any audience from their own
project, so a token is only ours if it also names the service account our
Pub/Sub push subscription authenticates as (GMAIL_PUSH_SERVICE_ACCOUNT, with a
verified email). Production refuses to start with push set up and no account.

Google's certificates come from the fake Google (tests.fakes.gmail, the real
wire format: `{kid: PEM}` with Cache-Control max-age), whose server counts the
fetches: a hundred tokens naming key ids Google never published cost at most
one fetch, and are all refused.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from config import ConfigError, Settings, get_settings, load_settings, queues
from tests.asgi_client import AsgiClient
from tests.fakes.gmail import FakeGmail
from tests.fakes.gmail.pubsub import PUSH_SERVICE_ACCOUNT, SigningKey, oidc_token
from tests.integration.provider_harness import GmailHarness, queued
from tests.integration.test_provider_contract import make_seller
from tests.unit.test_settings import production
from worker.sync.engine import SYNC_JOB
from worker.sync.gmail_push import PushTokenError, forget_push_certs, verify_push_token
from worker.sync.push import renew_push_job

pytestmark = pytest.mark.integration

AUDIENCE = "http://localhost:5000/webhooks/gmail"


def test_production_with_push_refuses_to_start_without_the_service_account() -> None:
    env = production(GMAIL_PUBSUB_TOPIC="projects/acme/topics/gmail")
    with pytest.raises(ConfigError, match=r"^GMAIL_PUSH_SERVICE_ACCOUNT: required"):
        load_settings(env)
    with pytest.raises(ConfigError, match=r"^GMAIL_PUSH_SERVICE_ACCOUNT: expected"):
        load_settings({**env, "GMAIL_PUSH_SERVICE_ACCOUNT": "not an account"})
    account = "push@acme.iam.gserviceaccount.com"
    settings = load_settings({**env, "GMAIL_PUSH_SERVICE_ACCOUNT": account})
    assert settings.providers.gmail_push_service_account == account
    assert load_settings(production()).providers.gmail_push_service_account is None  # no push


def test_development_without_the_account_starts_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="config.settings"):
        settings = load_settings({"GMAIL_PUBSUB_TOPIC": "projects/acme/topics/gmail"})
    assert settings.providers.gmail_push_service_account is None
    assert "gmail_push_service_account_unset" in caplog.text


@pytest.fixture
def pushing(env: Settings, fake_gmail: FakeGmail) -> Iterator[tuple[FakeGmail, bytes, int]]:
    """A Gmail mailbox watched through the fake, and a push body for it."""
    forget_push_certs()
    seller = make_seller(GmailHarness(fake_gmail))
    renew_push_job(seller.mailbox_id)
    body = fake_gmail.pubsub.envelope(seller.address, 10**12, "projects/x/subscriptions/y")
    yield fake_gmail, body, seller.mailbox_id
    forget_push_certs()


def push(asgi: AsgiClient, body: bytes, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return asgi.post("/webhooks/gmail", body, headers=headers).status_code


def certs_fetches(fake: FakeGmail) -> int:
    return fake.server.calls.count(lambda c: c.label == "certs")


def test_only_a_verified_token_of_our_push_account_gets_in(
    pushing: tuple[FakeGmail, bytes, int], asgi: AsgiClient
) -> None:
    fake, body, mailbox_id = pushing
    someone = oidc_token(fake.key, AUDIENCE, "attacker@their-project.iam.gserviceaccount.com")
    assert push(asgi, body, someone) == 403
    unverified = fake.key.sign(
        {**_claims(PUSH_SERVICE_ACCOUNT), "email_verified": False}  # Google-signed, not verified
    )
    assert push(asgi, body, unverified) == 403
    no_email = fake.key.sign(
        {k: v for k, v in _claims(PUSH_SERVICE_ACCOUNT).items() if k != "email"}
    )
    assert push(asgi, body, no_email) == 403
    assert queued(queues.SYNC, SYNC_JOB) == []
    assert push(asgi, body, oidc_token(fake.key, AUDIENCE, PUSH_SERVICE_ACCOUNT)) == 204
    assert queued(queues.SYNC, SYNC_JOB) == [(mailbox_id,)]


def _claims(account: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "aud": AUDIENCE,
        "email": account,
        "email_verified": True,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "1" + "2" * 20,
    }


def test_unknown_key_ids_fetch_googles_certificates_at_most_once(
    pushing: tuple[FakeGmail, bytes, int], asgi: AsgiClient
) -> None:
    fake, body, _ = pushing
    before = certs_fetches(fake)
    impostor = SigningKey()  # a key Google never published
    for _ in range(100):
        impostor.kid = secrets.token_hex(20)
        token = oidc_token(impostor, AUDIENCE, PUSH_SERVICE_ACCOUNT)
        assert push(asgi, body, token) == 403
    assert certs_fetches(fake) - before == 1  # the first one fetched; the rest waited it out
    # The real key is in what that fetch brought, kept for its max-age (19800 s here).
    good = oidc_token(fake.key, AUDIENCE, PUSH_SERVICE_ACCOUNT)
    for _ in range(5):
        assert push(asgi, body, good) == 204
    assert certs_fetches(fake) - before == 1


def test_production_refuses_a_signed_push_when_no_account_is_set(
    pushing: tuple[FakeGmail, bytes, int], asgi: AsgiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings refuse this start; a process started another way still refuses the token."""
    fake, body, _ = pushing
    monkeypatch.delenv("GMAIL_PUSH_SERVICE_ACCOUNT")
    monkeypatch.delenv("GMAIL_PUBSUB_TOPIC")
    get_settings.cache_clear()
    good = oidc_token(fake.key, AUDIENCE, PUSH_SERVICE_ACCOUNT)
    assert push(asgi, body, good) == 204  # development: lenient, with a warning
    monkeypatch.setenv("SIGHTLINE_ENV", "production")  # the test's own database and Redis
    monkeypatch.setenv("PUBLIC_BASE_URL", "http://localhost:5000")
    get_settings.cache_clear()
    assert get_settings().is_production
    assert push(asgi, body, good) == 403


def test_a_verified_token_is_trusted_until_its_exp_and_no_other_token_rides_on_it(
    pushing: tuple[FakeGmail, bytes, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pub/Sub reuses a token for an hour: its RSA check runs once, and only it is remembered."""
    fake, _, _ = pushing
    lifetime = 3
    token = oidc_token(fake.key, AUDIENCE, PUSH_SERVICE_ACCOUNT, lifetime=lifetime)
    assert verify_push_token(token)["email"] == PUSH_SERVICE_ACCOUNT
    assert verify_push_token(token)["email"] == PUSH_SERVICE_ACCOUNT  # remembered
    head, payload, signature = token.split(".")
    tail = "A" * 6 if signature[-6:] != "A" * 6 else "B" * 6
    forged_signature = f"{head}.{payload}.{signature[:-6]}{tail}"
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other_payload = (
        base64.urlsafe_b64encode(json.dumps({**claims, "email": "someone@evil.test"}).encode())
        .decode()
        .rstrip("=")
    )
    forged_claims = f"{head}.{other_payload}.{signature}"
    impostor = SigningKey()
    impostor.kid = fake.key.kid  # Google's key id, someone else's key
    forged_key = oidc_token(impostor, AUDIENCE, PUSH_SERVICE_ACCOUNT)
    for forged in (forged_signature, forged_claims, forged_key, forged_key):  # twice: not kept
        with pytest.raises(PushTokenError):
            verify_push_token(forged)
    # The account checks run on every push, remembered token or not.
    monkeypatch.setenv("GMAIL_PUSH_SERVICE_ACCOUNT", "other@acme.iam.gserviceaccount.com")
    get_settings.cache_clear()
    with pytest.raises(PushTokenError, match="not 'other@"):
        verify_push_token(token)
    monkeypatch.setenv("GMAIL_PUSH_SERVICE_ACCOUNT", PUSH_SERVICE_ACCOUNT)
    get_settings.cache_clear()
    assert verify_push_token(token)["email"] == PUSH_SERVICE_ACCOUNT
    # google-auth compares whole seconds: a token is refused from exp + 1 on.
    time.sleep(max(0.0, claims["exp"] + 1.05 - time.time()))
    with pytest.raises(PushTokenError, match="Token expired"):
        verify_push_token(token)
