"""The event object Google posts to the add-on, read for what the cards need.

The HTTP runtime's event (Google's "Event objects" reference)::

    {"commonEventObject": {"hostApp": "GMAIL", "platform": "WEB",
                           "timeZone": {"id": "Europe/Berlin", "offset": 3600000},
                           "parameters": {"key": "value"},            # an action's
                           "formInputs": {"name": {"stringInputs": {"value": ["…"]}}}},
     "authorizationEventObject": {"userOAuthToken": "…", "userIdToken": "…",
                                  "systemIdToken": "…"},
     "gmail": {"messageId": "msg-f:1234567", "threadId": "thread-f:2345678",
               "accessToken": "…",                          # the open message's token
               "toRecipients": ["…"], "ccRecipients": [], "bccRecipients": []}}

Compose events carry the draft's recipients in `gmail` (the HTTP runtime) or in
`draftMetadata` (Apps Script's spelling): both are read. Values are bounded
here, so nothing downstream sees a megabyte of "recipients".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_RECIPIENTS = 100
MAX_VALUE = 1000
MAX_TOKEN = 4096


def _text(value: Any, limit: int = MAX_VALUE) -> str | None:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        return None
    return value.strip()


def _addresses(*sources: Any) -> list[str]:
    found: list[str] = []
    for source in sources:
        if isinstance(source, list):
            found += [v.strip() for v in source if isinstance(v, str) and 0 < len(v) <= 320]
    return found[:MAX_RECIPIENTS]


def gmail_message_id(value: str | None) -> str | None:
    """The Gmail API's id of the event's message.

    The HTTP runtime names messages `msg-f:<decimal>`; the Gmail API's id is the
    same number in hexadecimal. An id already in the API's form is kept.
    """
    if value is None:
        return None
    if value.startswith("msg-f:") and value[6:].isdigit() and len(value) <= 30:
        return format(int(value[6:]), "x")
    if all(c in "0123456789abcdef" for c in value) and len(value) <= 30:
        return value
    return None


@dataclass(frozen=True)
class AddonEvent:
    host_app: str | None
    parameters: dict[str, str]
    form_inputs: dict[str, list[str]]
    time_zone: ZoneInfo
    user_oauth_token: str | None
    message_id: str | None  # the Gmail API's id of the open message
    thread_id: str | None
    message_token: str | None  # gmail.accessToken: X-Goog-Gmail-Access-Token
    to: list[str]
    cc: list[str]
    bcc: list[str]

    def parameter(self, name: str) -> str | None:
        return self.parameters.get(name)

    def form_value(self, name: str) -> str | None:
        values = self.form_inputs.get(name) or []
        return values[0] if values else None


def _zone(common: dict[str, Any]) -> ZoneInfo:
    zone = common.get("timeZone")
    name = _text(zone.get("id"), 64) if isinstance(zone, dict) else None
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _form_inputs(common: dict[str, Any]) -> dict[str, list[str]]:
    inputs = common.get("formInputs")
    found: dict[str, list[str]] = {}
    if not isinstance(inputs, dict):
        return found
    for name, value in list(inputs.items())[:50]:
        strings = value.get("stringInputs") if isinstance(value, dict) else None
        values = strings.get("value") if isinstance(strings, dict) else None
        if isinstance(name, str) and isinstance(values, list):
            found[name] = [v for v in values[:50] if isinstance(v, str) and len(v) <= MAX_VALUE]
    return found


def read_event(body: Any) -> AddonEvent:
    """The parts of Google's event the add-on uses; anything missing or odd reads as absent."""
    event = body if isinstance(body, dict) else {}
    common = event.get("commonEventObject")
    common = common if isinstance(common, dict) else {}
    authorization = event.get("authorizationEventObject")
    authorization = authorization if isinstance(authorization, dict) else {}
    gmail = event.get("gmail")
    gmail = gmail if isinstance(gmail, dict) else {}
    draft = event.get("draftMetadata") or gmail.get("draftMetadata")
    draft = draft if isinstance(draft, dict) else {}
    raw_parameters = common.get("parameters")
    parameters = {
        str(k): v
        for k, v in (raw_parameters.items() if isinstance(raw_parameters, dict) else [])
        if isinstance(v, str) and len(v) <= 20 * MAX_VALUE
    }
    return AddonEvent(
        host_app=_text(common.get("hostApp"), 20),
        parameters=parameters,
        form_inputs=_form_inputs(common),
        time_zone=_zone(common),
        user_oauth_token=_text(authorization.get("userOAuthToken"), MAX_TOKEN),
        message_id=gmail_message_id(_text(gmail.get("messageId"), 40)),
        thread_id=_text(gmail.get("threadId"), 40),
        message_token=_text(gmail.get("accessToken"), MAX_TOKEN),
        to=_addresses(gmail.get("toRecipients"), draft.get("toRecipients")),
        cc=_addresses(gmail.get("ccRecipients"), draft.get("ccRecipients")),
        bcc=_addresses(gmail.get("bccRecipients"), draft.get("bccRecipients")),
    )
