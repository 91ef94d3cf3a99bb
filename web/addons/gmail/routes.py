"""The Gmail add-on's HTTP endpoints: Google posts an event, we answer with card JSON.

    POST /addons/gmail/homepage          homepageTrigger      the user's latest Live Feed items
    POST /addons/gmail/message           contextualTrigger    the people of the open message
    POST /addons/gmail/compose           composeTrigger       a library document, "Track opens"
    POST /addons/gmail/actions/<name>    a card's button      pause, resume, stop, enrol, insert

Every call is proven Google's for our deployment before the body is read
(`web.addons.gmail.auth`: 401 otherwise), and its Gmail user is the Sightline
user with the same verified email (`service.find_user`); anyone else gets a
card saying how to get access. Everything shown or changed goes through
`web.addons.service` with that user's id, so it is the user's team's only.
These routes are not session-authenticated (no cookie, no CSRF token): the ID
token is the proof, and API v1 offers the same actions (web/api/addons.py).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue

from config import get_settings
from web.addons import service
from web.addons.gmail import cards, views
from web.addons.gmail.auth import CallRefusedError, gmail_user, verify_google
from web.addons.gmail.events import AddonEvent, read_event
from web.addons.views import FEED_LIMIT, AddonError, Recipients
from web.db import db
from worker.sync.base import ProviderError

log = logging.getLogger(__name__)

bp = Blueprint("gmail_addon", __name__, url_prefix="/addons/gmail")
PREFIX = "/addons/gmail"
ENROLLMENT_ACTIONS = ("pause", "resume", "stop")
MAX_ID_DIGITS = 12

Handler = Callable[[AddonEvent, int, str], dict[str, Any]]


def base_url() -> str:
    return get_settings().public_base_url + PREFIX


def _audiences() -> list[str]:
    """The URLs Google may have addressed this call's token to.

    Google's reference names the audience "the endpoint URL": the URL called
    (with its query or not); the add-on's base URL and PUBLIC_BASE_URL are
    accepted too, being ours as much. A token for any other URL (another
    service's, or another of our endpoints) is refused.
    """
    root = get_settings().public_base_url
    found = [root + request.path, base_url(), root, root + "/"]
    query = request.query_string.decode("latin-1")
    if query:
        found.append(f"{root}{request.path}?{query}")
    return found


def _refusal(card_json: cards.Card, is_action: bool) -> dict[str, Any]:
    return cards.update(card_json) if is_action else cards.push(card_json)


def _answer(handler: Handler, *, is_action: bool) -> ResponseReturnValue:
    try:
        verify_google(request.headers.get("Authorization"), _audiences())
        body = request.get_json(silent=True)  # read only once the caller is Google
        event_json = body if isinstance(body, dict) else {}
        caller = gmail_user(event_json)
    except CallRefusedError as exc:
        log.warning("gmail_addon_refused path=%s reason=%s", request.path, exc)
        message = "Only Google may call the Gmail add-on, with a valid ID token for this URL."
        error = {"code": "unauthorized", "message": message, "fields": []}
        return jsonify(error=error), 401, {"WWW-Authenticate": 'Bearer realm="gmail-addon"'}
    event = read_event(event_json)
    if caller.email is None:
        return jsonify(_refusal(views.needs_email_card(), is_action))
    user_id = service.find_user(db(), caller.email)
    if user_id is None:
        log.info("gmail_addon_unknown_user path=%s", request.path)
        return jsonify(_refusal(views.unknown_user_card(caller.email), is_action))
    try:
        return jsonify(handler(event, user_id, caller.email))
    except AddonError as exc:
        log.info("gmail_addon_refused_action path=%s code=%s", request.path, exc.code)
        if is_action:
            return jsonify(cards.notify(exc.message))
        return jsonify(cards.push(views.notice_card(exc.message, "Not available")))


# -- triggers -----------------------------------------------------------------------------


def homepage(event: AddonEvent, user_id: int, email: str) -> dict[str, Any]:
    items = service.feed_items(db(), user_id, FEED_LIMIT)
    return cards.push(views.homepage_card(items, event.time_zone))


def thread_people(event: AddonEvent) -> list[str] | str:
    """The addresses on the open message, or why they could not be read."""
    if event.message_id and event.user_oauth_token and event.message_token:
        # lazy import: google-api-python-client costs the web process 4.6 MiB RSS and
        # 0.4 s (measured after create_app); only the message trigger reads Gmail.
        from worker.sync.gmail_open_message import message_people

        try:
            return message_people(event.user_oauth_token, event.message_token, event.message_id)
        except ProviderError as exc:
            log.warning("gmail_addon_message_unreadable error=%s", exc)
            return "Gmail did not let Sightline read who is on this message. Open it again."
    if event.to or event.cc:
        return [*event.to, *event.cc]
    return "Open a message to see its people in Sightline."


def _panel(event: AddonEvent, user_id: int, people: list[str]) -> cards.Card:
    panel = service.prospect_panel(db(), user_id, people)
    return views.panel_card(panel, people, base_url(), event.time_zone)


def message(event: AddonEvent, user_id: int, email: str) -> dict[str, Any]:
    people = thread_people(event)
    if isinstance(people, str):
        return cards.push(views.notice_card(people))
    return cards.push(_panel(event, user_id, people))


def compose(event: AddonEvent, user_id: int, email: str) -> dict[str, Any]:
    choices = service.content_choices(db(), user_id)
    # The compose event names no draft, so the card carries a reference of its own:
    # pressing Insert twice on one card finds the same tracking record.
    draft_ref = "gmail-" + secrets.token_urlsafe(18)
    return cards.push(views.compose_card(choices, base_url(), draft_ref))


# -- actions ------------------------------------------------------------------------------


def _id(value: str | None, field: str) -> int:
    if value is None or not value.isdigit() or len(value) > MAX_ID_DIGITS:
        raise AddonError("invalid", f"The {field.replace('_', ' ')} is missing.", field)
    return int(value)


def _people(event: AddonEvent) -> list[str]:
    raw = event.parameter("people") or ""
    return [p for p in raw.split(views.PEOPLE_SEPARATOR) if p][:50]


def enrollment_action(name: str) -> Handler:
    def run(event: AddonEvent, user_id: int, email: str) -> dict[str, Any]:
        enrollment_id = _id(event.parameter("enrollment_id"), "enrollment_id")
        act = {"pause": service.pause, "resume": service.resume, "stop": service.stop}[name]
        result = act(db(), user_id, enrollment_id)
        log.info(
            "gmail_addon_action action=%s enrollment_id=%s ok=%s", name, enrollment_id, result.ok
        )
        return cards.update(_panel(event, user_id, _people(event)), result.message)

    return run


def enrol(event: AddonEvent, user_id: int, email: str) -> dict[str, Any]:
    sequence_id = _id(event.form_value("sequence_id"), "sequence_id")
    address = event.parameter("address") or ""
    result = service.add_to_sequence(db(), user_id, sequence_id, address)
    log.info("gmail_addon_action action=enrol sequence_id=%s ok=%s", sequence_id, result.ok)
    return cards.update(_panel(event, user_id, _people(event)), result.message, pop=True)


def insert(event: AddonEvent, user_id: int, email: str) -> dict[str, Any]:
    chosen = event.form_value("document_id")
    document_id = None if chosen in (None, views.NO_DOCUMENT) else _id(chosen, "document_id")
    inserted = service.insert_for_draft(
        db(),
        user_id,
        source="gmail",
        draft_ref=event.parameter("draft_ref") or "",
        recipients=Recipients(to=event.to, cc=event.cc, bcc=event.bcc),
        document_id=document_id,
        track_opens=event.form_value("track_opens") is not None,
        sender=email,
    )
    log.info(
        "gmail_addon_action action=insert sent_message_id=%s per_recipient=%s",
        inserted.sent_message_id,
        inserted.per_recipient,
    )
    what = f"a tracked link to {inserted.document_name}" if inserted.document_name else None
    if what and inserted.pixel_url:
        what += " and open tracking"
    done = f"Inserted {what or 'open tracking'}" + (
        " for this recipient." if inserted.per_recipient else " for this email."
    )
    return cards.insert_into_draft(inserted.html, done)


# -- wiring -------------------------------------------------------------------------------

TRIGGERS: dict[str, Handler] = {"homepage": homepage, "message": message, "compose": compose}
ACTIONS: dict[str, Handler] = {
    **{name: enrollment_action(name) for name in ENROLLMENT_ACTIONS},
    "enrol": enrol,
    "insert": insert,
}


def _view(handler: Handler, *, is_action: bool) -> Callable[[], ResponseReturnValue]:
    def view() -> ResponseReturnValue:
        return _answer(handler, is_action=is_action)

    return view


for _name, _handler in TRIGGERS.items():
    bp.add_url_rule(f"/{_name}", _name, _view(_handler, is_action=False), methods=["POST"])
for _name, _handler in ACTIONS.items():
    bp.add_url_rule(
        f"/actions/{_name}", f"action_{_name}", _view(_handler, is_action=True), methods=["POST"]
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
