"""The events worker: the hit stream drained into hits and events, on both databases.

Hits are appended exactly as the web edge appends them (`core.tracking.hits.encode`
+ XADD on the real Redis); the consumer is the real one, including a consumer
that "dies" holding entries and another that claims them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import Table, func, select, text

from config import Settings, get_settings
from core import db as core_db
from core import redis as core_redis
from core.db import session_scope
from core.models import (
    Device,
    Enrollment,
    Event,
    Mailbox,
    Prospect,
    SalesforceEngagement,
    SentMessage,
    Sequence,
    SequenceStep,
    SignIn,
    Team,
    TrackingHit,
    User,
    utcnow,
)
from core.tracking import hits as hit_stream
from core.tracking.tokens import ClickToken, DeviceRef, OpenToken
from tests.conftest import create_user
from worker import events

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131 Safari/537.36"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@dataclass(frozen=True)
class Sent:
    id: int
    team_id: int
    enrollment_id: int
    sequence_id: int


def make_sent(team_name: str, prospect_email: str, *, minutes_ago: int = 60) -> Sent:
    with session_scope() as session:
        team = session.scalars(select(Team).where(Team.name == team_name)).one()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email=f"rep@{team.id}.test", credentials_encrypted="-"
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name=f"Intro {team_name}")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hello", body_html="<p>Hi</p>")
        ]
        prospect = Prospect(team_id=team.id, email=prospect_email, name="Dana Scully")
        session.add_all([sequence, prospect])
        session.flush()
        enrollment = Enrollment(team_id=team.id, sequence_id=sequence.id, prospect_id=prospect.id)
        session.add(enrollment)
        session.flush()
        sent = SentMessage(
            team_id=team.id,
            mailbox_id=mailbox.id,
            enrollment_id=enrollment.id,
            step_position=0,
            prospect_id=prospect.id,
            message_id=f"<{prospect_email}.{team.id}@seller.test>",
            subject="Hello Dana",
            to_addrs=[prospect_email],
            status="sent",
            sent_at=utcnow() - timedelta(minutes=minutes_ago),
        )
        session.add(sent)
        session.flush()
        return Sent(sent.id, team.id, enrollment.id, sequence.id)


@pytest.fixture
def two_teams(app: Flask) -> tuple[Sent, Sent]:
    create_user(app, "owner@team-a.test", "Team A")
    create_user(app, "owner@team-b.test", "Team B")
    return make_sent("Team A", "dana@acme.test"), make_sent("Team B", "fox@other.test")


@pytest.fixture
def stream(env: Settings) -> redis.Redis:
    client = core_redis.get_redis()
    events.ensure_group(client)
    return client


def hit(
    client: redis.Redis,
    sent: Sent,
    *,
    kind: str = "open",
    ua: str = CHROME,
    ip: str = "203.0.113.9",
    method: str = "GET",
    prefetch: bool = False,
    device: DeviceRef | None = None,
    link: int = 0,
    url: str = "https://acme.test/pricing",
    issued_at: int | None = None,
) -> str:
    issued = issued_at if issued_at is not None else int(time.time()) - 3600
    token: OpenToken = (
        ClickToken(sent.id, sent.team_id, 0, issued, link, url)
        if kind == "click"
        else OpenToken(sent.id, sent.team_id, 0, issued)
    )
    fields = hit_stream.encode(
        token, method=method, ip=ip, user_agent=ua, prefetch=prefetch, device=device
    )
    entry_id: Any = client.xadd(hit_stream.STREAM, fields)  # type: ignore[arg-type]
    return str(entry_id.decode())


def drain(client: redis.Redis, name: str = "test-consumer") -> events.DrainStats:
    return events.Consumer(client, name).step()


def stored() -> list[tuple[str, str, int | None]]:
    with session_scope() as session:
        rows = session.execute(
            select(TrackingHit.kind, TrackingHit.hit_class, TrackingHit.event_id).order_by(
                TrackingHit.id
            )
        )
        return [(k, c, e) for k, c, e in rows]


def event_rows(sent_id: int) -> list[tuple[str, dict[str, object]]]:
    with session_scope() as session:
        rows = session.execute(
            select(Event.kind, Event.data)
            .where(Event.sent_message_id == sent_id)
            .order_by(Event.id)
        )
        return [(k, dict(d)) for k, d in rows]


def engagement(sent_id: int) -> tuple[int, int]:
    with session_scope() as session:
        row = session.scalar(
            select(SalesforceEngagement).where(SalesforceEngagement.sent_message_id == sent_id)
        )
        return (row.opens, row.clicks) if row else (0, 0)


def test_every_kind_of_hit_is_kept_and_labelled_and_only_readers_become_events(
    two_teams: tuple[Sent, Sent], stream: redis.Redis
) -> None:
    sent, _ = two_teams
    hit(stream, sent)  # a person
    hit(stream, sent, ua="Mozilla/5.0")  # Apple Mail Privacy Protection
    hit(stream, sent, ua=GMAIL_PROXY, ip="66.249.84.1")  # Gmail's image proxy
    hit(stream, sent, ip="40.107.3.4")  # Exchange Online Protection
    hit(stream, sent, method="HEAD")
    hit(stream, sent, prefetch=True)
    hit(stream, sent, ua="curl/8.5.0")
    hit(stream, sent, issued_at=int(time.time()))  # seconds after sending
    stats = drain(stream)
    assert stats.stored == 8 and stats.entries == 8
    classes = [c for _, c, _ in stored()]
    assert classes == [
        "person",
        "apple_proxy",
        "google_proxy",
        "scanner",
        "scanner",
        "scanner",
        "bot",
        "scanner",
    ]
    opens = event_rows(sent.id)
    # One counted open (person and Gmail share the 10-minute bucket) and one probable.
    assert [(k, d["hit_class"], d["probable"]) for k, d in opens] == [
        ("open", "person", False),
        ("open", "apple_proxy", True),
    ]
    assert engagement(sent.id) == (1, 0)  # Salesforce counts people only
    assert stream.xlen(hit_stream.STREAM) == 0  # acknowledged and deleted
    assert stream.xpending(hit_stream.STREAM, hit_stream.GROUP)["pending"] == 0


def test_own_devices_and_sign_in_addresses_are_self_and_never_counted(
    two_teams: tuple[Sent, Sent], stream: redis.Redis
) -> None:
    sent, other = two_teams
    with session_scope() as session:
        user = session.scalars(select(User).where(User.team_id == sent.team_id)).one()
        other_user = session.scalars(select(User).where(User.team_id == other.team_id)).one()
        session.add_all(
            [
                Device(public_id="a" * 32, team_id=sent.team_id, user_id=user.id),
                Device(public_id="b" * 32, team_id=other.team_id, user_id=other_user.id),
                Device(
                    public_id="c" * 32, team_id=sent.team_id, user_id=user.id, revoked_at=utcnow()
                ),
                SignIn(team_id=sent.team_id, user_id=user.id, ip="198.51.100.20", at=utcnow()),
                SignIn(
                    team_id=sent.team_id,
                    user_id=user.id,
                    ip="198.51.100.21",
                    at=utcnow() - timedelta(days=30),  # older than the window
                ),
            ]
        )
    hit(stream, sent, device=DeviceRef("a" * 32, sent.team_id, 1))
    hit(stream, sent, kind="click", device=DeviceRef("a" * 32, sent.team_id, 1))
    hit(stream, sent, ip="198.51.100.20")  # a mail client at the office that signed in
    # Another team's device is a reader of ours; a revoked device is nobody's.
    hit(stream, sent, device=DeviceRef("b" * 32, other.team_id, 2), ip="192.0.2.1")
    hit(stream, sent, device=DeviceRef("c" * 32, sent.team_id, 1), ip="192.0.2.2")
    hit(stream, sent, ip="198.51.100.21")
    drain(stream)
    assert [c for _, c, _ in stored()] == ["self", "self", "self", "person", "person", "person"]
    assert [e for _, c, e in stored() if c == "self"] == [None, None, None]
    kinds = [k for k, _ in event_rows(sent.id)]
    assert kinds == ["open"]  # the three person opens share one bucket
    assert engagement(sent.id) == (1, 0)


def test_a_click_without_an_open_records_an_inferred_open(
    two_teams: tuple[Sent, Sent], stream: redis.Redis
) -> None:
    sent, _ = two_teams
    hit(stream, sent, ua="Mozilla/5.0")  # only a probable (Apple) open so far
    hit(stream, sent, kind="click", link=1, url="https://acme.test/b")
    hit(stream, sent, kind="click", link=2, url="https://acme.test/c")
    drain(stream)
    rows = event_rows(sent.id)
    assert [(k, d.get("inferred", False), d.get("url")) for k, d in rows] == [
        ("open", False, None),  # probable
        ("open", True, None),  # inferred from the first click, once
        ("click", False, "https://acme.test/b"),
        ("click", False, "https://acme.test/c"),
    ]
    assert engagement(sent.id) == (1, 2)


def test_a_click_after_a_counted_open_infers_nothing(
    two_teams: tuple[Sent, Sent], stream: redis.Redis
) -> None:
    sent, _ = two_teams
    hit(stream, sent)
    drain(stream)
    hit(stream, sent, kind="click")
    drain(stream)
    assert [k for k, _ in event_rows(sent.id)] == ["open", "click"]


def test_a_consumer_that_dies_holding_entries_loses_nothing(
    two_teams: tuple[Sent, Sent], stream: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, other = two_teams
    for _ in range(3):
        hit(stream, sent)
    hit(stream, other, kind="click")
    # Consumer "dead" reads the entries, then its process is gone before it commits.
    dead = events.Consumer(stream, "dead")
    assert len(dead.read_new(block_ms=10)) == 4
    assert stored() == []
    # A restarted consumer with the same name finds its own pending entries first.
    monkeypatch.setattr(events, "CLAIM_IDLE_MS", 50)
    time.sleep(0.1)
    survivor = events.Consumer(stream, "survivor")
    stats = survivor.step()  # claims what "dead" held
    assert stats.entries == 4 and stats.stored == 4
    assert stream.xpending(hit_stream.STREAM, hit_stream.GROUP)["pending"] == 0
    assert len(event_rows(sent.id)) == 1 and len(event_rows(other.id)) == 2


def test_draining_the_same_entries_twice_stores_them_once(
    two_teams: tuple[Sent, Sent], stream: redis.Redis
) -> None:
    sent, _ = two_teams
    hit(stream, sent)
    hit(stream, sent, kind="click")
    entries = events.Consumer(stream, "c1").read_new(block_ms=10)
    # The worker committed, then died before XACK: the same entries come round again.
    with session_scope() as session:
        events.store_hits(
            session,
            [hit_stream.decode(i, f) for i, f in entries],
            events.DrainStats(),
        )
    again = events.drain_entries(stream, entries)
    assert (again.stored, again.duplicates, again.events) == (0, 2, 0)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(TrackingHit)) == 2
    assert [k for k, _ in event_rows(sent.id)] == ["open", "click"]
    assert engagement(sent.id) == (1, 1)


def test_a_token_for_another_team_records_nothing_and_tracking_off_by_default_drops_no_hit(
    two_teams: tuple[Sent, Sent], stream: redis.Redis
) -> None:
    sent, other = two_teams
    with session_scope() as session:
        session.get_one(Team, other.team_id).tracking_enabled = False
    # Mail sent tracked (its sequence or email turned tracking on) keeps counting.
    hit(stream, other)
    # A token claiming team B for team A's message (only possible with our key): refused.
    forged = Sent(sent.id, other.team_id, sent.enrollment_id, sent.sequence_id)
    hit(stream, forged)
    stream.xadd(hit_stream.STREAM, {"k": "x"})
    stats = drain(stream)
    assert (stats.stored, stats.skipped, stats.malformed) == (1, 1, 1)
    assert [k for k, _ in event_rows(other.id)] == ["open"]
    assert stream.xlen(hit_stream.STREAM) == 0


def test_addresses_and_user_agents_are_cleared_after_the_retention(
    two_teams: tuple[Sent, Sent], stream: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_TRACKING_PII_DAYS", "7")
    monkeypatch.setenv("SIGHTLINE_TRACKING_SELF_WINDOW_HOURS", "720")
    get_settings.cache_clear()
    sent, _ = two_teams
    hit(stream, sent)
    drain(stream)
    with session_scope() as session:
        user = session.scalars(select(User).where(User.team_id == sent.team_id)).one()
        session.add(SignIn(team_id=sent.team_id, user_id=user.id, ip="198.51.100.1", at=utcnow()))
    retention = get_settings().tracking_pii_days
    assert events.prune_personal_data() == (0, 0)
    later = utcnow() + timedelta(days=retention, hours=1)
    assert events.prune_personal_data(later) == (1, 0)  # sign-ins live for the self window
    much_later = utcnow() + timedelta(hours=get_settings().tracking_self_window_hours + 1)
    events.prune_personal_data(max(later, much_later))
    with session_scope() as session:
        h = session.scalars(select(TrackingHit)).one()
        assert (h.ip, h.user_agent, h.hit_class) == (None, None, "person")
        s = session.scalars(select(SignIn)).one()
        assert (s.ip, s.user_agent) == (None, None)


def test_a_deadlock_rolls_the_batch_back_and_the_consumer_drains_it_again(
    two_teams: tuple[Sent, Sent], stream: redis.Redis, database_url: str
) -> None:
    """Found by the chaos run: the consumer died of a deadlock with a Salesforce flusher.

    Here the other transaction is this test's: it holds Team B's engagement row
    while the batch (A's hit, then B's) waits for it, then asks for A's, which
    the batch holds. PostgreSQL aborts the batch (it waited first); the consumer
    must live on and store the batch once the other transaction is done.
    """
    if not database_url.startswith("postgresql"):
        pytest.skip("the deadlock needs PostgreSQL's row locks (SQLite locks the whole file)")
    from sqlalchemy.dialects.postgresql import insert

    sent, other = two_teams
    hit(stream, sent)
    hit(stream, other)
    table = SalesforceEngagement.__table__
    assert isinstance(table, Table)

    def bump(connection: Any, target: Sent) -> None:
        stmt = insert(table).values(
            team_id=target.team_id,
            sent_message_id=target.id,
            opens=1,
            clicks=0,
            document_views=0,
            updated_at=utcnow(),
        )
        connection.execute(
            stmt.on_conflict_do_update(
                index_elements=["sent_message_id"], set_={"opens": table.c.opens + 1}
            )
        )

    consumer = events.Consumer(stream, "deadlocked")
    runner = threading.Thread(target=consumer.run, daemon=True)
    with core_db.get_engine().connect() as blocker:
        blocker_tx = blocker.begin()
        bump(blocker, other)  # B's row, uncommitted: the batch will wait on it
        runner.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_on_a_lock(), "the batch never reached B's row"
        bump(blocker, sent)  # A's row, which the batch holds: a deadlock; the batch loses
        blocker_tx.commit()
    try:
        deadline = time.monotonic() + 15
        while len(stored()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner.is_alive(), "the consumer died of the deadlock"
        assert len(stored()) == 2
        assert stream.xpending(hit_stream.STREAM, hit_stream.GROUP)["pending"] == 0
        assert engagement(sent.id) == (2, 0) and engagement(other.id) == (2, 0)
    finally:
        consumer.stopping.set()
        runner.join(timeout=10)


def _waiting_on_a_lock() -> bool:
    with core_db.get_engine().connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        ).scalar()
    return bool(waiting)
