"""Password guessing at /signin is stopped; a person who mistypes is not (web/signin_limit.py).

Real Redis, the real app, the real sign-in form. Client addresses come from
X-Forwarded-For, which the test client (127.0.0.1) is trusted to set, as a
proxy in front of Sightline would.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import Settings, get_settings
from core.redis import get_redis
from tests.conftest import create_user
from tests.integration.test_feed import PASSWORD, csrf_from

pytestmark = pytest.mark.integration

USER = "rep@limits.test"
LIMITED = re.compile(r"Too many failed sign-ins\..*?(\d+) minutes?")


@pytest.fixture
def user(app: Flask) -> str:
    create_user(app, USER, "Limits", "--password", PASSWORD)
    return USER


def attempt(client: FlaskClient, email: str, password: str, ip: str = "198.51.100.7") -> Any:
    token = csrf_from(client.get("/signin").get_data(as_text=True))
    return client.post(
        "/signin",
        data={"email": email, "password": password, "csrf_token": token},
        headers={"X-Forwarded-For": ip},
    )


def limits(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


def statuses(client: FlaskClient, email: str, count: int, ip: str = "198.51.100.7") -> list[int]:
    return [attempt(client, email, "wrong password", ip).status_code for _ in range(count)]


def test_ten_wrong_passwords_then_even_the_right_one_waits(app: Flask, user: str) -> None:
    client = app.test_client()
    assert statuses(client, user, 10) == [401] * 10
    refused = attempt(client, user, PASSWORD)
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 0 < wait <= 900
    page = refused.get_data(as_text=True)
    assert LIMITED.search(page), page
    assert "match an account" not in page
    assert client.get("/feed").status_code == 302  # not signed in
    # The right password from another address is not held back by this guesser.
    other = app.test_client()
    assert attempt(other, user, PASSWORD, ip="203.0.113.9").status_code == 302


def page_text(response: Any, email: str) -> str:
    """The page without what differs between two visitors: the email typed, the CSRF token."""
    html = response.get_data(as_text=True).replace(email, "EMAIL")
    return re.sub(r'name="csrf_token" value="[^"]+"', "", html)


def test_an_unknown_email_is_limited_exactly_like_a_known_one(
    app: Flask, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(monkeypatch, SIGHTLINE_SIGNIN_MAX_FAILURES="3")
    known, unknown = app.test_client(), app.test_client()
    nobody = "nobody@limits.test"
    assert statuses(known, user, 4, ip="198.51.100.1") == statuses(
        unknown, nobody, 4, ip="198.51.100.2"
    )
    a = attempt(known, user, "x", ip="198.51.100.1")
    b = attempt(unknown, nobody, "x", ip="198.51.100.2")
    assert a.status_code == b.status_code == 429
    assert page_text(a, user) == page_text(b, nobody)


def test_a_success_is_not_counted_and_forgives_the_typos_before_it(
    app: Flask, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(monkeypatch, SIGHTLINE_SIGNIN_MAX_FAILURES="3")
    client = app.test_client()
    assert statuses(client, user, 2) == [401] * 2
    assert attempt(client, user, PASSWORD).status_code == 302
    client.post("/signout", data={"csrf_token": csrf_from(client.get("/feed").get_data(True))})
    assert statuses(client, user, 4) == [401] * 3 + [429]


def test_one_address_spraying_many_accounts_is_stopped(
    app: Flask, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(monkeypatch, SIGHTLINE_SIGNIN_MAX_FAILURES_PER_IP="5")
    client = app.test_client()
    for n in range(5):
        assert attempt(client, f"guess{n}@limits.test", "pw").status_code == 401
    assert attempt(client, user, PASSWORD).status_code == 429
    assert attempt(app.test_client(), user, PASSWORD, ip="203.0.113.9").status_code == 302


def test_many_addresses_guessing_one_account_are_stopped(
    app: Flask, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(monkeypatch, SIGHTLINE_SIGNIN_MAX_FAILURES_PER_EMAIL="3")
    client = app.test_client()
    for n in range(3):
        assert attempt(client, user, "pw", ip=f"192.0.2.{n + 1}").status_code == 401
    assert attempt(client, user, PASSWORD, ip="192.0.2.50").status_code == 429
    # Another account from those same addresses is unaffected.
    assert attempt(client, "other@limits.test", "pw", ip="192.0.2.1").status_code == 401


def test_the_window_and_limit_come_from_settings_and_redis_holds_no_address(
    app: Flask, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(monkeypatch, SIGHTLINE_SIGNIN_WINDOW_SECONDS="120", SIGHTLINE_SIGNIN_MAX_FAILURES="2")
    client = app.test_client()
    assert statuses(client, user, 3) == [401, 401, 429]
    refused = attempt(client, user, PASSWORD)
    assert 0 < int(refused.headers["Retry-After"]) <= 120
    assert "2 minutes" in refused.get_data(as_text=True)
    keys = [k.decode() for k in get_redis().scan_iter("sightline:signin:*")]
    assert keys and all(0 < get_redis().ttl(k) <= 120 for k in keys)
    assert not any("limits.test" in k for k in keys)


def test_an_empty_form_is_not_counted(
    app: Flask, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits(monkeypatch, SIGHTLINE_SIGNIN_MAX_FAILURES="2")
    client = app.test_client()
    for _ in range(4):
        assert attempt(client, user, "").status_code == 401
    assert attempt(client, user, PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIGHTLINE_SIGNIN_MAX_FAILURES", "0"),
        ("SIGHTLINE_SIGNIN_MAX_FAILURES_PER_IP", "many"),
        ("SIGHTLINE_SIGNIN_WINDOW_SECONDS", "5"),
    ],
)
def test_a_bad_limit_stops_start_up_naming_the_variable(
    name: str, value: str, tmp_path: Any
) -> None:
    from config.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match=rf"^{name}: "):
        load_settings({"SIGHTLINE_VAR_DIR": str(tmp_path), name: value})
