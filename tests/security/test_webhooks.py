"""The push webhooks cost a forger nothing but our HMACs: bounded, checked before the database.

Graph's notification endpoint used to look up every element of `value` in the
database before anything was verified (≈ 400k queries for a 10 MB POST). Here a
forged batch is sent as it would be from outside, and the queries it causes are
counted on the real engine with SQLAlchemy's own event hook (observing, not
mocking): at most one, whatever the batch holds. Real notifications still
queue their sync (one per mailbox, however many notices name it), and the
validation handshake is unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from config import Settings, get_settings, queues
from core.crypto import encrypt_json
from core.db import get_engine, session_scope
from core.models import Mailbox, MailboxPush, PushKind, Team
from tests.asgi_client import AsgiClient
from tests.integration.provider_harness import queued
from web.webhooks import MAX_GMAIL_BODY, MAX_GRAPH_BODY, MAX_GRAPH_NOTIFICATIONS
from worker.sync.engine import SYNC_JOB
from worker.sync.push import RENEW_JOB, _mac, client_state, forget_legacy_client_states

pytestmark = pytest.mark.integration


@contextmanager
def counted_queries() -> Iterator[list[str]]:
    """Every statement the application's engine sends while the block runs."""
    statements: list[str] = []
    engine = get_engine()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def graph_mailbox(address: str, subscription: str) -> int:
    with session_scope() as session:
        team = Team(name=address)
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="graph", email=address, credentials_encrypted=encrypt_json({})
        )
        session.add(mailbox)
        session.flush()
        session.add(
            MailboxPush(
                mailbox_id=mailbox.id, kind=PushKind.GRAPH_SUBSCRIPTION, external_id=subscription
            )
        )
        return int(mailbox.id)


def notice(subscription: str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "subscriptionId": subscription,
        "subscriptionExpirationDateTime": "2026-12-12T00:00:00.0000000+00:00",
        "changeType": "created",
        "resource": "Users/x/Messages/y",
        "clientState": state,
        "tenantId": "00000000-0000-0000-0000-000000000000",
        **extra,
    }


def forged(count: int) -> list[Any]:
    """Every kind of junk a forger can put in `value`, `count` elements in all."""
    kinds: list[Any] = [
        lambda i: notice(f"sub-{i}", f"{i}.{'A' * 43}"),  # our format, wrong mac
        lambda i: notice(f"sub-{i}", "B" * 43),  # legacy shape, not ours
        lambda i: notice(f"sub-{i}", "guessed"),
        lambda i: notice(f"sub-{i}", ""),
        lambda i: {"subscriptionId": f"sub-{i}"},
        lambda i: notice("x" * 5000, "C" * 43),
        lambda i: notice(f"sub-{i}", "1." + "D" * 43, lifecycleEvent="subscriptionRemoved"),
        lambda i: [i],
        lambda i: None,
        lambda i: notice(i, i),
    ]
    return [kinds[i % len(kinds)](i) for i in range(count)]


@pytest.fixture(autouse=True)
def _fresh_legacy_table() -> Iterator[None]:
    forget_legacy_client_states()
    yield
    forget_legacy_client_states()


def test_a_forged_batch_costs_at_most_one_query_and_queues_nothing(
    env: Settings, asgi: AsgiClient
) -> None:
    graph_mailbox("rep@contoso.test", "sub-real")
    body = {"value": forged(MAX_GRAPH_NOTIFICATIONS)}
    started = time.monotonic()
    with counted_queries() as statements:
        answer = asgi.post("/webhooks/graph", json=body)
    elapsed = time.monotonic() - started
    assert answer.status_code == 403  # not one notification of ours
    assert len(statements) <= 1, statements  # the legacy table, built once
    assert queued(queues.SYNC, SYNC_JOB) == [] and queued(queues.DEFAULT, RENEW_JOB) == []
    # Again: the legacy table is fresh, so no query at all.
    with counted_queries() as statements:
        assert asgi.post("/webhooks/graph", json=body).status_code == 403
    assert statements == []
    # A safety budget, not a benchmark: a thousand forged notices answer well within
    # the 3 s Graph allows.
    assert elapsed < 3, elapsed


