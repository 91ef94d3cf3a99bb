"""The message a user has open in Gmail, read for the add-on: who is on it.

The Gmail add-on (`web.addons.gmail`) is given, per event, the user's OAuth
token for the add-on's scopes (`gmail.addons.current.message.metadata`) and a
token for the one open message; Google's reference reads that message with
`users.messages.get` authorised by the first and the second in the
`X-Goog-Gmail-Access-Token` header. Only the From, To and Cc headers are asked
for (`format=metadata`): one call of 5 quota units, no body.

Nothing is stored, and no mailbox of ours is involved: the tokens are Google's
for this one call. Errors become `ProviderError` (`worker.sync.gmail_api`).
"""

from __future__ import annotations

import functools
from email.utils import getaddresses

import google.oauth2.credentials
import google_auth_httplib2

from config import get_settings
from worker.sync.gmail_api import call_api, shared_http, users_resource

PEOPLE_HEADERS = ("From", "To", "Cc")
MESSAGE_TOKEN_HEADER = "X-Goog-Gmail-Access-Token"  # noqa: S105 - a header name
MAX_PEOPLE = 50
MAX_HEADER = 8000  # characters of one header read: the parse stays cheap on odd mail


def message_people(user_token: str, message_token: str, message_id: str) -> list[str]:
    """The addresses in the open message's From, To and Cc, in that order, once each.

    Raises:
        ProviderError: Gmail refused or could not be reached.
    """
    credentials = google.oauth2.credentials.Credentials(token=user_token)  # type: ignore[no-untyped-call]
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=shared_http())
    endpoint = get_settings().providers.gmail_api_endpoint
    request = (
        users_resource(endpoint)
        .messages()
        .get(userId="me", id=message_id, format="metadata", metadataHeaders=list(PEOPLE_HEADERS))
    )
    request.headers[MESSAGE_TOKEN_HEADER] = message_token
    message = call_api("reading the open message", functools.partial(request.execute, http=http))
    headers = (message.get("payload") or {}).get("headers") or []
    values = [
        str(h.get("value") or "")[:MAX_HEADER]
        for name in PEOPLE_HEADERS
        for h in headers
        if isinstance(h, dict) and str(h.get("name", "")).lower() == name.lower()
    ]
    people: list[str] = []
    for _, found in getaddresses(values):
        address = found.strip().lower()
        if "@" in address and address not in people:
            people.append(address)
    return people[:MAX_PEOPLE]
