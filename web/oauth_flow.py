"""A provider's consent (OAuth), bound to the browser and person who started it; the confirm step.

Gmail, Microsoft 365 and Salesforce connect through a consent page at the
provider. Whoever finishes that page chooses *which* mailbox or org is
connected; this module makes sure they cannot choose *into which team*. A flow
is finished only in the browser that started it, by the signed-in person who
started it, and nothing is saved until that person has seen what the provider
connected and pressed Connect::

    start (the page's form, or the API: no browser yet)
      └▶ flow record under a fresh `state`, and a one-time start id ─▶ /connect/start/<id>
    GET /connect/start/<id>, signed in as the starter
      └▶ cookie sl_connect = random nonce (HttpOnly, SameSite=Lax, Path=/connect);
         sha256(nonce) bound to the state (the first browser wins) ─▶ on to the provider
    the provider ─▶ our redirect URI with code and state
      Google:     GET  /connect/gmail/callback          (a top-level GET: cookies come along)
      Microsoft:  POST /connect/graph/callback          (form_post, cross-site: no cookies)
      Salesforce: GET  /api/v1/salesforce/oauth/callback (outside the cookie's path)
        └▶ the last two park the answer under a one-time relay id, 303 to
           GET /connect/<kind>/callback?relay=<id>, where the cookies come along
    callback: the same browser? the same signed-in person? ─ no ─▶ 401/403 page; the flow
      │                                                         stays, the code is refused
      └▶ yes: the flow claimed (GETDEL); code → tokens, nothing saved
         └▶ proposal (encrypted) ─▶ 303 /connect/confirm/<id>
    GET  /connect/confirm/<id>: "Connect dana@example.com (Gmail) to team Acme?"
    POST /connect/confirm/<id> (CSRF; the same browser and person): Connect saves,
         Cancel gives the grant back (where that harms nothing else) and forgets it

Redis keys (`sightline:oauth:<what>:<id>`, all expiring): `flow` and `start`
(10 minutes; the flow Fernet-encrypted: it holds the PKCE verifier), `bound`
(the browser's hash), `relay` (2 minutes, encrypted), `confirm` (10 minutes,
encrypted: it holds the tokens), `refused` (a code's hash, 15 minutes).

Why a wrong browser leaves the flow alone: a consent link travels (mail, chat,
a shoulder); whoever else opens it must neither finish the starter's connect
nor spoil it. Why a code that reached a wrong browser is refused from then on:
a person told "another browser" may send that page's address back to the one
who sent them the link, whose browser would otherwise finish with their code.

Each provider registers a `FlowKind` (web.connect.oauth: Gmail and Microsoft 365;
web.salesforce_connect: Salesforce): how to start again, how to trade the
answer for a proposal, how to save or discard one. This module holds the flow
record, the kinds and their storage; `web.oauth_pages` serves the three steps
and holds the browser and person checks.

Must never: save a grant before the confirm POST, put a token in a page or a
URL, or log a token, a code or a nonce.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flask import url_for

from config import get_settings
from core.crypto import CredentialsError, decrypt_json, encrypt_json
from core.redis import get_redis

log = logging.getLogger(__name__)

FLOW_SECONDS = 600
RELAY_SECONDS = 120
CONFIRM_SECONDS = 600
REFUSED_CODE_SECONDS = 900  # longer than any provider's code lives (Salesforce's: 15 minutes)
COOKIE = "sl_connect"
COOKIE_PATH = "/connect"
KEY = "sightline:oauth:{what}:{id}"
# What a provider's answer may hold: a few short fields (code, state, session_state …).
MAX_FIELDS = 20
MAX_FIELD_LENGTH = 4096
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")


class FlowError(Exception):
    """The provider's answer cannot be connected; `message` tells the person why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Flow:
    """A started consent: who started it, for which team, and what the provider needs back."""

    kind: str
    team_id: int
    user_id: int
    data: dict[str, Any]  # the kind's own: PKCE verifier or MSAL flow, mailbox id, login URL …


@dataclass(frozen=True)
class Proposal:
    """A finished consent waiting for Connect or Cancel; `data` (tokens) only stored encrypted."""

    kind: str
    team_id: int
    user_id: int
    verb: str  # "Connect" or "Reconnect"
    subject: str  # what the provider connected, as it said: "dana@example.com (Gmail)"
    detail: str  # what connecting it lets Sightline do
    data: dict[str, Any]


@dataclass(frozen=True)
class Saved:
    message: str
    return_to: str | None = None


class FlowKind(Protocol):
    """One provider's part of the flow."""

    @property
    def label(self) -> str:
        """The provider's name for pages: "Gmail", "Salesforce"."""

    @property
    def start_again(self) -> str:
        """A sentence: where a person starts a new flow."""

    @property
    def start_page(self) -> tuple[str, str] | None:
        """(path, name) of the page to start from, if there is one."""

    def finish(self, flow: Flow, values: Mapping[str, str]) -> Proposal:
        """Trade the provider's answer for tokens and say what would be connected; save nothing.

        Raises:
            FlowError: the provider refused, or the answer cannot be connected to this team.
        """

    def save(self, proposal: Proposal) -> Saved:
        """Connect what the person confirmed. Raises FlowError."""

    def discard(self, proposal: Proposal) -> None:
        """Give the grant back (where that harms nothing else) and forget it. Never raises."""


KINDS: dict[str, FlowKind] = {}


def register(kind: str, handler: FlowKind) -> None:
    KINDS[kind] = handler


# -- starting -------------------------------------------------------------------------


def new_state() -> str:
    """The `state` to put in the provider's consent URL (and to pass to `begin`)."""
    return secrets.token_urlsafe(32)


def begin(
    kind: str,
    *,
    state: str,
    team_id: int,
    user_id: int,
    consent_url: str,
    data: dict[str, Any],
) -> str:
    """Remember a started flow; return the path of its one-time start link (/connect/start/<id>).

    Nobody is sent to `consent_url` but the starter, signed in, from that link.
    """
    start_id = secrets.token_urlsafe(24)
    record = {
        "kind": kind,
        "team_id": team_id,
        "user_id": user_id,
        "start_id": start_id,
        "consent_url": consent_url,
        "data": data,
    }
    pipe = get_redis().pipeline()
    pipe.set(redis_key("flow", state), encrypt_json(record), ex=FLOW_SECONDS)
    pipe.set(redis_key("start", start_id), state, ex=FLOW_SECONDS)
    pipe.execute()
    log.info("connect_started kind=%s team_id=%s user_id=%s", kind, team_id, user_id)
    return url_for("connect.start", start_id=start_id)


def absolute(path: str) -> str:
    """A path of ours as a link to hand out (the API answers these)."""
    return get_settings().public_base_url + path


# -- storage -------------------------------------------------------------------------


def load_record(what: str, id_: str) -> dict[str, Any] | None:
    """The encrypted record stored under `what` and `id_`, or None (absent, expired, unreadable)."""
    return decrypt_record(get_redis().get(redis_key(what, id_)))


def decrypt_record(raw: Any) -> dict[str, Any] | None:
    """A record as Redis returned it, decrypted; None when it cannot be (as good as expired)."""
    if not raw:
        return None
    try:
        return decrypt_json(raw.decode() if isinstance(raw, bytes) else str(raw))
    except CredentialsError:
        return None  # written under a key since retired: as good as expired


def as_text(raw: Any) -> str | None:
    """A plain Redis value as text (None stays None)."""
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def redis_key(what: str, id_: str) -> str:
    """`sightline:oauth:<what>:<id>`: what is one of flow, start, bound, relay, confirm, refused."""
    return KEY.format(what=what, id=id_)
