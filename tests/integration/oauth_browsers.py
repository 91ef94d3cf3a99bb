"""Browsers for the OAuth connect flows (web.oauth_flow), and the fake providers' consent.

A `Browser` is a Flask test client (its own cookie jar, like a browser profile)
that signs in through the real form. The flow is walked as a person walks it:
the start link (what the API answers, or where the page's form leads) is
opened, the provider's consent URL read from that page, the fake provider asked
as the account that consents, and its answer brought back to our callback the
way a browser brings it (Google: GET of the 302's Location; Microsoft: the
form_post page's fields, POSTed; Salesforce: GET of the 302's Location on the
API's path), following our own redirects to the confirm page.

`Provider` hides the three fakes behind one interface so the binding tests run
once per provider: what a consent looks like, and where a connected account
shows up.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from core.db import session_scope
from core.models import Mailbox, SalesforceConnection, Team
from tests.conftest import ApiClient, create_user
from tests.integration.provider_harness import form_post_fields
from tests.integration.test_feed import PASSWORD, csrf_from

OWNER = "owner@team-a.test"
BASE = "http://localhost:5000"  # PUBLIC_BASE_URL of the test settings
_REFRESH = re.compile(r'http-equiv="refresh" content="0; url=([^"]+)"')


def owner_api(app: Flask, client: FlaskClient) -> ApiClient:
    """conftest's `api`, but its user has a password: OAuth connects finish in a browser.

    Test modules that connect with OAuth override their `api` fixture with this.
    """
    return ApiClient(client, create_user(app, OWNER, "Team A", "--password", PASSWORD))


@dataclass
class Callback:
    """What the provider sends the browser back with."""

    method: str
    url: str
    data: dict[str, str]


class Browser:
    """One browser profile: its own cookies, signed in (or not) through /signin."""

    def __init__(self, app: Flask, email: str | None = None) -> None:
        self.client = app.test_client()
        if email is not None:
            self.sign_in(email)

    def csrf_from_signin(self) -> str:
        return csrf_from(self.client.get("/signin").get_data(as_text=True))

    def sign_in(self, email: str) -> None:
        token = self.csrf_from_signin()
        answer = self.client.post(
            "/signin", data={"email": email, "password": PASSWORD, "csrf_token": token}
        )
        assert answer.status_code == 302, answer.get_data(as_text=True)

    def sign_out(self) -> None:
        token = csrf_from(self.client.get("/feed").get_data(as_text=True))
        assert self.client.post("/signout", data={"csrf_token": token}).status_code == 302

    def get(self, url: str) -> TestResponse:
        return self.client.get(_local(url))

    def open_start(self, link: str) -> str:
        """Open a start link; return the provider's consent URL the page sends the browser to."""
        page = self.client.get(_local(link))
        text = page.get_data(as_text=True)
        assert page.status_code == 200, text
        found = _REFRESH.search(text)
        assert found is not None, text
        return html.unescape(found.group(1))

    def consent_link(self, link: str) -> str:
        """The provider's consent URL behind what the API answered (our start link, opened)."""
        return self.open_start(link) if _ours(link) else link

    def come_back(self, answer: Callback) -> TestResponse:
        """Bring the provider's answer to our callback; follow our own redirects."""
        if answer.method == "POST":
            response = self.client.post(_local(answer.url), data=answer.data)
        else:
            response = self.client.get(_local(answer.url))
        return self.follow(response)

    def follow(self, response: TestResponse) -> TestResponse:
        for _ in range(5):
            location = response.headers.get("Location", "")
            if response.status_code not in (302, 303) or not _ours(location):
                return response
            response = self.client.get(_local(location))
        raise AssertionError("too many redirects")

    def answer(self, confirm_page: TestResponse, action: str) -> TestResponse:
        """Press Connect or Cancel on the confirm page (a form POST with its CSRF token)."""
        text = confirm_page.get_data(as_text=True)
        self.confirm_url = confirm_url_of(confirm_page)
        return self.client.post(
            self.confirm_url, data={"csrf_token": csrf_from(text), "action": action}
        )

    def csrf(self) -> str:
        """This session's CSRF token, from any page with a form."""
        return csrf_from(self.client.get("/mailboxes").get_data(as_text=True))


def confirm_url_of(confirm_page: TestResponse) -> str:
    text = confirm_page.get_data(as_text=True)
    form = re.search(r'<form method="post" action="([^"]+)"', text)
    assert form is not None, text
    return html.unescape(form.group(1))


