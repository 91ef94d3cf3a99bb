"""Erasing a person, on both engines: nothing in any table names them afterwards.

The person goes through the real paths first: enrolled, a step claimed and
recorded as sent (the pixel, the click links and a document link made by the
real outgoing message), a reply through `handle_inbound`, an open and a click
through the events worker, a document visit through the viewer. Then the API
erases them, and every text, JSON and binary column of every table of the
database (reflected from the database itself, not from our models) is read
for their address and their name.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import MetaData, select, update

from core import db as core_db
from core import redis as core_redis
from core.crypto import encrypt_json
from core.db import session_scope
from core.documents.tokens import link_token
from core.erasure import address_hash
from core.models import (
    DocumentLink,
    Enrollment,
    Mailbox,
    MessageDocument,
    OutboxStatus,
    Prospect,
    SalesforceOutbox,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    TrackingHit,
    User,
    utcnow,
)
from tests.conftest import ApiClient, create_user
from tests.fixtures.documents import samples
from tests.integration.test_app_pages import csrf
from tests.integration.test_app_sequences import make_sequence, post, rep, text
from tests.integration.test_documents_viewer import (
    PASSWORD,
    beacon,
    open_viewer,
    sign_in,
    started_ago,
)
from tests.integration.test_events_worker import Sent, drain, hit
from tests.integration.test_signals import deliver_inbound, person_reply
from worker import events
from worker.documents.jobs import process_document_job
from worker.erasure import erase_person
from worker.sequences import claiming, delivering, enrolling
from worker.sequences.messages import outgoing_message
from worker.sync.base import SendResult

pytestmark = pytest.mark.integration

__all__ = ["rep"]  # a fixture, used by name

SENDER = "rep@seller.test"
ADDRESS = "quilla.zyx@prospect-corp.test"
NAME = "Quilla Zyxwander"
COLLEAGUE = "bob@prospect-corp.test"
TASK_ID = "00T5e00000AbCdEFGH"


def scan(*needles: str) -> list[str]:
    """Every table.column (reflected from the database) whose value contains a needle."""
    engine = core_db.get_engine()
    metadata = MetaData()
    metadata.reflect(engine)
    lowered = [n.lower() for n in needles]
    found: list[str] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for column, value in row._mapping.items():
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        text = bytes(value).decode("latin-1")
                    else:
                        text = str(value)
                    if any(n in text.lower() for n in lowered):
                        found.append(f"{table.name}.{column}")
    return sorted(set(found))


def _setup(app: Flask, client: FlaskClient) -> dict[str, Any]:
    token = create_user(app, SENDER, "Sellers", "--plan", "team", "--password", PASSWORD)
    response = client.post(
        "/api/v1/documents",
        data={"file": (io.BytesIO(samples.pdf_bytes(1, title="Pricing")), "pricing.pdf")},
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
    )
    document_id = int(response.get_json()["id"])
    assert process_document_job(document_id) == "ready"
    now = utcnow()
    with session_scope() as session:
        team = session.scalars(select(Team)).one()
        user = session.scalars(select(User)).one()
        mailbox = Mailbox(
            team_id=team.id,
            user_id=user.id,
            kind="imap",
            email=SENDER,
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [
            SequenceStep(
                position=0,
                delay_seconds=0,
                subject="Hello {{first_name}}",
                body_html='<p>Hi {{first_name}}, <a href="https://seller.example/pricing">'
                "pricing</a></p>",
            ),
            SequenceStep(position=1, delay_seconds=3600, subject="Again", body_html="<p>2</p>"),
        ]
        session.add(sequence)
        session.flush()
        session.add(
            MessageDocument(team_id=team.id, document_id=document_id, step_id=sequence.steps[0].id)
        )
        person = enrolling.enroll(session, sequence=sequence, email=ADDRESS, name=NAME, now=now)
        colleague = enrolling.enroll(
            session, sequence=sequence, email=COLLEAGUE, name="Bob Stone", now=now
        )
        ids: dict[str, Any] = {
            "team": team.id,
            "mailbox": mailbox.id,
            "sequence": sequence.id,
            "enrollment": person.id,
            "colleague": colleague.id,
            "token": token,
        }
    with session_scope() as session:
        sent = claiming.claim_due_step(session, ids["enrollment"], utcnow())
        assert sent is not None
        # The real message: pixel, click link and the document link are made here.
        html = outgoing_message(
            session, sent, session.get_one(Mailbox, ids["mailbox"]), tracked=True
        ).html
        assert "/o/" in html and "/c/" in html and "/d/" in html
        ids["sent"], ids["message_id"] = sent.id, sent.message_id
    delivering._record_sent(ids["sent"], SendResult(message_id=ids["message_id"]))
    return ids


@pytest.fixture
def person(app: Flask, client: FlaskClient) -> dict[str, Any]:
    return _setup(app, client)


def test_erasing_a_person_leaves_nothing_that_names_them(
    app: Flask, client: FlaskClient, person: dict[str, Any]
) -> None:
    # A reply that names them, on the real inbound path.
    reply = person_reply(
        person["message_id"],
        ADDRESS,
        SENDER,
        f"Thanks, this is {NAME}: write to {ADDRESS} any time.",
    )
    assert deliver_inbound(reply, "uid-7").kind == "reply"
    # They also answered their colleague's email: that reply names them too.
    with session_scope() as session:
        bob = claiming.claim_due_step(session, person["colleague"], utcnow())
        assert bob is not None
        bob_id, bob_message_id = bob.id, bob.message_id
    delivering._record_sent(bob_id, SendResult(message_id=bob_message_id))
    answer_for_bob = person_reply(bob_message_id, ADDRESS, SENDER, f"Bob is away. {NAME}")
    assert deliver_inbound(answer_for_bob, "uid-8").kind == "reply"
    # An open and a click, drained by the real events worker.
    stream = core_redis.get_redis()
    events.ensure_group(stream)
    sent = Sent(person["sent"], person["team"], person["enrollment"], person["sequence"])
    hit(stream, sent)
    hit(stream, sent, kind="click", url="https://seller.example/pricing")
    assert drain(stream).stored == 2
    # A document visit through the viewer.
    with session_scope() as session:
        link = session.scalars(select(DocumentLink)).one()
        visit_link = link_token(link.id, link.document_id, link.sent_message_id, 0)
    _response, visit = open_viewer(client, visit_link)
    started_ago(visit, 20)
    assert beacon(client, visit_link, visit, 1, {"1": 1500}).status_code == 204
    # One Task already in Salesforce: it stays there, and the answer says so.
    with session_scope() as session:
        session.execute(
            update(SalesforceOutbox)
            .where(SalesforceOutbox.kind == "task_sent")
            .values(status=OutboxStatus.DONE, salesforce_id=TASK_ID)
        )
        assert session.scalars(select(TrackingHit)).all()

    before = scan(ADDRESS, NAME)
    assert {"prospects.email", "inbound_messages.text", "salesforce_outbox.who_email"} <= set(
        before
    )

    api = ApiClient(client, person["token"])
    response = api.post("/api/v1/prospects/erase", {"email": ADDRESS.upper()})
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["prospect_found"] is True
    assert answer["salesforce_tasks"] == [TASK_ID]
    assert TASK_ID in answer["salesforce"]
    assert "never deletes CRM data" in answer["salesforce"]
    assert answer["deleted"]["tracking_hits"] == 2
    assert answer["deleted"]["document_visits"] == 1
    assert answer["deleted"]["inbound_messages"] == 2  # theirs, and theirs to Bob's email

    assert scan(ADDRESS, NAME) == []
    # Their colleague stays, with the history of that reply minus who wrote it.
    with session_scope() as session:
        colleague = session.get_one(Enrollment, person["colleague"])
        assert (colleague.state, colleague.state_reason) == ("replied", "reply from [erased]")
        assert session.get_one(SentMessage, bob_id).to_addrs == [COLLEAGUE]
    assert "prospects.email" in scan(COLLEAGUE)

    # Never again: enrolling, the CSV import's check and do-not-track all refuse,
    # and the refusal stores nothing.
    refused = api.post("/api/v1/enrollments", {"sequence_id": person["sequence"], "email": ADDRESS})
    assert refused.status_code == 422
    assert "this person asked to be erased" in refused.get_json()["error"]["message"]
    flag = api.post("/api/v1/prospects/do-not-track", {"email": ADDRESS, "do_not_track": True})
    assert flag.status_code == 422
    assert scan(ADDRESS, NAME) == []


def test_the_suppression_record_is_a_keyed_hash(person: dict[str, Any]) -> None:
    with session_scope() as session:
        sequence = session.get_one(Sequence, person["sequence"])
        erase_person(session, team_id=person["team"], email=ADDRESS, user_id=None, now=utcnow())
        session.flush()
        with pytest.raises(enrolling.EnrollmentError, match="asked to be erased"):
            enrolling.enroll_many(
                session, sequence=sequence, people=[(f" {ADDRESS.upper()} ", None, None)],
                now=utcnow(),
            )  # fmt: skip
    stored = scan(address_hash(ADDRESS))
    assert stored == ["erased_addresses.address_hash"]
    # A plain hash of the address (what an attacker would try first) is not what is stored.
    assert scan(hashlib.sha256(ADDRESS.encode()).hexdigest()) == []


def test_do_not_track_means_no_pixel_no_rewritten_links_and_no_hits(
    client: FlaskClient, person: dict[str, Any]
) -> None:
    api = ApiClient(client, person["token"])
    response = api.post("/api/v1/prospects/do-not-track", {"email": ADDRESS, "do_not_track": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["do_not_track"] is True
    # Mail built for them from now on: the real links, no pixel, an untracked document link.
    with session_scope() as session:
        sent = session.get_one(SentMessage, person["sent"])
        html = outgoing_message(
            session, sent, session.get_one(Mailbox, person["mailbox"]), tracked=True
        ).html
        assert "/o/" not in html and "/c/" not in html
        assert 'href="https://seller.example/pricing"' in html
    # Hits still arriving for the mail sent before are dropped, never stored.
    stream = core_redis.get_redis()
    events.ensure_group(stream)
    sent_ref = Sent(person["sent"], person["team"], person["enrollment"], person["sequence"])
    hit(stream, sent_ref)
    hit(stream, sent_ref, kind="click", url="https://seller.example/pricing")
    stats = drain(stream)
    assert (stats.stored, stats.skipped) == (0, 2)
    with session_scope() as session:
        assert session.scalars(select(TrackingHit)).all() == []


def test_the_prospect_page_sets_do_not_track_and_erases_after_confirmation(
    client: FlaskClient, person: dict[str, Any]
) -> None:
    sign_in(client, SENDER)
    with session_scope() as session:
        prospect_id = session.scalars(select(Prospect.id).where(Prospect.email == ADDRESS)).one()
    page = client.get(f"/prospects/{prospect_id}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None and 'id="do-not-track"' not in page
    client.post(
        f"/prospects/{prospect_id}/tracking",
        data={"csrf_token": csrf.group(1), "do_not_track": "1"},
    )
    assert 'id="do-not-track"' in client.get(f"/prospects/{prospect_id}").get_data(as_text=True)

    wrong = client.post(
        f"/prospects/{prospect_id}/erase",
        data={"csrf_token": csrf.group(1), "confirm": "someone@else.test"},
    )
    assert wrong.status_code == 422
    assert "type their email address exactly" in wrong.get_data(as_text=True)
    assert "prospects.email" in scan(ADDRESS)

    done = client.post(
        f"/prospects/{prospect_id}/erase",
        data={"csrf_token": csrf.group(1), "confirm": ADDRESS},
        follow_redirects=True,
    )
    text = done.get_data(as_text=True)
    assert "Erased" in text and "never deletes CRM data" in text
    assert scan(ADDRESS, NAME) == []


def test_the_csv_import_sets_do_not_track_and_leaves_erased_people_out(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    with session_scope() as session:
        team_id = session.get_one(Sequence, sequence_id).team_id
        erase_person(session, team_id=team_id, email=ADDRESS, user_id=None, now=utcnow())
    csv_text = (
        "email,name,Do not track\n"
        "dana@acme.test,Dana,yes\n"
        "fox@fbi.test,Fox,no\n"
        f"{ADDRESS},{NAME},\n"
        "walter@fbi.test,Walter,maybe\n"
    )
    preview = client.post(
        f"/sequences/{sequence_id}/import",
        data={"csrf_token": csrf(client), "file": (io.BytesIO(csv_text.encode()), "list.csv")},
        content_type="multipart/form-data",
    )
    page = text(preview)
    assert f"{ADDRESS}: this person asked to be erased" in page
    assert "Do not track: “maybe” is neither yes nor no" in page
    confirm_path = re.search(r'action="(/sequences/\d+/import/[^"]+)"', page)
    assert confirm_path is not None
    assert post(client, confirm_path.group(1), expected="2").status_code == 302
    with session_scope() as session:
        flags = dict(session.execute(select(Prospect.email, Prospect.do_not_track)).all())
    assert flags == {"dana@acme.test": True, "fox@fbi.test": False}
    assert scan(ADDRESS, NAME) == []
