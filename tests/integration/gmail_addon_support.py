"""What the Gmail add-on tests share: Google's calls as Google makes them, a small world.

`Google` posts Google's documented event objects (the HTTP runtime's
`commonEventObject`, `authorizationEventObject`, `gmail`) to the add-on's
endpoints with ID tokens signed by the fake Google's key (tests.fakes.google_certs),
and checks every 200 answer against tests/fixtures/gmail_card.schema.json, the
schema written from Google's card reference. `world()` makes a team on the team
plan with a rep, a mailbox, a two-step sequence, Dana enrolled in it and a ready
document, through the real CLI and enrolment code; and a second team.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import get_settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Document,
    DocumentPage,
    DocumentStatus,
    Mailbox,
    SequenceStep,
    Team,
    User,
    utcnow,
)
from core.models import Sequence as SequenceRow
from tests.conftest import create_user
from tests.fakes.google_certs import FakeGoogleCerts
from worker.sequences import enrolling
from worker.sync.gmail_push import forget_push_certs

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "gmail_card.schema.json").read_text()
)
VALIDATOR = jsonschema_rs.Draft7Validator(SCHEMA)
SERVICE_ACCOUNT = "service-123456789012@gcp-sa-gsuiteaddons.iam.gserviceaccount.com"
CLIENT_ID = "123456789012-sightline.apps.googleusercontent.com"
ROOT = "http://localhost:5000"  # PUBLIC_BASE_URL in tests (tests/conftest.py)
BASE = ROOT + "/addons/gmail"
ADDON_SCOPES = [
    "https://www.googleapis.com/auth/gmail.addons.execute",
    "https://www.googleapis.com/auth/gmail.addons.current.message.metadata",
]


def schema_errors(answer: Any) -> list[str]:
    return [f"{e.instance_path}: {e.message}" for e in VALIDATOR.iter_errors(answer)]


def addon_environment(google: FakeGoogleCerts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMAIL_ADDON_SERVICE_ACCOUNT", SERVICE_ACCOUNT)
    monkeypatch.setenv("GMAIL_ADDON_OAUTH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("GMAIL_ADDON_CERTS_URL", google.certs_url)
    get_settings.cache_clear()
    forget_push_certs()


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogleCerts]:
    with FakeGoogleCerts() as google:
        yield google


@pytest.fixture
def google(app: Flask, google_server: FakeGoogleCerts, monkeypatch: pytest.MonkeyPatch) -> Google:
    """Google, calling the add-on for Team A's rep (world()), with the add-on configured."""
    addon_environment(google_server, monkeypatch)
    return Google(google_server, app.test_client(), "rep@team-a.test")


def event(
    *,
    user_id_token: str | None,
    system_token: str,
    gmail: dict[str, Any] | None = None,
    parameters: dict[str, str] | None = None,
    form: dict[str, list[str]] | None = None,
    oauth_token: str = "ya29.unused",
) -> dict[str, Any]:
    """Google's event object for the HTTP runtime (the reference's field names)."""
    common: dict[str, Any] = {
        "hostApp": "GMAIL",
        "platform": "WEB",
        "userLocale": "en-US",
        "timeZone": {"id": "America/New_York", "offset": -18000000},
    }
    if parameters:
        common["parameters"] = parameters
    if form:
        common["formInputs"] = {k: {"stringInputs": {"value": v}} for k, v in form.items()}
    authorization = {"userOAuthToken": oauth_token, "systemIdToken": system_token}
    if user_id_token is not None:
        authorization["userIdToken"] = user_id_token
    found: dict[str, Any] = {"commonEventObject": common, "authorizationEventObject": authorization}
    if gmail is not None:
        found["gmail"] = gmail
    return found


