"""One contract, four providers: IMAP, Gmail, Exchange (EWS) and Microsoft Graph.

Every test runs against each provider's back-end through the real client
library (imapclient/smtplib, google-api-python-client, exchangelib,
requests + MSAL) and the real engine, on SQLite and PostgreSQL. IMAP runs
against three real servers: Dovecot on both databases, Courier-IMAP and GNU
Mailutils on PostgreSQL only (what differs between them is the server, not the
database, and CI time is counted):

- send, then read back the ids the provider stored (Message-ID, thread);
- a reply from a colleague at another address, and from a person on CC, ends
  the sequence; so does one whose client dropped its threading headers (matched
  by the provider's thread, or on IMAP by subject and sender), and the event
  says which rule matched; the mailbox owner's own message in the thread does not;
- so does a reply a server rule or filter filed outside the Inbox;
- a reply that arrived while no push was listening halts the next step when it
  falls due: the step waits for a sync instead of going out on stale knowledge;
- incremental sync lists only new mail, and fetches only what answers us;
- an expired cursor re-lists a bounded window without recording anything twice;
- throttling backs that mailbox off (and only that one) until the provider's time;
- revoked credentials mark *that* mailbox "needs reconnect", visibly in the API;
- a message that cannot be handled is quarantined and the mailbox goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import func, select

from config import Settings, queues
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Enrollment,
    Event,
    InboundMessage,
    Mailbox,
    MailboxStatus,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from core.redis import get_redis
from tests.conftest import ApiClient
from tests.integration.provider_harness import (
    ExchangeHarness,
    GmailHarness,
    GraphHarness,
    Harness,
    ImapHarness,
    run_jobs,
)
from worker.sequences import claiming, delivering, enrolling
from worker.sequences.jobs import send_due_step
from worker.sync import wanted
from worker.sync.base import OutgoingMessage
from worker.sync.engine import backoff_remaining, sync_mailbox, sync_mailbox_job
from worker.sync.mime import new_message_id
from worker.sync.registry import open_provider

KINDS = ["imap", "gmail", "exchange", "graph"]
OTHER_IMAP_SERVERS = ["courier", "mailutils"]
# IMAP on both databases; the other providers' promises do not depend on the
# database, so PostgreSQL (production) only.
COMBINATIONS = (
    [("imap", "sqlite"), ("imap", "postgresql")]
    + [(kind, "postgresql") for kind in KINDS if kind != "imap"]
    + [(f"imap-{server}", "postgresql") for server in OTHER_IMAP_SERVERS]
)
pytestmark = pytest.mark.parametrize(
    ("harness", "database_url"),
    COMBINATIONS,
    indirect=True,
    ids=[f"{kind}-{db}" for kind, db in COMBINATIONS],
)


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "imap":
        return ImapHarness(
            request.getfixturevalue("dovecot"), request.getfixturevalue("smtp_server")
        )
    if request.param.startswith("imap-"):
        server = request.param.removeprefix("imap-")
        return ImapHarness(
            request.getfixturevalue(server), request.getfixturevalue(f"{server}_smtp")
        )
    if request.param == "gmail":
        return GmailHarness(request.getfixturevalue("fake_gmail"))
    if request.param == "exchange":
        return ExchangeHarness(request.getfixturevalue("fake_ews"))
    if request.param == "graph":
        return GraphHarness(request.getfixturevalue("fake_graph"))
    raise AssertionError(request.param)


@dataclass
class Seller:
    team_id: int
    mailbox_id: int
    address: str
    sequence_id: int


def make_mailbox(harness: Harness, team_id: int, address: str | None = None) -> tuple[int, str]:
    address = address or harness.new_address()
    with session_scope() as session:
        mailbox = Mailbox(
            team_id=team_id,
            kind=harness.kind,
            email=address,
            credentials_encrypted=encrypt_json(harness.credentials(address)),
            created_at=utcnow(),
        )
        session.add(mailbox)
        session.flush()
        return mailbox.id, address


def make_seller(harness: Harness, team_name: str = "Sales") -> Seller:
    with session_scope() as session:
        team = session.scalar(select(Team).where(Team.name == team_name))
        if team is None:
            team = Team(name=team_name)
            session.add(team)
            session.flush()
        team_id = team.id
    mailbox_id, address = make_mailbox(harness, team_id)
    with session_scope() as session:
        sequence = Sequence(team_id=team_id, mailbox_id=mailbox_id, name="Intro")
        sequence.steps = [
            SequenceStep(
                position=0, delay_seconds=0, subject="Quick question", body_html="<p>Hi</p>"
            ),
            SequenceStep(position=1, delay_seconds=3600, subject="Again", body_html="<p>Bump</p>"),
        ]
        session.add(sequence)
        session.flush()
        return Seller(team_id, mailbox_id, address, sequence.id)


def send_first_step(seller: Seller, prospect: str) -> tuple[int, str]:
    """Enrol `prospect` and send step 1 through the real provider. (enrollment id, Message-ID)."""
    now = utcnow()
    with session_scope() as session:
        sequence = session.get_one(Sequence, seller.sequence_id)
        enrollment = enrolling.enroll(
            session, sequence=sequence, email=prospect, name=None, now=now - timedelta(seconds=1)
        )
        session.flush()
        sent = claiming.claim_due_step(session, enrollment.id, now)
        assert sent is not None
        enrollment_id, sent_id = enrollment.id, sent.id
    outcome = delivering.deliver(sent_id)
    assert outcome.status == "sent", outcome
    with session_scope() as session:
        message_id = session.get_one(SentMessage, sent_id).message_id
    return enrollment_id, message_id


def inbound(
    author: str,
    to: str,
    in_reply_to: str | None = None,
    *,
    cc: list[str] | None = None,
    subject: str = "Re: Quick question",
    body: str = "Sounds good, let's talk.\n",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = to
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    return msg.as_bytes()


def newsletter(to: str, n: int) -> bytes:
    return inbound(
        f"news{n}@shop.test", to, subject=f"Deals of the week {n}", body="Buy now.\n" * 40
    )


def event_counts() -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(select(Event.kind, func.count()).group_by(Event.kind))
        return {kind: int(n) for kind, n in rows}


def state_of(enrollment_id: int) -> tuple[str, str | None]:
    with session_scope() as session:
        enrollment = session.get_one(Enrollment, enrollment_id)
        return enrollment.state, enrollment.state_reason


def mailbox_row(mailbox_id: int) -> Mailbox:
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        session.expunge(mailbox)
        return mailbox


@pytest.fixture
def clean_backoff(env: Settings) -> Iterator[None]:
    yield
    for key in get_redis().scan_iter("sightline:sync:backoff:*"):
        get_redis().delete(key)


# -- send ------------------------------------------------------------------------------


def test_send_reads_back_the_ids_the_provider_stored(env: Settings, harness: Harness) -> None:
    address = harness.new_address()
    prospect = unique_prospect()
    ours = new_message_id(address)
    with open_provider(harness.kind, address, harness.credentials(address)) as provider:
        result = provider.send(
            OutgoingMessage(
                from_addr=address,
                to=[prospect],
                subject="Quick question",
                html="<p>Hi <b>Dana</b></p>",
                text="Hi Dana\n",
                message_id=ours,
            )
        )
        stored = harness.sent_copies(address)
        assert [c.message_id for c in stored] == [result.message_id]
        assert result.message_id == ours  # well-formed ids are kept by every provider
        if harness.has_threads:
            assert result.thread_id and result.thread_id == stored[0].thread_id
        again = provider.find_sent(result.message_id)
        assert again is not None and again.message_id == result.message_id
        assert provider.find_sent(new_message_id(address)) is None


# -- matching --------------------------------------------------------------------------


def test_a_reply_from_a_colleague_or_a_cc_ends_the_sequence(
    env: Settings, harness: Harness
) -> None:
    seller = make_seller(harness)
    first, first_id = send_first_step(seller, "dana@acme.test")
    second, second_id = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)  # the cursor starts after our own sends

    colleague = "boss@acme.test"  # another address at the prospect's company
    harness.deliver(seller.address, inbound(colleague, seller.address, first_id))
    on_cc = "assistant@partner.test"  # a person copied in answers for everyone
    harness.deliver(
        seller.address, inbound(on_cc, seller.address, second_id, cc=["lee@globex.test"])
    )
    stats = sync_mailbox(seller.mailbox_id)

    assert stats.outcomes == {"recorded": 2}
    assert state_of(first) == ("replied", f"reply from {colleague}")
    assert state_of(second) == ("replied", f"reply from {on_cc}")
    assert event_counts()["reply"] == 2
    assert [e["matched_by"] for e in reply_events()] == ["references", "references"]


def reply_events() -> list[dict[str, object]]:
    with session_scope() as session:
        return [dict(e.data) for e in session.scalars(select(Event).where(Event.kind == "reply"))]


def test_a_reply_that_lost_its_threading_headers_ends_the_sequence(
    env: Settings, harness: Harness
) -> None:
    """No In-Reply-To, no References: the provider's thread, or on IMAP the subject, says."""
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    other, _ = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)

    # The salesperson's own follow-up by hand, in the thread: never a reply.
    by_hand = inbound(seller.address, "dana@acme.test", subject="Re: Quick question")
    harness.deliver_threaded(seller.address, by_hand, message_id)
    headerless = inbound("dana@acme.test", seller.address, subject="RE:  quick QUESTION")
    harness.deliver_threaded(seller.address, headerless, message_id)
    # Lee writes about something else: a subject of his own, in a thread of his own.
    harness.deliver(seller.address, inbound("lee@globex.test", seller.address, subject="Hi"))
    # Kim answers someone else's "Quick question": it names another id, so no subject rule.
    kim, _ = send_first_step(seller, "kim@initech.test")
    elsewhere = inbound("kim@initech.test", seller.address, "<their-thread@initech.test>")
    harness.deliver(seller.address, elsewhere)
    stats = sync_mailbox(seller.mailbox_id)

    assert stats.outcomes == {"recorded": 1}
    assert state_of(enrollment) == ("replied", "reply from dana@acme.test")
    assert state_of(other)[0] == "active"
    assert state_of(kim)[0] == "active"
    rule = "thread" if harness.has_threads else "subject"
    assert [e["matched_by"] for e in reply_events()] == [rule]


