"""The Gmail add-on as Google calls it: events in, card JSON out, only for our deployment.

Google's documented event payloads are posted with ID tokens signed by a test
key that a fake Google serves as its certificates (tests/fakes/google_certs);
the open message is read from the fake Gmail through the real
google-api-python-client; every answer is checked against the schema written
from Google's card reference (tests/integration/gmail_addon_support.py).
"""

from __future__ import annotations

import json
import time
from email.message import EmailMessage

import pytest
from flask import Flask
from sqlalchemy import select

from config import ConfigError, get_settings, load_settings
from core.db import session_scope
from core.events import record_event
from core.models import Enrollment
from core.models.addons import ExternalDraft
from tests.fakes.gmail import FakeGmail
from tests.fakes.gmail.pubsub import SigningKey
from tests.integration.gmail_addon_support import (
    ADDON_SCOPES,
    BASE,
    CLIENT_ID,
    SERVICE_ACCOUNT,
    Google,
    google,
    google_server,
    schema_errors,
    texts,
    the_card,
    walk,
    world,
)

pytestmark = pytest.mark.integration
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
__all__ = ["google", "google_server"]  # fixtures, imported for pytest


def _message(fake: FakeGmail, owner: str, sender: str, to: str, cc: str) -> str:
    """Dana's message in the rep's inbox; returns the event's messageId (msg-f:<decimal>)."""
    fake.add_user(owner)
    raw = EmailMessage()
    raw["From"], raw["To"], raw["Cc"] = sender, to, cc
    raw["Subject"], raw["Message-ID"] = "Re: pricing", "<m1@acme.test>"
    raw.set_content("Sounds good.")
    stored = fake.add_message(owner, raw.as_bytes(), ["INBOX"])
    return f"msg-f:{int(stored.id, 16)}"


def _open_message(google: Google, fake: FakeGmail, message_id: str) -> dict[str, object]:
    hex_id = format(int(message_id[6:]), "x")
    return {
        "messageId": message_id,
        "threadId": "thread-f:" + message_id[6:],
        "accessToken": fake.store.issue_message_token(google.email, hex_id),
    }