def test_too_many_notifications_or_too_big_a_body_is_refused_unread(
    env: Settings, asgi: AsgiClient
) -> None:
    with counted_queries() as statements:
        many = asgi.post("/webhooks/graph", json={"value": forged(MAX_GRAPH_NOTIFICATIONS + 1)})
        assert many.status_code == 413
        big = json.dumps({"value": ["x" * 1000] * (MAX_GRAPH_BODY // 1000 + 1)}).encode()
        assert asgi.post("/webhooks/graph", big).status_code == 413
        # Without a Content-Length (chunked):
        # refused while reading.
        streamed = asgi.post("/webhooks/graph", big, chunked=True)
        assert streamed.status_code == 413
        for junk in (b"not json", b"[]", b'{"value": {}}', b'{"value": []}', b"\xff\xfe"):
            assert asgi.post("/webhooks/graph", junk).status_code == 400
    assert statements == []


def test_real_notifications_still_sync_once_per_mailbox_with_one_query(
    env: Settings, asgi: AsgiClient
) -> None:
    dana = graph_mailbox("dana@contoso.test", "sub-dana")
    fox = graph_mailbox("fox@contoso.test", "sub-fox")
    real = [notice("sub-dana", client_state(dana))] * 400
    # Fox's state on Dana's subscription: a state of ours, on a subscription not its own.
    crossed = [notice("sub-dana", client_state(fox))]
    removed = [notice("sub-fox", client_state(fox), lifecycleEvent="subscriptionRemoved")]
    value = [*forged(300), *real, *crossed, *removed]
    with counted_queries() as statements:
        answer = asgi.post("/webhooks/graph", json={"value": value})
    assert answer.status_code == 202
    assert len(statements) <= 2, statements  # the legacy table for the forgeries, the mapping
    assert queued(queues.SYNC, SYNC_JOB) == [(dana,)]
    assert queued(queues.DEFAULT, RENEW_JOB) == [(fox,)]


def test_a_subscription_made_before_the_state_named_its_mailbox_still_syncs(
    env: Settings, asgi: AsgiClient
) -> None:
    legacy = graph_mailbox("old@contoso.test", "sub-old")
    bare = _mac(env.secret_key, legacy)  # what client_state() made before this release
    with counted_queries() as statements:
        first = asgi.post("/webhooks/graph", json={"value": [notice("sub-old", bare)]})
    assert first.status_code == 202 and len(statements) == 2  # table, mapping
    assert queued(queues.SYNC, SYNC_JOB) == [(legacy,)]
    with counted_queries() as statements:
        asgi.post("/webhooks/graph", json={"value": [notice("sub-old", bare)] * 50})
    assert len(statements) == 1  # the table is kept


def test_the_validation_handshake_is_unchanged(env: Settings, asgi: AsgiClient) -> None:
    echoed = asgi.post("/webhooks/graph?validationToken=abc%3Cdef")
    assert (echoed.status_code, echoed.text, echoed.mimetype) == (
        200,
        "abc<def",
        "text/plain",
    )
    too_long = asgi.post("/webhooks/graph?validationToken=" + "x" * 1025)
    assert too_long.status_code == 400


def test_gmail_pushes_are_verified_before_their_body_is_read(
    env: Settings, asgi: AsgiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served without Flask: the same refusals, in the same order, with the same headers."""
    monkeypatch.setenv("GMAIL_PUSH_TOKEN", "x" * 32)
    get_settings.cache_clear()
    big = b"{" * (MAX_GMAIL_BODY + 1)
    unverified = asgi.post("/webhooks/gmail?token=" + "y" * 32, big)
    assert unverified.status_code == 403  # refused before the size is even looked at
    assert asgi.post("/webhooks/gmail?token=" + "x" * 32, big).status_code == 413
    streamed = asgi.post("/webhooks/gmail?token=" + "x" * 32, big, chunked=True)
    assert streamed.status_code == 413
    malformed = asgi.post("/webhooks/gmail?token=" + "x" * 32, b"[" * 100_000)
    assert malformed.status_code == 204  # acknowledged: redelivering it would not help
    for answer in (unverified, streamed, malformed, asgi.post("/webhooks/graph", b"[]")):
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert queued(queues.SYNC, SYNC_JOB) == []
