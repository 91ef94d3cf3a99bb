"""Stop at the company, on both engines: a reply ends the live enrolments of its company.

Mail goes through the real path (`handle_inbound` → classify → match → rule),
as in test_signals.py: the step is claimed and recorded as sent by the real
bookkeeping, the answer is built the way a mail client writes it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from flask import Flask
from sqlalchemy import select

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Enrollment, Mailbox, Prospect, Sequence, SequenceStep, Team, utcnow
from tests.conftest import ApiClient, create_user
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.test_app_compose import add_mailbox
from tests.integration.test_app_pages import signed_in
from tests.integration.test_app_sequences import ANY_TIME, post, text
from tests.integration.test_feed import PASSWORD
from tests.integration.test_salesforce_outbox import salesforce
from tests.integration.test_signals import out_of_office, person_reply
from worker.salesforce.outbox import flush_team
from worker.sequences import claiming, delivering, enrolling
from worker.sync.base import SendResult
from worker.sync.inbound import MailboxRef, Outcome, handle_inbound
from worker.sync.mime import summarize_headers

pytestmark = pytest.mark.integration

__all__ = ["salesforce"]  # a fixture, used by name

ABM = "abm@seller.test"
WEBINAR = "webinar@seller.test"


def _sequence(team_id: int, mailbox_id: int, name: str, stop: bool) -> Sequence:
    sequence = Sequence(team_id=team_id, mailbox_id=mailbox_id, name=name, stop_at_company=stop)
    sequence.steps = [
        SequenceStep(position=0, delay_seconds=0, subject="Hello", body_html="<p>One</p>"),
        SequenceStep(position=1, delay_seconds=3600, subject="Again", body_html="<p>Two</p>"),
    ]
    return sequence


@pytest.fixture
def world(env: Settings) -> dict[str, int]:
    """Sequence "abm" stops at the company; "webinar" does not. Who is enrolled where below."""
    now = utcnow() - timedelta(seconds=1)
    people = {
        "abm": [
            "dana@acme.test",
            "bob@acme.test",
            "eve@gmail.com",
            "ann@acme-group.test",
            "zed@other.test",
        ],
        "webinar": ["carol@acme.test", "dana@acme.test", "frank@gmail.com", "ivy@acme.test"],
    }
    ids: dict[str, int] = {}
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        for name, stop in (("abm", True), ("webinar", False)):
            # A mailbox each: one mailbox's spacing between sends never holds a step here.
            mailbox = Mailbox(
                team_id=team.id,
                kind="imap",
                email=f"{name}@seller.test",
                credentials_encrypted=encrypt_json({}),
            )
            session.add(mailbox)
            session.flush()
            sequence = _sequence(team.id, mailbox.id, name, stop)
            session.add(sequence)
            session.flush()
            for email in people[name]:
                enrollment = enrolling.enroll(
                    session, sequence=sequence, email=email, name=None, now=now
                )
                ids[f"{name}:{email}"] = enrollment.id
        ids["team"] = team.id
    return ids


def send(enrollment_id: int) -> str:
    """Claim the due step and record it sent (the real bookkeeping); its Message-ID."""
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, utcnow())
        assert sent is not None
        sent_id, message_id = sent.id, sent.message_id
    delivering._record_sent(sent_id, SendResult(message_id=message_id))
    return message_id


def deliver(raw: bytes, sequence: str) -> Outcome:
    """`raw` arrives in the mailbox of `sequence` and goes through the real inbound path."""
    with session_scope() as session:
        mailbox = session.scalars(
            select(Mailbox).where(Mailbox.email == f"{sequence}@seller.test")
        ).one()
        ref = MailboxRef(mailbox.id, mailbox.team_id, mailbox.email)
    with session_scope() as session:
        return handle_inbound(session, ref, summarize_headers(raw, make_msgid()), raw)


def states(ids: dict[str, int]) -> dict[str, tuple[str, str | None]]:
    with session_scope() as session:
        return {
            key: (e.state, e.state_reason)
            for key, enrollment_id in ids.items()
            if ":" in key and (e := session.get_one(Enrollment, enrollment_id))
        }


def set_accounts(accounts: dict[str, str]) -> None:
    with session_scope() as session:
        for email, account in accounts.items():
            prospect = session.scalars(select(Prospect).where(Prospect.email == email)).one()
            prospect.salesforce_account_id = account


def test_a_reply_stops_every_live_enrolment_at_the_company(world: dict[str, int]) -> None:
    message_id = send(world["abm:dana@acme.test"])
    outcome = deliver(person_reply(message_id, "dana@acme.test", ABM, "Interested."), "abm")
    assert outcome.kind == "reply"

    now = states(world)
    assert now["abm:dana@acme.test"] == ("replied", "reply from dana@acme.test")
    colleague = ("finished", "reply from a colleague at acme.test")
    # Every live enrolment at acme.test, in any sequence of the team.
    assert now["abm:bob@acme.test"] == colleague
    assert now["webinar:carol@acme.test"] == colleague
    assert now["webinar:ivy@acme.test"] == colleague
    assert now["webinar:dana@acme.test"] == ("finished", "replied in another sequence")
    # Other domains (a look-alike too) and free mail are not the company.
    for key in ("abm:eve@gmail.com", "abm:ann@acme-group.test", "abm:zed@other.test",
                "webinar:frank@gmail.com"):  # fmt: skip
        assert now[key] == ("active", "enrolled"), key


def test_free_mail_people_are_not_colleagues(world: dict[str, int]) -> None:
    message_id = send(world["abm:eve@gmail.com"])
    deliver(person_reply(message_id, "eve@gmail.com", ABM, "Sure, let's talk."), "abm")
    now = states(world)
    assert now["abm:eve@gmail.com"][0] == "replied"
    assert now["webinar:frank@gmail.com"] == ("active", "enrolled")
    assert [k for k, (state, _) in now.items() if state != "active"] == ["abm:eve@gmail.com"]


def test_the_salesforce_account_decides_when_both_are_known(world: dict[str, int]) -> None:
    # ann is at another domain but the same Account; bob shares the domain but
    # belongs to another Account; carol has no Account: the domain decides.
    set_accounts(
        {
            "dana@acme.test": "001000000000001AAA",
            "ann@acme-group.test": "001000000000001AAA",
            "bob@acme.test": "001000000000002AAA",
        }
    )
    message_id = send(world["abm:dana@acme.test"])
    deliver(person_reply(message_id, "dana@acme.test", ABM, "Call me."), "abm")
    now = states(world)
    assert now["abm:ann@acme-group.test"][0] == "finished"
    assert now["abm:bob@acme.test"] == ("active", "enrolled")
    assert now["webinar:carol@acme.test"][0] == "finished"


def test_auto_replies_and_sequences_without_the_option_stop_nobody_else(
    world: dict[str, int],
) -> None:
    message_id = send(world["abm:dana@acme.test"])
    deliver(out_of_office(message_id, "dana@acme.test", ABM, "I am out of the office."), "abm")
    assert states(world)["abm:bob@acme.test"] == ("active", "enrolled")

    # A real reply on the webinar sequence (option off): only that enrolment ends.
    message_id = send(world["webinar:carol@acme.test"])
    reply = EmailMessage()
    reply["From"] = "carol@acme.test"
    reply["To"] = WEBINAR
    reply["Subject"] = "Re: Hello"
    reply["Message-ID"] = make_msgid(domain="acme.test")
    reply["In-Reply-To"] = message_id
    reply.set_content("Yes please.")
    deliver(reply.as_bytes(), "webinar")
    now = states(world)
    assert now["webinar:carol@acme.test"][0] == "replied"
    assert now["webinar:ivy@acme.test"] == ("active", "enrolled")
    assert now["abm:bob@acme.test"] == ("active", "enrolled")


def test_the_option_is_set_on_the_settings_page_and_through_the_api(
    app: Flask, env: Settings
) -> None:
    token = create_user(app, "rep@s.test", "Sellers", "--password", PASSWORD)
    mailbox_id = add_mailbox("rep@s.test")
    client = signed_in(app, "rep@s.test")
    created = post(
        client,
        "/sequences/new",
        name="ABM",
        mailbox_id=str(mailbox_id),
        stop_at_company="1",
        **ANY_TIME,
    )
    assert created.status_code == 302, text(created)
    sequence_id = int(re.findall(r"/sequences/(\d+)", created.headers["Location"])[0])
    form = text(client.get(f"/sequences/{sequence_id}/settings"))
    assert re.search(r'name="stop_at_company"[^>]*checked', form)
    with session_scope() as session:
        assert session.get_one(Sequence, sequence_id).stop_at_company is True
    saved = post(
        client, f"/sequences/{sequence_id}/settings", name="ABM", mailbox_id=str(mailbox_id),
        **ANY_TIME,
    )  # fmt: skip
    assert saved.status_code == 302, text(saved)
    with session_scope() as session:
        assert session.get_one(Sequence, sequence_id).stop_at_company is False

    api = ApiClient(app.test_client(), token)
    step = {"delay_seconds": 0, "subject": "Hi", "body_html": "<p>Hi</p>"}
    body = {"name": "API", "mailbox_id": mailbox_id, "steps": [step], "stop_at_company": True}
    response = api.post("/api/v1/sequences", body)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["stop_at_company"] is True
    fetched = api.get(f"/api/v1/sequences/{response.get_json()['id']}").get_json()
    assert fetched["stop_at_company"] is True
    body.pop("stop_at_company")
    assert api.post("/api/v1/sequences", body).get_json()["stop_at_company"] is False


def test_the_account_comes_from_salesforce_when_the_outbox_finds_the_contact(
    world: dict[str, int], salesforce: FakeSalesforce
) -> None:
    # dana's and ann's Contacts are one Account's, on different domains.
    account = salesforce.add_account("Acme Group")
    salesforce.add_contact("dana@acme.test", account_id=account)
    salesforce.add_contact("ann@acme-group.test", account_id=account)
    salesforce.add_contact("bob@acme.test", account_id=salesforce.add_account("Acme Labs"))
    message_id = send(world["abm:dana@acme.test"])
    for key in ("abm:ann@acme-group.test", "abm:bob@acme.test"):
        send(world[key])  # their sent Tasks look them up too
    assert flush_team(world["team"]).done == 3
    with session_scope() as session:
        accounts = dict(
            session.execute(select(Prospect.email, Prospect.salesforce_account_id)).all()
        )
    assert accounts["dana@acme.test"] == accounts["ann@acme-group.test"] == account
    assert accounts["bob@acme.test"] not in (None, account)
    assert accounts["carol@acme.test"] is None

    deliver(person_reply(message_id, "dana@acme.test", ABM, "Let's talk."), "abm")
    now = states(world)
    assert now["abm:ann@acme-group.test"][0] == "finished"  # same Account
    assert now["abm:bob@acme.test"] == ("active", "enrolled")  # another Account
    assert now["webinar:carol@acme.test"][0] == "finished"  # no Account: the domain
