"""A team's tracking host is user input: what is refused, in words, and what verifies.

Through the real API and the real settings page, on a real database. Names are
answered by `tests.security.tracking_dns.Zone` through the system resolver's
API (the operator's host is a CNAME to a load balancer, as on a real deploy):
a CNAME to the operator's host and an A record copied from it verify; a name
pointing elsewhere, at a private address, or at nothing fails with the reason;
IP literals, local names and the operator's own names are refused when typed.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from config import Settings, get_settings
from tests.conftest import ApiClient, create_user
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from tests.security.tracking_dns import OPERATOR, OPERATOR_URL, Zone, use_zone

PATH = "/api/v1/team/tracking-host"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """One engine is enough: what is checked here is the policy, not the storage."""
    return sqlite_database_url


@pytest.fixture
def dns(env: Settings, monkeypatch: pytest.MonkeyPatch) -> Zone:
    monkeypatch.setenv("PUBLIC_BASE_URL", OPERATOR_URL)
    get_settings.cache_clear()
    return use_zone(monkeypatch)


def put(api: ApiClient, host: Any) -> Any:
    return api.client.put(PATH, json={"host": host}, headers=api._headers())


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("52.20.1.10", "52.20.1.10: give a host name (track.example.com), not an IP address"),
        ("[2600:1f18::10]", "not an IP address"),
        ("localhost", "localhost: a local name cannot be reached from the internet"),
        ("printer.local", "a local name cannot be reached from the internet"),
        ("tracking", "tracking: give a full host name, such as track.example.com"),
        (OPERATOR, f"{OPERATOR}: this is the service's own host; use a name of your own domain"),
        (f"eu.{OPERATOR}", "this is the service's own host"),
        ("https://track.acme-sales.com/", "give the host name alone (track.example.com)"),
        ("track_acme.com", "not a server name or an address in its usual form"),
        ("träck.acme-sales.com", "write the server name in ASCII"),
    ],
)
def test_a_host_that_cannot_be_a_tracking_host_is_refused_in_words(
    dns: Zone, api: ApiClient, host: str, words: str
) -> None:
    response = put(api, host)
    assert response.status_code == 422, response.json
    error = response.json["error"]
    assert words in error["message"] and words in error["fields"]["host"]
    assert api.get(PATH).json["status"] == "none"  # nothing stored


def test_a_cname_to_the_operator_is_pending_then_verified(dns: Zone, api: ApiClient) -> None:
    stored = put(api, "  Track.Acme-Sales.com ")
    assert stored.status_code == 200, stored.json
    assert stored.json["host"] == "track.acme-sales.com"
    assert stored.json["status"] == "pending"
    assert stored.json["cname_target"] == OPERATOR
    verified = api.post(f"{PATH}/verify", {})
    assert verified.status_code == 200
    assert verified.json["status"] == "verified" and verified.json["error"] is None
    assert verified.json["verified_at"] is not None
    # Setting another host starts over: pending, not used until verified.
    assert put(api, "go.acme-sales.com").json["status"] == "pending"


def test_an_a_record_copied_from_the_operator_verifies(dns: Zone, api: ApiClient) -> None:
    put(api, "go.acme-sales.com")
    assert api.post(f"{PATH}/verify", {}).json["status"] == "verified"


@pytest.mark.parametrize(
    ("host", "words"),
    [
        (
            "mail.acme-sales.com",
            f"mail.acme-sales.com: does not point at {OPERATOR} yet (make it a CNAME record to "
            f"{OPERATOR}, then verify again)",
        ),
        ("inside.acme-sales.com", "inside.acme-sales.com: this address is not allowed"),
        ("half.acme-sales.com", "half.acme-sales.com: this address is not allowed"),
        ("nothing-here.acme-sales.com", "could not resolve this name (add the DNS record"),
    ],
)
def test_a_host_that_does_not_point_at_us_fails_with_the_reason(
    dns: Zone, api: ApiClient, host: str, words: str
) -> None:
    assert put(api, host).json["status"] == "pending"
    failed = api.post(f"{PATH}/verify", {}).json
    assert failed["status"] == "failed" and failed["verified_at"] is None
    assert words in failed["error"]
    assert "10.20.0.5" not in failed["error"] and "192.168" not in failed["error"]
    assert api.get(PATH).json == failed


def test_a_verified_host_that_stops_pointing_at_us_fails_on_the_next_check(
    dns: Zone, api: ApiClient
) -> None:
    put(api, "track.acme-sales.com")
    assert api.post(f"{PATH}/verify", {}).json["status"] == "verified"
    dns.records["track.acme-sales.com"] = ["93.184.215.14"]
    again = api.post(f"{PATH}/verify", {}).json
    assert (again["status"], again["verified_at"]) == ("failed", None)


def test_one_host_one_team_and_removing_frees_it(dns: Zone, app: Flask, api: ApiClient) -> None:
    assert put(api, "track.acme-sales.com").status_code == 200
    other = ApiClient(api.client, create_user(app, "rep@beta.test", "Beta"))
    taken = put(other, "TRACK.acme-sales.com")
    assert taken.status_code == 422
    assert taken.json["error"]["fields"]["host"] == (
        "track.acme-sales.com: another team already uses this host"
    )
    assert api.client.delete(PATH, headers=api._headers()).status_code == 204
    assert api.get(PATH).json["status"] == "none"
    assert put(other, "track.acme-sales.com").json["status"] == "pending"
    assert other.post(f"{PATH}/verify", {}).json["status"] == "verified"


def test_verify_without_a_host_says_so(dns: Zone, api: ApiClient) -> None:
    response = api.post(f"{PATH}/verify", {})
    assert response.status_code == 404
    assert response.json["error"]["message"] == "no tracking host is set: PUT one first"


def test_the_settings_page_sets_verifies_and_explains(dns: Zone, app: Flask) -> None:
    create_user(app, "rep@acme.test", "Acme", "--password", PASSWORD)
    client = app.test_client()
    assert sign_in(client, "rep@acme.test").status_code == 302
    page = "/settings/tracking-host"
    token = csrf_from(client.get(page).get_data(as_text=True))
    refused = client.post(page, data={"host": "10.0.0.1", "csrf_token": token})
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert "10.0.0.1: give a host name (track.example.com), not an IP address" in html
    assert 'aria-invalid="true"' in html and 'value="10.0.0.1"' in html
    saved = client.post(page, data={"host": "mail.acme-sales.com", "csrf_token": token})
    assert saved.status_code == 302
    html = client.get(page).get_data(as_text=True)
    assert "pending" in html and f"mail.acme-sales.com. CNAME {OPERATOR}." in html
    client.post(f"{page}/verify", data={"csrf_token": token})
    html = client.get(page).get_data(as_text=True)
    assert "failed" in html and f"does not point at {OPERATOR} yet" in html
    client.post(page, data={"host": "track.acme-sales.com", "csrf_token": token})
    client.post(f"{page}/verify", data={"csrf_token": token})
    html = client.get(page).get_data(as_text=True)
    assert "track.acme-sales.com is verified: emails sent from now on use it." in html