def test_a_reply_a_rule_filed_outside_the_inbox_ends_the_sequence(
    env: Settings, harness: Harness
) -> None:
    """A server rule or a filter put the answer in "Customers": it is seen all the same."""
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    reply = inbound("dana@acme.test", seller.address, message_id)
    assert harness.file_into(seller.address, reply, "Customers")
    stats = sync_mailbox(seller.mailbox_id)

    assert stats.outcomes == {"recorded": 1}
    assert state_of(enrollment) == ("replied", "reply from dana@acme.test")
    # Nothing is read twice: the next sync lists nothing new in any folder.
    assert sync_mailbox(seller.mailbox_id).listed == 0


def fall_due(mailbox_id: int, *, due_ago: float, synced_ago: float) -> None:
    """Time passes: the next steps fell due `due_ago` s ago, the last sync began `synced_ago`."""
    now = utcnow()
    with session_scope() as session:
        session.get_one(Mailbox, mailbox_id).last_synced_at = now - timedelta(seconds=synced_ago)
        for enrollment in session.scalars(select(Enrollment).where(Enrollment.state == "active")):
            enrollment.next_step_at = now - timedelta(seconds=due_ago)


def sent_count(enrollment_id: int) -> int:
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(SentMessage)
                .where(SentMessage.enrollment_id == enrollment_id)
            )
            or 0
        )