@on_sqlite
def test_calls_that_are_not_googles_for_our_deployment_get_401(
    google: Google, app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world(app)
    url = BASE + "/homepage"
    certs = google.certs
    impostor = SigningKey()
    impostor.kid = certs.key.kid  # Google's key id, someone else's key
    now = time.time()
    refused = {
        "no token": google.client.post("/addons/gmail/homepage", json={}),
        "wrong audience": google.call(url, audience=BASE + "/compose"),
        "another service's URL": google.call(url, audience="https://evil.example/addons/gmail"),
    }
    for label, token in (
        ("expired", certs.system_token(url, SERVICE_ACCOUNT, issued=now - 7200)),
        ("bad signature", certs.system_token(url, SERVICE_ACCOUNT, key=impostor)),
        (
            "another project's add-on",
            certs.system_token(url, "service-9@gcp-sa-gsuiteaddons.iam.gserviceaccount.com"),
        ),
    ):
        refused[label] = google.client.post(
            "/addons/gmail/homepage", json={}, headers={"Authorization": f"Bearer {token}"}
        )
    # A genuine system token, but the user's ID token is issued to someone else's client.
    system = certs.system_token(url, SERVICE_ACCOUNT)
    foreign_user = certs.user_token(google.email, "999-other.apps.googleusercontent.com")
    refused["user token for another client"] = google.client.post(
        "/addons/gmail/homepage",
        json={"authorizationEventObject": {"userIdToken": foreign_user}},
        headers={"Authorization": f"Bearer {system}"},
    )
    # The add-on's base URL is ours too (Google's reference says "the service URL").
    assert google.call(url, audience=BASE).status_code == 200
    for label, response in refused.items():
        assert response.status_code == 401, label
        assert response.get_json()["error"]["code"] == "unauthorized", label
    assert certs.fetches() <= 1  # cached with its max-age
    reasons = [r.getMessage() for r in caplog.records if "gmail_addon_refused" in r.getMessage()]
    for said in (
        "no bearer token",
        "another audience",
        "expired",
        "bad signature",
        "not our add-on",
    ):
        assert any(said in reason for reason in reasons), (said, reasons)
    assert not any("eyJ" in reason for reason in reasons)  # never a token in the log
    # Until the service account is set, even Google's genuine call is refused.
    monkeypatch.delenv("GMAIL_ADDON_SERVICE_ACCOUNT")
    get_settings.cache_clear()
    assert google.call(url).status_code == 401


@on_sqlite
def test_an_unknown_or_unverified_gmail_user_gets_a_card_saying_how_to_get_access(
    google: Google, app: Flask
) -> None:
    world(app)
    stranger = google.card_answer(BASE + "/homepage", user_email="newhire@team-a.test")
    shown = texts(the_card(stranger))
    assert "ask your Sightline admin to invite newhire@team-a.test" in shown
    unverified = google.certs.user_token(google.email, CLIENT_ID, verified=False)
    system = google.certs.system_token(BASE + "/homepage", SERVICE_ACCOUNT)
    response = google.client.post(
        "/addons/gmail/homepage",
        json={"authorizationEventObject": {"userIdToken": unverified}},
        headers={"Authorization": f"Bearer {system}"},
    )
    assert response.status_code == 200 and schema_errors(response.get_json()) == []
    assert "verified Google email" in texts(the_card(response.get_json()))
    # A stranger's button press gets the same card, as an update.
    pressed = google.card_answer(
        BASE + "/actions/pause", user_email="newhire@team-a.test", parameters={"enrollment_id": "1"}
    )
    assert "newhire@team-a.test" in texts(the_card(pressed))


def test_the_message_shows_its_people_and_pause_pauses_the_enrolment(
    google: Google, app: Flask, fake_gmail: FakeGmail
) -> None:
    w = world(app)
    message_id = _message(
        fake_gmail, w.rep, "Dana Scully <dana@acme.test>", w.rep, "Walter <walter@acme.test>"
    )
    token = fake_gmail.store.issue_access_token(w.rep, CLIENT_ID, ADDON_SCOPES)
    answer = google.card_answer(
        BASE + "/message", gmail=_open_message(google, fake_gmail, message_id), oauth_token=token
    )
    card = the_card(answer)
    shown = texts(card)
    assert "Dana Scully <dana@acme.test>" in shown and "walter@acme.test" in shown
    assert "Intro to Acme" in shown and "Active" in shown
    assert "rep@team-a.test" not in shown  # the user's own address is not a person to show
    assert fake_gmail.calls.count(lambda c: c.label == "users.messages.get") == 1

    paused = google.press(card, "Pause")
    assert "Paused" in texts(the_card(paused))
    assert paused["renderActions"]["action"]["notification"]["text"]
    with session_scope() as session:
        assert session.get_one(Enrollment, w.enrollment_id).state == "paused"

    # Team B's rep: the same thread shows Dana as nobody of theirs, and Team A's
    # enrolment id pressed by them is not found: nothing changes.
    other = Google(google.certs, google.client, w.other_rep)
    fake_gmail.add_user(w.other_rep)
    theirs = texts(
        the_card(other.card_answer(BASE + "/message", gmail={"toRecipients": [w.prospect]}))
    )
    assert "Intro to Acme" not in theirs and "Not in Sightline yet" in theirs
    refused = other.card_answer(
        BASE + "/actions/resume",
        parameters={"enrollment_id": str(w.enrollment_id), "people": w.prospect},
    )
    assert "renderActions" in refused and "navigations" not in refused["renderActions"]["action"]
    with session_scope() as session:
        assert session.get_one(Enrollment, w.enrollment_id).state == "paused"


@on_sqlite
def test_add_to_sequence_enrols_the_person_and_redraws_the_message(
    google: Google, app: Flask
) -> None:
    w = world(app)
    message = the_card(
        google.card_answer(BASE + "/message", gmail={"toRecipients": ["Walter <walter@acme.test>"]})
    )
    choose = next(n["card"] for n in walk(message) if isinstance(n.get("card"), dict))
    assert "Intro to Acme" in texts(choose)
    added = google.press(choose, "Add", form={"sequence_id": [str(w.sequence_id)]})
    assert added["renderActions"]["action"]["navigations"][0] == {"pop": True}
    assert "Intro to Acme" in texts(the_card(added))
    with session_scope() as session:
        enrolled = session.scalars(
            select(Enrollment).where(Enrollment.sequence_id == w.sequence_id)
        ).all()
        assert len(enrolled) == 2


@on_sqlite
def test_a_message_gmail_will_not_open_says_so(
    google: Google, app: Flask, fake_gmail: FakeGmail
) -> None:
    w = world(app)
    message_id = _message(fake_gmail, w.rep, "dana@acme.test", w.rep, "")
    token = fake_gmail.store.issue_access_token(w.rep, CLIENT_ID, ADDON_SCOPES)
    wrong = {**_open_message(google, fake_gmail, message_id), "accessToken": "msg.not-this-one"}
    answer = google.card_answer(BASE + "/message", gmail=wrong, oauth_token=token)
    assert "did not let Sightline read" in texts(the_card(answer))


@on_sqlite
def test_compose_inserts_a_link_per_recipient_or_for_the_draft_and_the_pixel(
    google: Google, app: Flask
) -> None:
    w = world(app)
    compose = the_card(google.card_answer(BASE + "/compose", gmail={"toRecipients": [w.prospect]}))
    assert "pricing.pdf" in texts(compose)
    insert = {"document_id": [str(w.document_id)], "track_opens": ["on"]}
    one = google.press(compose, "Insert", gmail={"toRecipients": [w.prospect]}, form=insert)
    body = one["renderActions"]["hostAppAction"]["gmailAction"]["updateDraftActionMarkup"]
    html = body["updateBody"]["insertContents"][0]["content"]
    assert "/d/" in html and "/o/" in html and "pricing.pdf" in html
    assert "for this recipient" in one["renderActions"]["action"]["notification"]["text"]
    google.press(compose, "Insert", gmail={"toRecipients": [w.prospect]}, form=insert)
    with session_scope() as session:  # pressed twice on one draft: one tracking record
        drafts = session.scalars(select(ExternalDraft)).all()
        assert [(d.source, d.per_recipient) for d in drafts] == [("gmail", True)]

    nothing = google.press(compose, "Insert", form={"document_id": ["none"]})
    assert set(nothing["renderActions"]) == {"action"}  # a sentence, nothing inserted
    assert nothing["renderActions"]["action"]["notification"]["text"]

    fresh = the_card(google.card_answer(BASE + "/compose"))
    two = google.press(
        fresh,
        "Insert",
        gmail={"toRecipients": [w.prospect, "walter@acme.test"]},
        form={"document_id": [str(w.document_id)]},
    )
    notice = two["renderActions"]["action"]["notification"]["text"]
    assert "for this email" in notice
    html_two = two["renderActions"]["hostAppAction"]["gmailAction"]["updateDraftActionMarkup"][
        "updateBody"
    ]["insertContents"][0]["content"]
    assert "/d/" in html_two and "/o/" not in html_two and html_two != html
    with session_scope() as session:
        drafts = session.scalars(select(ExternalDraft).order_by(ExternalDraft.id)).all()
        assert [d.per_recipient for d in drafts] == [True, False]


@on_sqlite
def test_a_solo_team_is_told_content_is_a_team_plan_feature(google: Google, app: Flask) -> None:
    world(app, plan="solo")
    card = the_card(google.card_answer(BASE + "/compose", gmail={"toRecipients": ["x@y.test"]}))
    assert "Team plan" in texts(card)
    assert "pricing.pdf" not in texts(card)


@on_sqlite
def test_the_homepage_lists_the_latest_live_feed_items(google: Google, app: Flask) -> None:
    w = world(app)
    with session_scope() as session:
        enrollment = session.get_one(Enrollment, w.enrollment_id)
        record_event(
            session,
            team_id=w.team_id,
            key="gmail-addon-test:reply",
            kind="reply",
            enrollment_id=w.enrollment_id,
            prospect_id=enrollment.prospect_id,
            data={"from": w.prospect},
        )
    card = the_card(google.card_answer(BASE + "/homepage"))
    assert "Dana Scully" in texts(card)


@on_sqlite
def test_the_deployment_descriptor_names_our_endpoints(
    google: Google, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = app.test_cli_runner().invoke(args=["gmail-addon", "deployment"])
    assert result.exit_code == 0, result.output
    descriptor = json.loads(result.stdout)
    common = descriptor["addOns"]["common"]
    assert common["homepageTrigger"]["runFunction"] == BASE + "/homepage"
    gmail = descriptor["addOns"]["gmail"]
    assert gmail["contextualTriggers"][0]["onTriggerFunction"] == BASE + "/message"
    assert gmail["composeTrigger"]["actions"][0]["runFunction"] == BASE + "/compose"
    assert gmail["composeTrigger"]["draftAccess"] == "METADATA"
    assert descriptor["addOns"]["httpOptions"]["authorizationHeader"] == "SYSTEM_ID_TOKEN"
    assert "https://www.googleapis.com/auth/userinfo.email" in descriptor["oauthScopes"]
    assert "only over https" in result.stderr  # tests run on http://localhost:5000
    assert (
        app.test_client().get(common["logoUrl"].removeprefix("http://localhost:5000")).status_code
        == 200
    )


def test_the_settings_refuse_what_is_not_an_add_on_account_or_client() -> None:
    with pytest.raises(ConfigError, match=r"^GMAIL_ADDON_SERVICE_ACCOUNT: expected"):
        load_settings({"GMAIL_ADDON_SERVICE_ACCOUNT": "rep@gmail.com"})
    with pytest.raises(ConfigError, match=r"^GMAIL_ADDON_OAUTH_CLIENT_ID: expected"):
        load_settings({"GMAIL_ADDON_OAUTH_CLIENT_ID": "not a client id"})
    with pytest.raises(ConfigError, match=r"^GMAIL_ADDON_LOGO_URL: expected https"):
        load_settings({"GMAIL_ADDON_LOGO_URL": "http://example.com/logo.png"})
    assert not load_settings(
        {"GMAIL_ADDON_SERVICE_ACCOUNT": SERVICE_ACCOUNT}
    ).gmail_addon.configured
    both = {
        "GMAIL_ADDON_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "GMAIL_ADDON_OAUTH_CLIENT_ID": CLIENT_ID,
    }
    assert load_settings(both).gmail_addon.configured


def test_the_card_schema_refuses_what_gmail_would_not_draw() -> None:
    card = {"sections": [{"widgets": [{"textParagraph": {"text": "Hi"}}]}]}
    assert schema_errors({"action": {"navigations": [{"pushCard": card}]}}) == []
    misspelt = {"sections": [{"widgets": [{"textParagrph": {"text": "Hi"}}]}]}
    no_click = {"sections": [{"widgets": [{"buttonList": {"buttons": [{"text": "Go"}]}}]}]}
    insert = {"insertContents": [{"content": "<a>x</a>", "contentType": "MUTABLE_HTML"}]}
    for bad in (
        {"action": {"navigations": [{"pushCard": misspelt}]}},
        {"action": {"navigations": [{"pushCard": no_click}]}},
        {"action": {"navigations": [{"pushCard": {"header": {"title": "No sections"}}}]}},
        {"renderActions": {"hostAppAction": {"gmailAction": {"updateDraftActionMarkup": {
            "updateBody": insert}}}}},  # no "type"
        {"renderActions": {"action": {"navigations": [{"updateCard": card, "pop": True}]}}},
    ):  # fmt: skip
        assert schema_errors(bad), bad