def _ours(url: str) -> bool:
    return url.startswith("/") or url.startswith(BASE + "/")


def _local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def text_of(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


class Provider(Protocol):
    kind: str
    label: str

    def start(self, api: ApiClient) -> str:
        """Start a connect through the API; return the link it answers."""

    def new_account(self, address: str) -> str:
        """An account at the provider that can consent; returns how it is shown."""

    def consent(self, consent_url: str, account: str) -> Callback:
        """`account` approves at the provider; what the browser is sent back with."""

    def connected(self, team: str) -> list[str]:
        """The accounts connected to `team`, as the confirm page names them."""

    def granted(self, account: str) -> bool:
        """Whether the provider still has a live grant for `account` (Cancel revokes)."""


def team_id(name: str) -> int:
    with session_scope() as session:
        return int(session.scalars(select(Team.id).where(Team.name == name)).one())


def mailboxes(team: str) -> list[str]:
    with session_scope() as session:
        rows = session.scalars(
            select(Mailbox.email).where(Mailbox.team_id == team_id(team)).order_by(Mailbox.id)
        )
        return list(rows)


class GmailProvider:
    kind = "gmail"
    label = "Gmail"

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def start(self, api: ApiClient) -> str:
        answer = api.post("/api/v1/mailboxes/connect", {"kind": "gmail"})
        assert answer.status_code == 200, answer.json
        return str(answer.json["authorization_url"])

    def new_account(self, address: str) -> str:
        self.fake.add_user(address)
        return address

    def consent(self, consent_url: str, account: str) -> Callback:
        self.fake.store.consenting_user = account
        try:
            answer = requests.get(consent_url, allow_redirects=False, timeout=10)
        finally:
            self.fake.store.consenting_user = None
        assert answer.status_code == 302, answer.text
        return Callback("GET", answer.headers["Location"], {})

    def connected(self, team: str) -> list[str]:
        return mailboxes(team)

    def granted(self, account: str) -> bool:
        return any(
            t.email == account and not t.revoked for t in self.fake.store.refresh_tokens.values()
        )


class GraphProvider(GmailProvider):
    kind = "graph"
    label = "Microsoft 365"

    def start(self, api: ApiClient) -> str:
        answer = api.post("/api/v1/mailboxes/connect", {"kind": "graph"})
        assert answer.status_code == 200, answer.json
        return str(answer.json["authorization_url"])

    def consent(self, consent_url: str, account: str) -> Callback:
        self.fake.store.consenting_user = account
        try:
            page = requests.get(consent_url, allow_redirects=False, timeout=10)
        finally:
            self.fake.store.consenting_user = None
        fields = form_post_fields(page.text)
        action = re.search(r'action="([^"]+)"', page.text)
        assert action is not None and "code" in fields, page.text
        return Callback("POST", html.unescape(action.group(1)), fields)

    def granted(self, account: str) -> bool:
        return True  # Microsoft has no per-grant revocation: Cancel forgets the tokens


class SalesforceProvider:
    kind = "salesforce"
    label = "Salesforce"

    def __init__(self, org: Any) -> None:
        self.org = org

    def start(self, api: ApiClient) -> str:
        answer = api.post("/api/v1/salesforce/connect", {"kind": "oauth"})
        assert answer.status_code == 200, answer.json
        return str(answer.json["authorize_url"])

    def new_account(self, address: str) -> str:
        tokens = self.org.state.tokens
        if address.lower() not in tokens.users:
            tokens.add_user(address, "005" + f"{len(tokens.users) + 1:012d}AAA")
        return address

    def consent(self, consent_url: str, account: str) -> Callback:
        # The person signs in to Salesforce as `account` (login_hint stands for that here).
        answer = requests.get(
            f"{consent_url}&login_hint={account}", allow_redirects=False, timeout=10
        )
        assert answer.status_code == 302, answer.text
        return Callback("GET", answer.headers["Location"], {})

    def connected(self, team: str) -> list[str]:
        with session_scope() as session:
            row = session.scalar(
                select(SalesforceConnection).where(
                    SalesforceConnection.team_id == team_id(team),
                    SalesforceConnection.auth_kind == "oauth",
                    SalesforceConnection.status == "active",
                )
            )
            return [str(row.username)] if row is not None else []

    def granted(self, account: str) -> bool:
        return bool(self.org.state.tokens.refresh_tokens_of(account))