def test_a_reply_nobody_pushed_halts_the_next_step_when_it_falls_due(
    env: Settings, harness: Harness
) -> None:
    """No IDLE, no webhook: the reply sits on the server until the step is due."""
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, message_id))
    fall_due(seller.mailbox_id, due_ago=1, synced_ago=5)  # a sync just before it fell due

    assert send_due_step(enrollment, 1) == "waiting for a fresh sync"
    assert sent_count(enrollment) == 1  # step 2 did not go out on stale knowledge
    assert run_jobs(queues.SYNC) == 1  # the one sync it asked for
    assert state_of(enrollment) == ("replied", "reply from dana@acme.test")
    assert send_due_step(enrollment, 1) == "nothing due"
    assert sent_count(enrollment) == 1
    assert len(harness.sent_copies(seller.address)) == 1


def folder_list_made_ago(mailbox_id: int, seconds: float) -> None:
    """Time passes for the folder list the syncs keep (IMAP, Graph, EWS; Gmail has none)."""
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        cursor = dict(mailbox.sync_cursor or {})
        listing = cursor.get("listing")
        if isinstance(listing, dict) and "ids" in listing:
            at = (utcnow() - timedelta(seconds=seconds)).isoformat()
            mailbox.sync_cursor = {**cursor, "listing": {**listing, "at": at}}


