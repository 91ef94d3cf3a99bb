"""Send windows and prospect time zones in the web app: the forms, what the pages say, CSV.

Flask test client against the real databases and Redis; the wait reason comes
from the real claim (`claim_due_step`) at a fixed time.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import session_scope
from core.models import Enrollment, Prospect, Sequence
from tests.integration.test_app_pages import csrf
from tests.integration.test_app_sequences import make_sequence, post, rep, text
from worker.sequences import claiming

pytestmark = pytest.mark.integration
__all__ = ["rep"]  # the fixture, shared with test_app_sequences


def test_a_new_sequence_offers_weekdays_eight_to_six_and_refuses_bad_windows(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    form = text(client.get("/sequences/new"))
    checked = re.findall(r'name="send_days" value="(\w+)"[^>]*?( checked)?>', form)
    assert [day for day, on in checked if on] == ["mon", "tue", "wed", "thu", "fri"]
    assert 'value="08:00"' in form and 'value="18:00"' in form and 'value="UTC"' in form
    refused = post(
        client,
        "/sequences/new",
        name="Intro",
        mailbox_id=str(mailbox_id),
        send_window="1",
        time_zone="CEST",
        send_start="8am",
        send_end="18:00",
        holidays="24.12.2027",
    )
    assert refused.status_code == 422
    page = text(refused)
    assert "Time zone: unknown time zone &#39;CEST&#39;" in page
    assert "Send on: choose at least one day of the week." in page
    assert "From: give a time as HH:MM" in page
    assert "Holidays: “24.12.2027” is not a date like 2027-12-24." in page
    backwards = post(
        client,
        "/sequences/new",
        name="Intro",
        mailbox_id=str(mailbox_id),
        send_window="1",
        time_zone="UTC",
        send_days=["mon"],
        send_start="18:00",
        send_end="08:00",
    )
    assert backwards.status_code == 422
    assert "Until: the end (08:00) must be after the start (18:00)." in text(backwards)
    with session_scope() as session:
        assert session.scalars(select(Sequence)).all() == []


def test_a_window_is_saved_and_shown_on_the_sequence(rep: tuple[FlaskClient, int]) -> None:
    client, mailbox_id = rep
    created = post(
        client,
        "/sequences/new",
        name="Berlin",
        mailbox_id=str(mailbox_id),
        send_window="1",
        time_zone="europe/berlin",
        send_days=["tue", "thu"],
        send_start="09:30",
        send_end="17:00",
        holidays="2027-12-24, 2027-12-31",
    )
    assert created.status_code == 302, text(created)
    with session_scope() as session:
        sequence = session.scalars(select(Sequence)).one()
        assert (sequence.time_zone, sequence.send_days) == ("Europe/Berlin", 0b0001010)
        assert (sequence.send_start_minute, sequence.send_end_minute) == (570, 1020)
        assert sequence.holidays == ["2027-12-24", "2027-12-31"]
        sequence_id = sequence.id
    page = text(client.get(f"/sequences/{sequence_id}"))
    assert (
        "Sends Tue, Thu 09:30-17:00, 2 holidays in each prospect&#39;s zone (else Europe/Berlin)"
        in page
    )
    # The settings form shows it back, and a save that does not touch it keeps it.
    settings = text(client.get(f"/sequences/{sequence_id}/settings"))
    assert 'value="09:30"' in settings and "2027-12-24\n2027-12-31</textarea>" in settings
    renamed = post(
        client, f"/sequences/{sequence_id}/settings", name="Berlin 2", mailbox_id=str(mailbox_id)
    )
    assert renamed.status_code == 302
    with session_scope() as session:
        kept = session.get_one(Sequence, sequence_id)
        assert (kept.name, kept.time_zone, kept.send_days) == ("Berlin 2", "Europe/Berlin", 10)


def test_the_prospect_page_says_where_the_zone_came_from_and_a_person_can_set_it(
    rep: tuple[FlaskClient, int],
) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    enrolled = post(client, f"/sequences/{sequence_id}/enroll", email="anna@firma.de", name="Anna")
    assert enrolled.status_code == 302, text(enrolled)
    with session_scope() as session:
        prospect_id = session.scalars(select(Prospect.id)).one()
    page = text(client.get(f"/prospects/{prospect_id}"))
    assert "Europe/Berlin — from the email domain .de" in page
    refused = post(client, f"/prospects/{prospect_id}/time-zone", time_zone="Berlin")
    assert refused.status_code == 422
    assert "Time zone: unknown time zone &#39;Berlin&#39;" in text(refused)
    saved = post(client, f"/prospects/{prospect_id}/time-zone", time_zone="Asia/Tokyo")
    assert saved.status_code == 302
    assert "Asia/Tokyo — set by hand" in text(client.get(f"/prospects/{prospect_id}"))
    forgotten = post(client, f"/prospects/{prospect_id}/time-zone", time_zone="")
    assert forgotten.status_code == 302
    assert "Europe/Berlin — from the email domain .de" in text(
        client.get(f"/prospects/{prospect_id}")
    )


def test_csv_time_zone_and_phone_columns(rep: tuple[FlaskClient, int]) -> None:
    client, mailbox_id = rep
    sequence_id = make_sequence(client, mailbox_id)
    csv_text = (
        "email,name,time zone,phone\r\n"
        "dana@acme.test,Dana,America/Denver,\r\n"
        "walter@acme.test,Walter,,+44 20 7946 0000\r\n"
        "fox@acme.test,Fox,Mars/Olympus,\r\n"
        "anna@firma.de,Anna,,\r\n"
    )
    preview = client.post(
        f"/sequences/{sequence_id}/import",
        data={"csrf_token": csrf(client), "file": (io.BytesIO(csv_text.encode()), "list.csv")},
        content_type="multipart/form-data",
    )
    page = text(preview)
    assert 'data-ready="3"' in page and 'data-bad="1"' in page
    assert "time zone: unknown time zone &#39;Mars/Olympus&#39;" in page
    confirm_path = re.search(r'action="(/sequences/\d+/import/[^"]+)"', page)
    assert confirm_path is not None
    assert post(client, confirm_path.group(1), expected="3").status_code == 302
    with session_scope() as session:
        zones = session.execute(
            select(Prospect.email, Prospect.time_zone, Prospect.time_zone_source).order_by(
                Prospect.email
            )
        ).all()
    assert [tuple(z) for z in zones] == [
        ("anna@firma.de", "Europe/Berlin", "domain"),
        ("dana@acme.test", "America/Denver", "set"),
        ("walter@acme.test", "Europe/London", "phone"),
    ]


def test_the_enrolment_page_says_why_a_due_step_waits(rep: tuple[FlaskClient, int]) -> None:
    client, mailbox_id = rep
    created = post(
        client,
        "/sequences/new",
        name="Weekdays",
        mailbox_id=str(mailbox_id),
        send_window="1",
        time_zone="Europe/Berlin",
        send_days=["mon", "tue", "wed", "thu", "fri"],
        send_start="08:00",
        send_end="18:00",
    )
    sequence_id = int(re.findall(r"/sequences/(\d+)", created.headers["Location"])[0])
    post(
        client,
        f"/sequences/{sequence_id}/steps/new",
        delay="0",
        unit="minutes",
        subject="Hello",
        body_html="<p>Hi</p>",
    )
    post(client, f"/sequences/{sequence_id}/enroll", email="dana@acme.test", name="Dana")
    with session_scope() as session:
        enrollment_id = session.scalars(select(Enrollment.id)).one()
        saturday_noon = datetime(2031, 3, 8, 11, 0, tzinfo=UTC)  # 12:00 in Berlin
        assert claiming.claim_due_step(session, enrollment_id, saturday_noon) is None
    page = text(client.get(f"/enrollments/{enrollment_id}"))
    assert "waiting for the send window: Mon 08:00 Europe/Berlin" in page
    listing = text(client.get(f"/sequences/{sequence_id}"))
    assert "waiting for the send window: Mon 08:00 Europe/Berlin" in listing