@dataclass
class Google:
    """Posts events to the add-on as Google does, for one Gmail user."""

    certs: FakeGoogleCerts
    client: FlaskClient
    email: str
    answers: list[Any] = field(default_factory=list)

    def call(
        self, url: str, *, audience: str | None = None, user_email: str | None = "", **kw: Any
    ) -> Any:
        token = self.certs.system_token(audience or url, SERVICE_ACCOUNT)
        who = self.email if user_email == "" else user_email
        user_token = self.certs.user_token(who, CLIENT_ID) if who else None
        body = event(user_id_token=user_token, system_token=token, **kw)
        return self.client.post(
            url.removeprefix(ROOT), json=body, headers={"Authorization": f"Bearer {token}"}
        )

    def card_answer(self, url: str, **kw: Any) -> dict[str, Any]:
        response = self.call(url, **kw)
        assert response.status_code == 200, response.get_data(as_text=True)
        answer: dict[str, Any] = response.get_json()
        assert schema_errors(answer) == [], (schema_errors(answer), answer)
        self.answers.append(answer)
        return answer

    def press(self, card: dict[str, Any], label: str, **kw: Any) -> dict[str, Any]:
        """Press the button `label` on `card`: Google posts its action with its parameters."""
        action = find_button(card, label)["onClick"]["action"]
        parameters = {p["key"]: p["value"] for p in action.get("parameters", [])}
        return self.card_answer(action["function"], parameters=parameters, **kw)


def cards_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    action = answer.get("renderActions", answer).get("action", {})
    return [
        n.get("pushCard") or n.get("updateCard")
        for n in action.get("navigations", [])
        if n.get("pushCard") or n.get("updateCard")
    ]


def the_card(answer: dict[str, Any]) -> dict[str, Any]:
    found = cards_of(answer)
    assert len(found) == 1, answer
    return found[0]


def walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def find_button(card: dict[str, Any], label: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        b for node in walk(card) for b in node.get("buttons", []) if b.get("text") == label
    ]
    assert found, f"no button {label!r} in {json.dumps(card)[:2000]}"
    return found[0]


def texts(card: dict[str, Any]) -> str:
    """Every piece of text the card shows, one per line, as the user reads it."""
    keys = ("title", "subtitle", "header", "text", "topLabel", "bottomLabel", "label")
    return "\n".join(
        unescape(re.sub(r"</?b>", "", str(node[k])))
        for node in walk(card)
        for k in keys
        if isinstance(node.get(k), str)
    )


@dataclass(frozen=True)
class World:
    team_id: int
    rep: str
    other_rep: str
    prospect: str
    enrollment_id: int
    sequence_id: int
    document_id: int


def world(app: Flask, *, plan: str = "team") -> World:
    rep, other_rep, prospect = "rep@team-a.test", "rep@team-b.test", "dana@acme.test"
    create_user(app, rep, "Team A", "--name", "Rita Rep")
    create_user(app, other_rep, "Team B", "--name", "Bob Rep")
    now = utcnow()
    with session_scope() as session:
        team = session.scalars(select(Team).where(Team.name == "Team A")).one()
        team.plan = plan
        user = session.scalars(select(User).where(User.email == rep)).one()
        mailbox = Mailbox(
            team_id=team.id,
            user_id=user.id,
            kind="gmail",
            email=rep,
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequence = SequenceRow(team_id=team.id, mailbox_id=mailbox.id, name="Intro to Acme")
        sequence.steps = [
            SequenceStep(
                position=0, delay_seconds=3600, subject="Hi {{first_name}}", body_html="<p>Hi</p>"
            ),
            SequenceStep(position=1, delay_seconds=86400, subject="", body_html="<p>Bump</p>"),
        ]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session, sequence=sequence, email=prospect, name="Dana Scully", now=now
        )
        document = Document(
            team_id=team.id,
            name="pricing.pdf",
            kind="pdf",
            content_type="application/pdf",
            size_bytes=100,
            sha256="0" * 64,
            status=DocumentStatus.READY,
            page_count=1,
        )
        session.add(document)
        session.flush()
        session.add(DocumentPage(document_id=document.id, number=1, width=800, height=1000))
        return World(
            team_id=team.id,
            rep=rep,
            other_rep=other_rep,
            prospect=prospect,
            enrollment_id=enrollment.id,
            sequence_id=sequence.id,
            document_id=document.id,
        )
