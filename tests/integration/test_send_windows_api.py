"""Time zones and send windows through API v1: defaults, strict names, what is shown."""

from __future__ import annotations

from typing import Any

from tests.conftest import ApiClient
from tests.integration.test_api import mailbox_body, sequence_body


def test_a_new_sequence_gets_weekdays_eight_to_six_and_says_so(api: ApiClient) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    created = api.post("/api/v1/sequences", sequence_body(mailbox_id))
    assert created.status_code == 201, created.json
    assert created.json["time_zone"] == "UTC"
    assert created.json["send_window"] == {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "08:00",
        "end": "18:00",
        "holidays": [],
    }
    fetched = api.get(f"/api/v1/sequences/{created.json['id']}").json
    assert fetched["send_window"] == created.json["send_window"]


def test_a_window_and_zone_of_ones_own(api: ApiClient) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    body = sequence_body(mailbox_id) | {
        "time_zone": "europe/berlin",
        "send_window": {
            "days": ["sat", "mon"],
            "start": "09:30",
            "end": "24:00",
            "holidays": ["2027-12-24", "2027-12-31"],
        },
    }
    created = api.post("/api/v1/sequences", body)
    assert created.status_code == 201, created.json
    assert created.json["time_zone"] == "Europe/Berlin"
    assert created.json["send_window"] == {
        "days": ["mon", "sat"],
        "start": "09:30",
        "end": "24:00",
        "holidays": ["2027-12-24", "2027-12-31"],
    }


def test_bad_zones_and_windows_are_422_naming_the_field(api: ApiClient) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"time_zone": "CEST"}, "time_zone", "unknown time zone"),
        ({"send_window": {"days": []}}, "send_window.days", ""),
        ({"send_window": {"days": ["funday"]}}, "send_window.days.0", ""),
        ({"send_window": {"start": "18:00", "end": "08:00"}}, "send_window", "after the start"),
        ({"send_window": {"start": "8am"}}, "send_window", "HH:MM"),
        ({"send_window": {"holidays": ["31/12/2027"]}}, "send_window.holidays.0", ""),
    ]
    for extra, field, words in cases:
        response = api.post("/api/v1/sequences", sequence_body(mailbox_id) | extra)
        assert response.status_code == 422, (extra, response.json)
        fields = response.json["error"]["fields"]
        assert field in fields, (extra, fields)
        assert words in fields[field], (extra, fields)
        assert "Traceback" not in str(response.json)


def test_an_enrolment_shows_the_zone_and_where_it_came_from(api: ApiClient) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    sequence = api.post(
        "/api/v1/sequences", sequence_body(mailbox_id) | {"time_zone": "America/Chicago"}
    ).json
    by_domain = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": "anna@firma.de"}
    ).json
    assert (by_domain["time_zone"], by_domain["time_zone_source"]) == ("Europe/Berlin", "domain")
    default = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": "bo@acme.com"}
    ).json
    assert (default["time_zone"], default["time_zone_source"]) == (
        "America/Chicago",
        "sequence default",
    )
    chosen = api.post(
        "/api/v1/enrollments",
        {"sequence_id": sequence["id"], "email": "cy@firma.de", "time_zone": "Asia/Tokyo"},
    ).json
    assert (chosen["time_zone"], chosen["time_zone_source"]) == ("Asia/Tokyo", "set")
    refused = api.post(
        "/api/v1/enrollments",
        {"sequence_id": sequence["id"], "email": "di@firma.de", "time_zone": "Mars/Olympus"},
    )
    assert refused.status_code == 422
    assert "unknown time zone" in refused.json["error"]["fields"]["time_zone"]