def test_a_reply_filed_in_a_folder_made_since_the_last_list_halts_the_next_step(
    env: Settings, harness: Harness
) -> None:
    """A rule made "Customers" after the syncs last listed the folders and filed Dana's
    answer there while other mail came in: the sync that mail started read only the
    folders it knew. A sync since the step fell due is not enough: the list must be."""
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    folder_list_made_ago(seller.mailbox_id, 60)  # still kept (FOLDER_LIST_KEPT)
    assert harness.file_into(
        seller.address, inbound("dana@acme.test", seller.address, message_id), "Customers"
    )
    harness.deliver(seller.address, newsletter(seller.address, 1))
    assert sync_mailbox(seller.mailbox_id).listed >= 1  # the newsletter (Gmail: the answer too)
    fall_due(seller.mailbox_id, due_ago=1, synced_ago=0.5)  # a sync began since it fell due

    assert send_due_step(enrollment, 1) in ("waiting for a fresh sync", "nothing due")
    assert sent_count(enrollment) == 1  # step 2 did not go out on a list older than it
    # More news before the sync it asked for: that sync lists the folders all the same.
    harness.deliver(seller.address, newsletter(seller.address, 2))
    run_jobs(queues.SYNC)
    assert state_of(enrollment) == ("replied", "reply from dana@acme.test")
    assert send_due_step(enrollment, 1) == "nothing due"
    assert sent_count(enrollment) == 1


def test_a_fresh_mailbox_sends_the_next_step_without_another_sync(
    env: Settings, harness: Harness
) -> None:
    seller = make_seller(harness)
    enrollment, _ = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    fall_due(seller.mailbox_id, due_ago=2, synced_ago=1)  # a sync began since it fell due

    assert send_due_step(enrollment, 1) == "sent"
    assert run_jobs(queues.SYNC) == 0  # no sync was asked for
    assert sent_count(enrollment) == 2


def test_sync_lists_only_new_mail_and_fetches_only_what_answers_us(
    env: Settings, harness: Harness
) -> None:
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    for n in range(5):
        harness.deliver(seller.address, newsletter(seller.address, n))
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, message_id))

    stats = sync_mailbox(seller.mailbox_id)
    assert (stats.listed, stats.fetched, stats.outcomes) == (6, 1, {"recorded": 1})
    assert sync_mailbox(seller.mailbox_id).listed == 0

    harness.deliver(seller.address, newsletter(seller.address, 9))
    again = sync_mailbox(seller.mailbox_id)
    assert (again.listed, again.fetched) == (1, 0)
    assert state_of(enrollment)[0] == "replied"
    assert mailbox_row(seller.mailbox_id).last_synced_at is not None


def test_an_expired_cursor_relists_without_recording_twice(env: Settings, harness: Harness) -> None:
    seller = make_seller(harness)
    _, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, message_id))
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}

    harness.expire_cursor(seller.address, seller.mailbox_id)
    harness.deliver(seller.address, newsletter(seller.address, 1))
    relisted = sync_mailbox(seller.mailbox_id)

    assert relisted.listed >= 2  # the bounded window: the old reply and the new mail
    assert relisted.outcomes == {"duplicate": 1}
    assert event_counts() == {"sent": 1, "reply": 1}
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessage)) == 1
    assert sync_mailbox(seller.mailbox_id).listed == 0  # and a fresh cursor again


