"""The core loop, end to end, on real parts.

Enrol a prospect → step 1 goes out through a real SMTP server and lands in the
prospect's Dovecot INBOX → someone answers it (a colleague at another address, or
a person on CC) → the answer is delivered to the sender's Dovecot mailbox → the
listener's IDLE wakes, a worker syncs, the enrolment is `replied` → step 2 never
goes out → Salesforce (the TLS fake, through simple-salesforce) holds exactly one
Task for the send and one for the reply, even after extra syncs and a worker
killed while Salesforce held its write.

The same loop on the other real IMAP servers (Courier-IMAP, GNU Mailutils, their
default settings; PostgreSQL only), as the product owners check it from
outside: two prospects answer (a colleague, a person on CC) and a third, the
control, does not. With the poll at its default minute and IDLE that is slow
(Courier) or silent (Mailutils), both replies halt their enrolments before step
2 falls due, the control gets step 2 in the same thread, our copies land in the
user's Sent folder, and Salesforce holds exactly two Tasks per prospect.

The worker, cron and listener are the Procfile's own commands in subprocesses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from config import Settings, get_settings
from core.db import session_scope
from core.models import Event, InboundMessage, SalesforceOutbox
from tests.conftest import ApiClient, service_environment
from tests.fakes.salesforce import FakeSalesforce
from tests.services.dovecot import DovecotServer, has_message_id, unique_address
from tests.services.imap_server import ImapTestServer
from tests.services.smtp import SmtpServer
from tests.stack import Stack
from worker.sync.engine import request_sync

ANY_TIME = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "24:00",
}

pytestmark = pytest.mark.integration

STEP_2_DELAY = 12
OTHER_STEP_2_DELAY = 8


@pytest.fixture
def sync_poll_seconds() -> str:
    """SIGHTLINE_SYNC_POLL_SECONDS for the stack (a test may parametrize it)."""
    return "5"


@pytest.fixture
def stack(
    env: Settings,
    database_url: str,
    redis_url: str,
    fake_salesforce: FakeSalesforce,
    fake_salesforce_ca_bundle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sync_poll_seconds: str,
) -> Iterator[Stack]:
    extra = {
        "SALESFORCE_INSTANCE_URL": fake_salesforce.instance_url,
        "SALESFORCE_ACCESS_TOKEN": fake_salesforce.access_token,
        "SIGHTLINE_SEQUENCE_TICK_SECONDS": "1",
        "SIGHTLINE_SALESFORCE_FLUSH_SECONDS": "1",
        "SIGHTLINE_SALESFORCE_LEASE_SECONDS": "5",
        "SIGHTLINE_SEND_RECOVERY_SECONDS": "5",
        "SIGHTLINE_SYNC_POLL_SECONDS": sync_poll_seconds,
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    environment = {
        **service_environment(database_url, redis_url, env.var_dir),
        **extra,
        "REQUESTS_CA_BUNDLE": fake_salesforce_ca_bundle,
    }
    running = Stack(environment, tmp_path / "logs").start("worker", "cron", "listener")
    yield running
    running.stop()


def server(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    return {"host": host, "port": port, "username": user, "password": password, "security": "none"}


def start_sequence(
    api: ApiClient, dovecot: DovecotServer, smtp_server: Any, sender: str, prospect: str
) -> dict[str, Any]:
    mailbox = api.post(
        "/api/v1/mailboxes",
        {
            "kind": "imap",
            "email": sender,
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
        },
    )
    assert mailbox.status_code == 201, mailbox.json
    sequence = api.post(
        "/api/v1/sequences",
        {
            "name": "Intro",
            "mailbox_id": mailbox.json["id"],
            # About what is sent, not when: any day, any hour (the default is Mon-Fri 08-18).
            "send_window": ANY_TIME,
            "steps": [
                {
                    "delay_seconds": 0,
                    "subject": "Hello {{first_name}}",
                    "body_html": "<p>Hi {{first_name}}, a quick question.</p>",
                },
                {
                    "delay_seconds": STEP_2_DELAY,
                    "body_html": "<p>Just bumping this.</p>",
                    "same_thread": True,
                },
            ],
        },
    )
    assert sequence.status_code == 201, sequence.json
    enrollment = api.post(
        "/api/v1/enrollments",
        {"sequence_id": sequence.json["id"], "email": prospect, "name": "Dana Scully"},
    )
    assert enrollment.status_code == 201, enrollment.json
    return {"mailbox_id": mailbox.json["id"], "enrollment_id": enrollment.json["id"]}


def sent_messages(api: ApiClient, enrollment_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/messages?enrollment_id={enrollment_id}")
    return [m for m in response.json["messages"] if m["status"] == "sent"]


def reply(
    author: str, to: str, cc: list[str], message_id: str, subject: str = "Re: Hello Dana"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = to
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content("Yes, happy to talk on Tuesday.\n\n> Hi Dana, a quick question.\n")
    return msg


def counts(enrollment_id: int) -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(
            select(Event.kind, func.count())
            .where(Event.enrollment_id == enrollment_id)
            .group_by(Event.kind)
        )
        return {kind: int(n) for kind, n in rows}


def task_subjects(fake: FakeSalesforce) -> list[str]:
    return sorted(t["Subject"] for t in fake.tasks())


# Each who-answers once, each database once: the processes' interplay does not
# depend on who answered, and the matching of both is tested on both databases
# through the real inbound path (test_signals.py, test_provider_contract.py).
@pytest.mark.parametrize(
    ("database_url", "who_answers"),
    [("postgresql", "cc"), ("sqlite", "colleague")],
    indirect=["database_url"],
    ids=["postgresql-cc", "sqlite-colleague"],
)
def test_a_reply_from_anyone_halts_the_sequence_and_logs_once(
    api: ApiClient,
    stack: Stack,
    dovecot: DovecotServer,
    smtp_server: Any,
    fake_salesforce: FakeSalesforce,
    who_answers: str,
) -> None:
    sender = unique_address("seller.test", "rep")
    prospect = unique_address("acme.test", "dana")
    contact_id = fake_salesforce.add_contact(prospect)
    ids = start_sequence(api, dovecot, smtp_server, sender, prospect)
    enrollment_id = ids["enrollment_id"]

    step_1 = stack.wait_for("step 1 to be sent", lambda: sent_messages(api, enrollment_id))[0]
    received = dovecot.wait_for_message(prospect, has_message_id(step_1["message_id"]))
    assert received["Subject"] == "Hello Dana"

    if who_answers == "colleague":  # another address at the prospect's company
        author, to, cc = unique_address("acme.test", "boss"), sender, []
    else:  # someone on CC answers for everyone
        author, to, cc = unique_address("partner.test", "cc"), sender, [prospect]
    with smtp_server.connect(login=author) as smtp:
        smtp.send_message(reply(author, to, cc, step_1["message_id"]))

    state = stack.wait_for(
        "the enrolment to stop",
        lambda: (
            (e := api.get(f"/api/v1/enrollments/{enrollment_id}").json)["state"] != "active" and e
        ),
    )
    assert state["state"] == "replied"
    assert state["state_reason"] == f"reply from {author}"

    stack.wait_for(
        "a Task for the send and one for the reply",
        lambda: len(fake_salesforce.tasks()) >= 2,
        timeout=20,
    )
    # Step 2 falls due while we wait; it must never go out.
    time.sleep(STEP_2_DELAY + 3)
    assert len(sent_messages(api, enrollment_id)) == 1
    from_us = [e.message_id for e in smtp_server.sent_to(prospect) if e.mail_from == sender]
    assert from_us == [step_1["message_id"]]

    # Extra syncs of the same mailbox record nothing twice.
    before = counts(enrollment_id)
    for _ in range(2):
        assert request_sync(ids["mailbox_id"])
        stack.wait_for("the extra sync", _sync_queue_empty, timeout=20)
    time.sleep(2)
    assert counts(enrollment_id) == before == {"sent": 1, "reply": 1}
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessage)) == 1
    tasks = fake_salesforce.tasks()
    assert task_subjects(fake_salesforce) == ["Email: Hello Dana", "Reply: Re: Hello Dana"]
    assert {t["WhoId"] for t in tasks} == {contact_id}
    reply_task = next(t for t in tasks if t["Subject"].startswith("Reply"))
    assert "Yes, happy to talk on Tuesday." in reply_task["Description"]
    assert "> Hi Dana" not in reply_task["Description"]


def outbox_statuses() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(SalesforceOutbox.status)))


def _sync_queue_empty() -> bool:
    from worker.sync import wanted

    return not any(wanted.backlog().values())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_worker_killed_while_salesforce_holds_the_write(
    api: ApiClient,
    stack: Stack,
    dovecot: DovecotServer,
    smtp_server: Any,
    fake_salesforce: FakeSalesforce,
) -> None:
    """Salesforce stores the Task, then the worker dies before hearing back: still one Task."""
    sender = unique_address("seller.test", "rep")
    prospect = unique_address("acme.test", "dana")
    fake_salesforce.add_contact(prospect)
    # skip=1: a flush first reads (who is the prospect?) in one composite call, then writes.
    fake_salesforce.faults.add("commit_then_hang", count=1, match="composite", seconds=60, skip=1)
    ids = start_sequence(api, dovecot, smtp_server, sender, prospect)
    enrollment_id = ids["enrollment_id"]
    step_1 = stack.wait_for("step 1 to be sent", lambda: sent_messages(api, enrollment_id))[0]
    stack.wait_for(
        "Salesforce to hold the write",
        lambda: (
            fake_salesforce.faults.fired_count("commit_then_hang") == 1
            and len(fake_salesforce.tasks()) == 1
        ),
        timeout=20,
    )
    stack.restart("worker")  # SIGKILL mid-job, then a fresh dyno

    author = unique_address("acme.test", "boss")
    with smtp_server.connect(login=author) as smtp:
        smtp.send_message(reply(author, sender, [], step_1["message_id"]))
    stack.wait_for(
        "the enrolment to stop",
        lambda: api.get(f"/api/v1/enrollments/{enrollment_id}").json["state"] == "replied",
    )
    stack.wait_for("the reply's Task", lambda: len(fake_salesforce.tasks()) >= 2, timeout=30)
    # The send's row is reclaimed after its lease, found in Salesforce, not re-written.
    stack.wait_for("every outbox row to be done", lambda: outbox_statuses() == {"done"}, timeout=30)
    time.sleep(2)
    assert task_subjects(fake_salesforce) == ["Email: Hello Dana", "Reply: Re: Hello Dana"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("sync_poll_seconds", ["60"])  # the default: no quick poll to help
@pytest.mark.parametrize("server_name", ["courier", "mailutils"])
def test_on_other_servers_replies_halt_before_step_2_and_the_control_gets_it_in_thread(
    request: pytest.FixtureRequest,
    api: ApiClient,
    stack: Stack,
    fake_salesforce: FakeSalesforce,
    server_name: str,
) -> None:
    imap: ImapTestServer = request.getfixturevalue(server_name)
    smtp: SmtpServer = request.getfixturevalue(f"{server_name}_smtp")
    sender = unique_address("seller.test", "rep")
    imap.ensure_user(sender)
    people: dict[str, tuple[str, str]] = {
        "dana": (unique_address("acme.test", "dana"), "Dana Scully"),
        "lee": (unique_address("globex.test", "lee"), "Lee Adama"),
        "kim": (unique_address("initech.test", "kim"), "Kim Wexler"),  # the control
    }
    contacts = {who: fake_salesforce.add_contact(address) for who, (address, _) in people.items()}
    enrolled = start_three(api, imap, smtp, sender, people)

    first: dict[str, dict[str, Any]] = {}
    for who, enrollment_id in enrolled.items():
        sent = stack.wait_for(f"step 1 to {who}", partial(sent_messages, api, enrollment_id))
        first[who] = sent[0]
    for who, (address, name) in people.items():
        got = imap.wait_for_message(address, has_message_id(first[who]["message_id"]))
        assert got["Subject"] == f"Hello {name.split()[0]}"
        imap.wait_for_message(
            sender, has_message_id(first[who]["message_id"]), folder=imap.sent_folder
        )

    colleague = unique_address("acme.test", "boss")  # answers for Dana
    on_cc = unique_address("partner.test", "cc")  # answers for everyone, Lee on CC
    answers: list[tuple[str, list[str], str, str]] = [
        (colleague, [], first["dana"]["message_id"], "Re: Hello Dana"),
        (on_cc, [people["lee"][0]], first["lee"]["message_id"], "Re: Hello Lee"),
    ]
    for author, cc, message_id, subject in answers:
        with smtp.connect(login=author) as client:
            client.send_message(reply(author, sender, cc, message_id, subject))

    # Step 2 of all three falls due together; the control's going out proves the
    # others were due too.
    both: list[dict[str, Any]] = stack.wait_for(
        "the control's step 2",
        lambda: (m := sent_messages(api, enrolled["kim"]))[1:] and m,
        timeout=OTHER_STEP_2_DELAY + 60,
    )
    second = both[1]
    for who, author in (("dana", colleague), ("lee", on_cc)):
        state = api.get(f"/api/v1/enrollments/{enrolled[who]}").json
        assert (state["state"], state["state_reason"]) == ("replied", f"reply from {author}")
        assert len(sent_messages(api, enrolled[who])) == 1
        from_us = [e.message_id for e in smtp.sent_to(people[who][0]) if e.mail_from == sender]
        assert from_us == [first[who]["message_id"]]

    control = imap.wait_for_message(people["kim"][0], has_message_id(second["message_id"]))
    assert control["In-Reply-To"] == first["kim"]["message_id"]
    assert first["kim"]["message_id"] in str(control["References"])
    assert control["Subject"] == "Re: Hello Kim"
    imap.wait_for_message(sender, has_message_id(second["message_id"]), folder=imap.sent_folder)

    stack.wait_for("six Tasks", lambda: len(fake_salesforce.tasks()) >= 6, timeout=30)
    time.sleep(2)  # nothing more arrives
    by_person = {
        who: sorted(t["Subject"] for t in fake_salesforce.tasks() if t["WhoId"] == contact)
        for who, contact in contacts.items()
    }
    assert by_person == {
        "dana": ["Email: Hello Dana", "Reply: Re: Hello Dana"],
        "lee": ["Email: Hello Lee", "Reply: Re: Hello Lee"],
        "kim": ["Email: Hello Kim", "Email: Re: Hello Kim"],
    }
    assert len(fake_salesforce.tasks()) == 6


def start_three(
    api: ApiClient,
    imap: ImapTestServer,
    smtp: SmtpServer,
    sender: str,
    people: dict[str, tuple[str, str]],
) -> dict[str, int]:
    """Connect the sender's mailbox, make a two-step sequence, enrol everyone. Enrolment ids."""
    mailbox = api.post(
        "/api/v1/mailboxes",
        {
            "kind": "imap",
            "email": sender,
            "imap": server(imap.host, imap.imap_port, sender, imap.password),
            "smtp": server(smtp.host, smtp.port, sender, smtp.password),
        },
    )
    assert mailbox.status_code == 201, mailbox.json
    sequence = api.post(
        "/api/v1/sequences",
        {
            "name": "Intro",
            "mailbox_id": mailbox.json["id"],
            # About what is sent, not when: any day, any hour (the default is Mon-Fri 08-18).
            "send_window": ANY_TIME,
            "steps": [
                {
                    "delay_seconds": 0,
                    "subject": "Hello {{first_name}}",
                    "body_html": "<p>Hi {{first_name}}, a quick question.</p>",
                },
                {
                    "delay_seconds": OTHER_STEP_2_DELAY,
                    "body_html": "<p>Just bumping this.</p>",
                    "same_thread": True,
                },
            ],
        },
    )
    assert sequence.status_code == 201, sequence.json
    enrolled = {}
    for who, (address, name) in people.items():
        answer = api.post(
            "/api/v1/enrollments",
            {"sequence_id": sequence.json["id"], "email": address, "name": name},
        )
        assert answer.status_code == 201, answer.json
        enrolled[who] = int(answer.json["id"])
    return enrolled
