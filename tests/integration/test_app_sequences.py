"""Templates, sequences, CSV import, enrolments and the funnel through the web app.

Flask test client against the real database (SQLite and PostgreSQL) and Redis;
sends are claimed by the real engine (`claim_due_step`), with the provider
hand-over left out where the test is about what the app shows.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from config import Settings
from core.db import session_scope
from core.events import natural_key, record_event
from core.models import (
    EmailTemplate,
    Enrollment,
    EnrollmentState,
    EnrollmentTransition,
    InboundMessage,
    Mailbox,
    Prospect,
    SalesforceOutbox,
    SentMessage,
    Sequence,
    SequenceStep,
    utcnow,
)
from tests.conftest import create_user
from tests.integration.test_app_compose import add_mailbox
from tests.integration.test_app_pages import csrf, signed_in
from tests.integration.test_feed import PASSWORD
from worker.sequences import claiming, delivering, enrolling, messages
from worker.sync.base import SendResult

pytestmark = pytest.mark.integration


@pytest.fixture
def rep(app: Flask, env: Settings) -> tuple[FlaskClient, int]:
    create_user(app, "rep@s.test", "Sellers", "--password", PASSWORD, "--name", "Riley Rep")
    mailbox_id = add_mailbox("rep@s.test")
    return signed_in(app, "rep@s.test"), mailbox_id


def post(client: FlaskClient, path: str, **data: Any) -> Any:
    return client.post(path, data={"csrf_token": csrf(client), **data})


def text(response: Any) -> str:
    page: str = response.get_data(as_text=True)
    return page


# These tests are about what is sent, not when: a window open any day, any hour.
ANY_TIME = {
    "send_window": "1",
    "send_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "send_start": "00:00",
    "send_end": "24:00",
}


def make_sequence(client: FlaskClient, mailbox_id: int) -> int:
    created = post(client, "/sequences/new", name="Intro", mailbox_id=str(mailbox_id), **ANY_TIME)
    assert created.status_code == 302
    sequence_id = int(re.findall(r"/sequences/(\d+)", created.headers["Location"])[0])
    assert created.headers["Location"].endswith("/steps/new")
    first = post(
        client,
        f"/sequences/{sequence_id}/steps/new",
        delay="0",
        unit="minutes",
        subject="Quick question, {{first_name}}",
        body_html="<p>Hi {{first_name}}, how is {{company}}?</p>",
    )
    assert first.status_code == 302, text(first)
    second = post(
        client,
        f"/sequences/{sequence_id}/steps/new",
        delay="3",
        unit="days",
        subject="",
        same_thread="1",
        body_html="Bumping this.\n\n{{sender_first_name}}",
    )
    assert second.status_code == 302, text(second)
    return sequence_id


def test_templates_preview_with_a_real_prospect_and_refuse_unknown_placeholders(
    rep: tuple[FlaskClient, int],
) -> None:
    client, _ = rep
    refused = post(
        client,
        "/templates/new",
        name="Intro",
        subject="Hi {{frist_name}}",
        body_html="<p>Hello</p><script>x()</script>",
    )
    assert refused.status_code == 422
    page = text(refused)
    assert "Subject: {{frist_name}} is not a placeholder. Use one of {{first_name}}" in page
    assert 'id="f-subject"' in page and 'aria-invalid="true" autofocus' in page
    saved = post(
        client,
        "/templates/new",
        name="Intro",
        subject="Hi {{first_name}}",
        body_html='<p onclick="x()">Hello {{first_name}} at {{company}}</p><script>x()</script>',
    )
    assert saved.status_code == 302
    with session_scope() as session:
        template = session.scalars(select(EmailTemplate)).one()
        assert template.body_html == "<p>Hello {{first_name}} at {{company}}</p>"
        team_id = template.team_id
        session.add(Prospect(team_id=team_id, email="dana@acme.test", name="Dana Scully"))
    page = text(client.get(f"/templates/{template.id}?preview_prospect=dana@acme.test"))
    assert '<span id="preview-subject">Hi Dana</span>' in page
    assert "{{company}} has no value for dana@acme.test" in page
    srcdoc = re.search(r'srcdoc="([^"]*)"', page)
    assert srcdoc is not None
    assert (
        "Hello Dana at &lt;mark class=&#34;missing-value&#34;&gt;[company missing]"
        in srcdoc.group(1)
    )
    # The JSON preview the editor uses says the same.
    live = client.post(
        "/preview",
        data={
            "subject": "Hi {{first_name}}",
            "body_html": "<p>{{company|your team}}</p>",
            "preview_prospect": "dana@acme.test",
        },
        headers={"X-CSRF-Token": csrf(client)},
    )
    assert live.status_code == 200
    assert live.get_json()["subject"] == "Hi Dana" and live.get_json()["problems"] == []
    assert "<p>your team</p>" in live.get_json()["document"]
    # A compose page started from the template carries its text.
    assert "Hi {{first_name}}" in text(client.get(f"/emails/new?template={template.id}"))
    deleted = post(client, f"/templates/{template.id}/delete")
    assert deleted.status_code == 302
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(EmailTemplate)) == 0


def test_steps_are_edited_with_named_errors_and_only_the_last_unsent_step_goes(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    bad = post(
        client,
        f"/sequences/{sequence_id}/steps/2",
        delay="-1",
        unit="days",
        subject="",
        body_html="",
    )
    assert bad.status_code == 422
    page = text(bad)
    assert "Wait: cannot be negative." in page and "Body: write the email." in page
    assert "Subject: write a subject." in page  # not same-thread any more: it needs one
    edited = post(
        client,
        f"/sequences/{sequence_id}/steps/2",
        delay="2",
        unit="hours",
        subject="",
        same_thread="1",
        body_html="<p>Bumping this, {{first_name|there}}.</p>",
    )
    assert edited.status_code == 302
    with session_scope() as session:
        steps = session.scalars(select(SequenceStep).order_by(SequenceStep.position)).all()
        assert [(s.delay_seconds, s.subject, s.same_thread) for s in steps] == [
            (0, "Quick question, {{first_name}}", False),
            (7200, "", True),
        ]
        assert steps[1].body_html == "<p>Bumping this, {{first_name|there}}.</p>"
    page = text(client.get(f"/sequences/{sequence_id}"))
    assert "at once" in page and "2 hours after the previous step · in the same thread" in page
    refused = post(client, f"/sequences/{sequence_id}/steps/1/delete")
    assert "only the last step can be removed" in text(client.get(refused.headers["Location"]))
    removed = post(client, f"/sequences/{sequence_id}/steps/2/delete")
    assert "Removed step 2." in text(client.get(removed.headers["Location"]))


CSV_GOOD_AND_BAD = (
    "\ufeffEmail Address;First name;Last name;Company;Notes\r\n"
    "dana@acme.test;Dana;Scully;Acme;a\r\n"
    "not-an-email;Fox;Mulder;FBI;b\r\n"
    '"walter@fbi.test";Walter;Skinner;"FBI; HQ";c\r\n'
    "\r\n"
    "DANA@acme.test;Dana;Again;Acme;d\r\n"
    "monica@fbi.test;Monica;Reyes;;e\r\n"
)


def test_csv_import_reports_bad_rows_by_line_and_enrols_the_rest_at_once(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    # Already opted out: refused at the preview, with the line.
    with session_scope() as session:
        team_id = session.get_one(Sequence, sequence_id).team_id
        session.add(Prospect(team_id=team_id, email="monica@fbi.test", opted_out_at=utcnow()))
    preview = client.post(
        f"/sequences/{sequence_id}/import",
        data={
            "csrf_token": csrf(client),
            "file": (io.BytesIO(CSV_GOOD_AND_BAD.encode()), "list.csv"),
        },
        content_type="multipart/form-data",
    )
    assert preview.status_code == 200
    page = text(preview)
    assert 'data-ready="2"' in page and 'data-bad="3"' in page
    bad_rows = re.findall(r'<tr data-line="(\d+)"><td>\d+</td><td>([^<]+)</td>', page)
    assert bad_rows == [
        ("3", "Email Address: “not-an-email” is not a valid email address"),
        ("6", "dana@acme.test is already on line 2"),
        ("7", f"monica@fbi.test is on the opt-out list since {utcnow():%Y-%m-%d}"),
    ]
    assert "Columns not used: Notes." in page
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 0  # nothing yet
    confirm_path = re.search(r'action="(/sequences/\d+/import/[^"]+)"', page)
    assert confirm_path is not None
    done = post(client, confirm_path.group(1), expected="2")
    assert done.status_code == 302
    assert "Enrolled 2 prospects from the file; 3 rows left out." in text(
        client.get(done.headers["Location"])
    )
    with session_scope() as session:
        rows = session.execute(
            select(Prospect.email, Prospect.name, Prospect.company)
            .join(Enrollment, Enrollment.prospect_id == Prospect.id)
            .order_by(Prospect.email)
        ).all()
        assert [tuple(r) for r in rows] == [
            ("dana@acme.test", "Dana Scully", "Acme"),
            ("walter@fbi.test", "Walter Skinner", "FBI; HQ"),
        ]
    # The same file again: everyone is now already enrolled, and the token is spent.
    again = post(client, confirm_path.group(1), expected="2")
    assert "expired" in text(client.get(again.headers["Location"]))


def test_a_confirm_that_would_surprise_enrols_nobody(rep: tuple[FlaskClient, int]) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    csv_text = "email,name\ndana@acme.test,Dana\nfox@fbi.test,Fox\n"
    preview = client.post(
        f"/sequences/{sequence_id}/import",
        data={"csrf_token": csrf(client), "file": (io.BytesIO(csv_text.encode()), "list.csv")},
        content_type="multipart/form-data",
    )
    confirm_path = re.search(r'action="(/sequences/\d+/import/[^"]+)"', text(preview))
    assert confirm_path is not None
    # Meanwhile someone enrols Fox by hand.
    assert post(client, f"/sequences/{sequence_id}/enroll", email="fox@fbi.test").status_code == 302
    shown_again = post(client, confirm_path.group(1), expected="2")
    assert shown_again.status_code == 200
    page = text(shown_again)
    assert "Some rows changed since the preview" in page
    assert "fox@fbi.test is already enrolled in this sequence" in page
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 1  # Fox only


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "email,name\ndana@acme.test,Dana Müller\n".encode("cp1252"),
            "Line 2 is not UTF-8 text (byte 0xFC)",
        ),
        (b"PK\x03\x04rest-of-a-zip", "This is a spreadsheet file (Excel), not CSV text."),
        (
            b"name,company\nDana,Acme\n",
            "Line 1 must name the columns, one of them “email”. Found: name, company.",
        ),
        (
            b"email\n" + b"x@y.test\n" * 350_000,
            "The file is over the 2 MB limit (5,000 rows at most).",
        ),
        (b"email,name\n", "The file names its columns but has no rows under them."),
    ],
)
def test_unreadable_files_are_refused_with_what_to_do(
    rep: tuple[FlaskClient, int], content: bytes, message: str
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    response = client.post(
        f"/sequences/{sequence_id}/import",
        data={"csrf_token": csrf(client), "file": (io.BytesIO(content), "list.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    page = text(response)
    assert message in page.replace("&#34;", '"').replace("&#39;", "'")
    assert 'aria-invalid="true" autofocus' in page


def test_a_missing_value_holds_the_enrolment_until_filled_in_and_resumed(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    enrolled = post(
        client, f"/sequences/{sequence_id}/enroll", email="dana@acme.test", name="Dana Scully"
    )
    assert enrolled.status_code == 302
    with session_scope() as session:
        enrollment = session.scalars(select(Enrollment)).one()
        enrollment_id, prospect_id = enrollment.id, enrollment.prospect_id
    # Step 1 needs {{company}}: Dana has none, so nothing is claimed and she waits.
    with session_scope() as session:
        assert claiming.claim_due_step(session, enrollment_id, utcnow()) is None
    with session_scope() as session:
        held = session.get_one(Enrollment, enrollment_id)
        assert (held.state, held.next_step, held.next_step_at) == ("paused", 0, None)
        assert (
            held.state_reason is not None
            and "step 1 needs a value for {{company}}" in held.state_reason
        )
        assert session.scalar(select(func.count()).select_from(SentMessage)) == 0
    page = text(client.get(f"/enrollments/{enrollment_id}"))
    assert 'data-state="paused"' in page and "needs a value for {{company}}" in page
    # The rep fills it in and resumes: the step goes out with the value.
    assert (
        post(client, f"/prospects/{prospect_id}", name="Dana Scully", company="Acme").status_code
        == 302
    )
    assert post(client, f"/enrollments/{enrollment_id}/resume").status_code == 302
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, utcnow())
        assert sent is not None and sent.subject == "Quick question, Dana"
        body = messages.outgoing_message(session, sent, session.get_one(Mailbox, sent.mailbox_id))
        assert "Hi Dana, how is Acme?" in body.html


def test_pause_resume_finish_and_the_history_with_the_reply_text(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    post(
        client,
        f"/sequences/{sequence_id}/enroll",
        email="dana@acme.test",
        name="Dana Scully",
        company="Acme",
    )
    post(
        client,
        f"/sequences/{sequence_id}/enroll",
        email="fox@fbi.test",
        name="Fox Mulder",
        company="FBI",
    )
    with session_scope() as session:
        dana, fox = session.scalars(select(Enrollment).order_by(Enrollment.id)).all()
        dana_id, fox_id = dana.id, fox.id
    assert post(client, f"/enrollments/{fox_id}/pause").status_code == 302
    with session_scope() as session:
        assert claiming.claim_due_step(session, fox_id, utcnow()) is None  # paused: nothing goes
    post(client, f"/enrollments/{fox_id}/resume")
    post(client, f"/enrollments/{fox_id}/finish")
    again = post(client, f"/enrollments/{fox_id}/pause")
    assert "Nothing changed: the enrolment is finished now" in text(
        client.get(again.headers["Location"])
    )
    with session_scope() as session:
        reasons = session.scalars(
            select(EnrollmentTransition.reason)
            .where(EnrollmentTransition.enrollment_id == fox_id)
            .order_by(EnrollmentTransition.id)
        ).all()
        assert reasons == [
            "enrolled",
            "paused by rep@s.test",
            "resumed by rep@s.test",
            "finished by rep@s.test",
        ]

    # Dana: step 1 sent, a person opens it, Apple prefetches it, she clicks and replies.
    with session_scope() as session:
        sent = claiming.claim_due_step(session, dana_id, utcnow())
        assert sent is not None
        sent_id, message_id, prospect_id = sent.id, sent.message_id, sent.prospect_id
    delivering._record_sent(sent_id, SendResult(message_id=message_id))
    with session_scope() as session:
        team_id = session.get_one(Enrollment, dana_id).team_id
        inbound = InboundMessage(
            team_id=team_id,
            mailbox_id=mailbox_id,
            provider_id="mid:<reply@acme.test>",
            sent_message_id=sent_id,
            kind="reply",
            from_addr="dana@acme.test",
            text="Yes, Tuesday works.",
        )
        session.add(inbound)
        session.flush()
        events: list[tuple[str, str, dict[str, Any]]] = [
            (
                "open",
                natural_key("open", sent_id, 0, 1, "probable"),
                {"probable": True, "hit_class": "apple_proxy"},
            ),
            ("open", natural_key("open", sent_id, 0, 2, "counted"), {"hit_class": "person"}),
            ("click", natural_key("click", sent_id, 0, 0, 2), {"url": "https://acme.test/p"}),
            (
                "reply",
                natural_key("reply", sent_id, "<reply@acme.test>"),
                {"from": "dana@acme.test"},
            ),
        ]
        for kind, key, data in events:
            event_id = record_event(
                session,
                team_id=team_id,
                key=key,
                kind=kind,
                sent_message_id=sent_id,
                enrollment_id=dana_id,
                prospect_id=prospect_id,
                inbound_message_id=inbound.id if kind == "reply" else None,
                data={"recipient": 0, **data},
            )
        enrolling.transition(
            session,
            dana_id,
            EnrollmentState.REPLIED,
            "reply from dana@acme.test",
            from_states={"active"},
            event_id=event_id,
        )
    page = text(client.get(f"/enrollments/{dana_id}"))
    assert 'id="enrollment-state" data-state="replied"' in page
    labels = re.findall(
        r'data-kind="([a-z_]+)">\s*<time[^>]*>[^<]*</time>\s*<span class="tl-label">([^<]+)</span>',
        page,
    )
    assert [k for k, _ in labels] == ["state", "reply", "click", "open", "open", "sent", "state"]
    assert ("open", "Probably opened (Apple Mail prefetch, not counted)") in labels
    assert '<blockquote class="reply-text">Yes, Tuesday works.</blockquote>' in page
    assert 'data-recipient="dana@acme.test" data-state="replied"' in page
    # The prospect page shows the same story, and the Salesforce link once resolved.
    prospect_page = text(client.get(f"/prospects/{prospect_id}"))
    assert (
        "Yes, Tuesday works." in prospect_page and "Not matched in Salesforce yet" in prospect_page
    )
    with session_scope() as session:
        session.execute(
            update(SalesforceOutbox)
            .where(SalesforceOutbox.who_email == "dana@acme.test")
            .values(who_id="003000000000001AAA", status="done")
        )
    assert "Not matched" in text(client.get(f"/prospects/{prospect_id}"))  # no org known: no link
    from core.models import SalesforceConnection

    with session_scope() as session:
        session.add(
            SalesforceConnection(team_id=team_id, instance_url="https://acme.my.salesforce.com")
        )
    linked = text(client.get(f"/prospects/{prospect_id}"))
    assert 'href="https://acme.my.salesforce.com/003000000000001AAA"' in linked
    assert "Open Contact 003000000000001AAA in Salesforce" in linked

    # The funnel: people and Apple apart.
    report = text(client.get(f"/reports/sequences/{sequence_id}"))
    step_1 = re.search(r'<tr data-step="1">(.*?)</tr>', report, re.S)
    assert step_1 is not None
    counts = dict(re.findall(r'data-stage="([a-z]+)"[^>]*>(\d+)', step_1.group(1)))
    assert counts == {
        "sent": "1",
        "opened": "1",
        "proxy": "0",
        "clicked": "1",
        "replied": "1",
        "bounced": "0",
    }
    assert 'data-stage="replied" data-count="1"' in report  # the chart's bar
    assert "<strong>1</strong> replied (50 %)" in report


def test_funnel_counts_apple_only_opens_apart_and_retries_once(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    for n in range(3):
        post(
            client,
            f"/sequences/{sequence_id}/enroll",
            email=f"p{n}@acme.test",
            name=f"P {n}",
            company="Acme",
        )
    with session_scope() as session:
        ids = session.scalars(select(Enrollment.id).order_by(Enrollment.id)).all()
        team_id = session.scalars(select(Enrollment.team_id)).first()
    sent_ids = []
    for enrollment_id in ids:
        with session_scope() as session:
            sent = claiming.claim_due_step(session, enrollment_id, utcnow())
            assert sent is not None
            sent_ids.append((sent.id, sent.message_id))
        delivering._record_sent(sent_ids[-1][0], SendResult(message_id=sent_ids[-1][1]))
    with session_scope() as session:
        assert team_id is not None
        # p0: Apple only. p1: Apple and a person. p2: nothing.
        for sent_id, tier, n in (
            (sent_ids[0][0], "probable", 1),
            (sent_ids[1][0], "probable", 1),
            (sent_ids[1][0], "counted", 2),
        ):
            record_event(
                session,
                team_id=team_id,
                key=natural_key("open", sent_id, 0, n, tier),
                kind="open",
                sent_message_id=sent_id,
                data={"probable": tier == "probable"},
            )
        # p2's step 1 is re-sent after a soft bounce: still one message.
        session.execute(
            update(Enrollment)
            .where(Enrollment.id == ids[2])
            .values(next_step=0, next_step_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope() as session:
        retry = claiming.claim_due_step(session, ids[2], utcnow())
        assert retry is not None and retry.attempt == 1
        retry_id, retry_mid = retry.id, retry.message_id
    delivering._record_sent(retry_id, SendResult(message_id=retry_mid))
    report = text(client.get(f"/reports/sequences/{sequence_id}"))
    step_1 = re.search(r'<tr data-step="1">(.*?)</tr>', report, re.S)
    assert step_1 is not None
    counts = dict(re.findall(r'data-stage="([a-z]+)"[^>]*>(\d+)', step_1.group(1)))
    assert counts == {
        "sent": "3",
        "opened": "1",
        "proxy": "1",
        "clicked": "0",
        "replied": "0",
        "bounced": "0",
    }
    overview = text(client.get("/reports"))
    assert f'data-sequence="{sequence_id}"' in overview


def test_enrolling_many_is_all_or_nothing(rep: tuple[FlaskClient, int]) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    with session_scope() as session:
        sequence = session.get_one(Sequence, sequence_id)
        session.add(
            Prospect(team_id=sequence.team_id, email="gone@acme.test", opted_out_at=utcnow())
        )
        session.add(Prospect(team_id=sequence.team_id, email="known@acme.test", name="Known"))
    people: list[tuple[str, str | None, str | None]] = [
        ("new@acme.test", "New Person", "Acme"),
        ("known@acme.test", "Other Name", "Acme"),
        ("gone@acme.test", None, None),
    ]
    with (
        session_scope() as session,
        pytest.raises(
            enrolling.EnrollmentError, match=r"gone@acme\.test is on the opt-out list since "
        ),
    ):
        enrolling.enroll_many(
            session, sequence=session.get_one(Sequence, sequence_id), people=people, now=utcnow()
        )
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Enrollment)) == 0
        assert session.scalar(select(Prospect).where(Prospect.email == "new@acme.test")) is None
    with session_scope() as session:
        enrolled = enrolling.enroll_many(
            session,
            sequence=session.get_one(Sequence, sequence_id),
            people=people[:2],
            now=utcnow(),
        )
        assert enrolled == 2
    with session_scope() as session:
        rows = session.execute(
            select(
                Prospect.email,
                Prospect.name,
                Prospect.company,
                Enrollment.state,
                Enrollment.next_step_at,
            )
            .join(Enrollment, Enrollment.prospect_id == Prospect.id)
            .order_by(Prospect.email)
        ).all()
        assert [r[:4] for r in rows] == [
            ("known@acme.test", "Known", "Acme", "active"),  # the name kept, the blank filled
            ("new@acme.test", "New Person", "Acme", "active"),
        ]
        assert all(r[4] is not None for r in rows)
        assert session.scalar(select(func.count()).select_from(EnrollmentTransition)) == 2
    with (
        session_scope() as session,
        pytest.raises(enrolling.EnrollmentError, match="already enrolled"),
    ):
        enrolling.enroll_many(
            session,
            sequence=session.get_one(Sequence, sequence_id),
            people=people[:1],
            now=utcnow(),
        )