# -- failures --------------------------------------------------------------------------


def test_throttling_backs_off_that_mailbox_only(
    env: Settings, harness: Harness, clean_backoff: None
) -> None:
    seller = make_seller(harness)
    other_id, _ = make_mailbox(harness, seller.team_id)
    sync_mailbox(seller.mailbox_id)
    if not harness.throttle(seller.address, calls=1):
        pytest.skip(f"{harness.kind} servers do not throttle with a retry time")

    result = sync_mailbox_job(seller.mailbox_id)
    assert result["status"] == "throttled"
    wait = backoff_remaining(seller.mailbox_id)
    assert 0 < wait <= 3600
    assert "throttled" in (mailbox_row(seller.mailbox_id).status_reason or "")
    # the next sync waits for the provider's time
    assert list(wanted.scheduled()) == [seller.mailbox_id]

    # A push meanwhile does not touch the provider; another mailbox syncs normally.
    assert sync_mailbox_job(seller.mailbox_id)["status"] == "backoff"
    assert sync_mailbox_job(other_id)["status"] == "done"

    get_redis().delete(f"sightline:sync:backoff:{seller.mailbox_id}")  # the time has come
    assert sync_mailbox_job(seller.mailbox_id)["status"] == "done"
    row = mailbox_row(seller.mailbox_id)
    assert (row.status, row.status_reason) == (MailboxStatus.ACTIVE, None)


def test_revoked_credentials_mark_only_that_mailbox(
    env: Settings, harness: Harness, api: ApiClient
) -> None:
    with session_scope() as session:
        team_id = session.scalar(select(Team.id).where(Team.name == "Team A"))
    assert team_id is not None
    revoked_id, revoked = make_mailbox(harness, team_id)
    fine_id, _ = make_mailbox(harness, team_id)
    harness.revoke(revoked, revoked_id)

    sync_mailbox(revoked_id)
    sync_mailbox(fine_id)

    listed = {m["id"]: m for m in api.get("/api/v1/mailboxes").json["mailboxes"]}
    assert listed[revoked_id]["status"] == "needs_reconnect"
    assert listed[revoked_id]["status_reason"]
    assert listed[revoked_id]["kind"] == harness.kind
    assert listed[fine_id]["status"] == "active"
    assert listed[fine_id]["last_synced_at"] is not None
    assert listed[fine_id]["status_reason"] is None
    # A mailbox waiting for a person is not synced again on its own.
    assert sync_mailbox(revoked_id).listed == 0


def test_a_message_that_cannot_be_handled_is_quarantined_and_the_mailbox_goes_on(
    env: Settings, harness: Harness
) -> None:
    seller = make_seller(harness)
    _, first_id = send_first_step(seller, "dana@acme.test")
    second, second_id = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)
    poison = inbound("dana@acme.test", seller.address, first_id, body="It is fine.\n")
    ref = harness.deliver(seller.address, poison)
    if not harness.corrupt(seller.address, ref):
        pytest.skip(f"{harness.kind}: the server cannot make one message unreadable")
    harness.deliver(seller.address, inbound("lee@globex.test", seller.address, second_id))

    stats = sync_mailbox(seller.mailbox_id)

    assert stats.quarantined == 1
    assert state_of(second)[0] == "replied"
    with session_scope() as session:
        kept = session.scalars(select(InboundMessage).where(InboundMessage.quarantined)).all()
    assert len(kept) == 1 and kept[0].from_addr == "dana@acme.test"
    assert "could not fetch" in (kept[0].error or "")
    assert mailbox_row(seller.mailbox_id).status == MailboxStatus.ACTIVE
    assert sync_mailbox(seller.mailbox_id).listed == 0  # the cursor moved past it


_counter = iter(range(10**9))


def unique_prospect() -> str:
    return f"prospect{next(_counter)}@acme.test"
