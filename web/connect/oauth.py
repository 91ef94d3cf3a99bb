"""Gmail and Microsoft 365 mailboxes through OAuth: the flow's start and its `FlowKind`.

`web.oauth_flow` binds a consent to the browser and person who started it and
runs the callbacks and the confirm step; this module is the mailbox kind of
flow there (`MailboxFlow`): the consent URL and its PKCE secret (or MSAL's
flow), trading the provider's answer for tokens and an address, and saving the
confirmed mailbox through `worker.sync.connecting`::

    start_oauth(kind) ─▶ verifier + mailbox id in a flow (web.oauth_flow)
        ─▶ start link /connect/start/<id>, opened by the same user, signed in
    browser ─▶ Google / Microsoft ─▶ /connect/<kind>/callback (same browser and user only)
        ─▶ MailboxFlow.finish: code + verifier → tokens (provider module); the address
           checked (a reconnect must be the same address) ─▶ "Connect dana@… (Gmail)?"
        ─▶ save: mailbox created or updated, first sync queued, push started (worker)
        ─▶ discard: Google's grant revoked (unless a mailbox here uses it), tokens forgotten

A connect's tokens wait for the person's Connect only in web.oauth_flow's
confirm record (encrypted, ten minutes); this module never logs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import url_for

from config import get_settings
from core.models import MailboxKind
from web import oauth_flow
from web.api.common import CONNECT_STATUS
from web.db import db
from web.oauth_flow import Flow, FlowError, Proposal, Saved
from web.redirects import safe_redirect_path
from worker.sync import graph_oauth
from worker.sync.base import ProviderError
from worker.sync.connecting import (
    OAUTH_KINDS,
    PROVIDER_NAMES,
    ConnectError,
    in_use,
    save_mailbox,
    target,
)


def redirect_uri(kind: str) -> str:
    return f"{get_settings().public_base_url}/connect/{kind}/callback"


def start_oauth(
    kind: str,
    *,
    team_id: int,
    user_id: int,
    mailbox_id: int | None = None,
    login_hint: str | None = None,
    return_to: str | None = None,
) -> str:
    """Start a flow for `user_id`; return its start link (web.oauth_flow). Raises ProviderError.

    Only that user, signed in, can open the link; the browser that opens it is
    the only one that can finish the flow.
    """
    state = oauth_flow.new_state()
    if kind == MailboxKind.GMAIL:
        # lazy import: google-api-python-client and google-auth-oauthlib cost the web
        # process 6.8 MiB RSS and 0.1 s (measured after create_app); only a Gmail connect
        # needs them.
        from worker.sync import gmail_oauth

        url, secret = gmail_oauth.authorization_url(redirect_uri(kind), state, login_hint)
        kept: Any = secret
    elif kind == MailboxKind.GRAPH:
        url, flow = graph_oauth.authorization_url(redirect_uri(kind), state, login_hint)
        kept = flow
    else:
        raise ValueError(f"{kind} mailboxes do not connect with OAuth")
    data = {"secret": kept, "mailbox_id": mailbox_id, "return_to": return_to}
    return oauth_flow.begin(
        kind, state=state, team_id=team_id, user_id=user_id, consent_url=url, data=data
    )


class MailboxFlow:
    """Gmail and Microsoft 365 in web.oauth_flow: tokens for a mailbox, saved once confirmed."""

    start_again = "Start again from the Mailboxes page (or the API), in this browser."

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.label = PROVIDER_NAMES[kind]

    @property
    def start_page(self) -> tuple[str, str]:
        return url_for("mailboxes.page"), "Mailboxes"

    def finish(self, flow: Flow, values: Mapping[str, str]) -> Proposal:
        """Trade the answer for tokens; check the address fits (a reconnect: the same one)."""
        if values.get("error"):
            detail = values.get("error_description") or values["error"]
            raise FlowError(400, f"{self.label} did not connect the mailbox: {detail}")
        secret = flow.data.get("secret")
        try:
            if self.kind == MailboxKind.GMAIL:
                # lazy import: Google's libraries, 6.8 MiB RSS in the web process (above).
                from worker.sync import gmail_oauth

                email, credentials = gmail_oauth.exchange_code(
                    values.get("code", ""), redirect_uri(self.kind), str(secret)
                )
            else:
                email, credentials = graph_oauth.exchange_code(dict(secret or {}), dict(values))
        except ProviderError as exc:
            raise FlowError(400, str(exc)) from None
        mailbox_id = flow.data.get("mailbox_id")
        proposal = Proposal(
            kind=self.kind,
            team_id=flow.team_id,
            user_id=flow.user_id,
            verb="Reconnect" if mailbox_id is not None else "Connect",
            subject=f"{email} ({self.label})",
            detail="Sightline will read this mailbox's replies and bounces, and send your "
            "emails and sequence steps from it.",
            data={
                "email": email,
                "credentials": credentials,
                "mailbox_id": mailbox_id,
                "return_to": flow.data.get("return_to"),
            },
        )
        try:
            target(db(), flow.team_id, self.kind, email, mailbox_id)
        except ConnectError as exc:
            self.discard(proposal)
            raise FlowError(CONNECT_STATUS[exc.code], exc.message) from None
        return proposal

    def save(self, proposal: Proposal) -> Saved:
        data = proposal.data
        try:
            mailbox = save_mailbox(
                db(),
                team_id=proposal.team_id,
                user_id=proposal.user_id,
                kind=self.kind,
                email=str(data["email"]),
                credentials=dict(data["credentials"]),
                mailbox_id=data.get("mailbox_id"),
            )
        except ConnectError as exc:
            raise FlowError(CONNECT_STATUS[exc.code], exc.message) from None
        # Checked when the flow started (the API's 422); checked again here because
        # the stored flow outlives a release that tightens the rule.
        return_to = data.get("return_to")
        return Saved(
            f"{mailbox.email} ({self.label}) is connected. Replies to your emails will be seen "
            "within seconds.",
            safe_redirect_path(return_to) if return_to else None,
        )

    def discard(self, proposal: Proposal) -> None:
        """Google: revoke, unless a mailbox here uses the account (Google revokes the whole
        grant, which would disconnect it). Microsoft has no per-grant revocation: forgotten."""
        email = str(proposal.data.get("email", ""))
        if self.kind != MailboxKind.GMAIL or in_use(db(), self.kind, email):
            return
        # lazy import: google-api-python-client, 4.8 MiB RSS in the web process.
        from worker.sync import gmail

        gmail.GmailProvider(email, dict(proposal.data.get("credentials") or {})).revoke()


for _kind in OAUTH_KINDS:
    oauth_flow.register(_kind, MailboxFlow(_kind))
