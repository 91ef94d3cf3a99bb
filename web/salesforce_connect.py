"""Connecting a team's own Salesforce org with OAuth: the start, the question, the save.

The Salesforce `FlowKind` of web.oauth_flow, which binds the flow to the browser
and person who started it and asks them to confirm; the Salesforce side (the
authorize URL, the code exchange, the identity, saving and revoking) is
worker.salesforce.connections'. Started from the Salesforce page's "Connect
Salesforce" (web.app.salesforce_page), or from the API, which answers the
flow's start link (/connect/start/<id>) for the same user to open while signed
in to Sightline. A confirmed connect lands on the Salesforce page.

The confirm page asks "Connect Salesforce org 00D… as admin@acme.example to
team Acme?": the org id and username come from Salesforce's identity service
for the token just granted, not from anything the request carried.

`worker.salesforce.connections` (and through it simple-salesforce) is imported
where a connect needs it, as web.api.salesforce does: 8 MiB RSS in the web
process (measured after create_app).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from flask import flash, url_for

from core.models import Role, User
from web import oauth_flow
from web.db import db
from web.oauth_flow import Flow, FlowError, Proposal, Saved
from web.roles import admins_sentence

if TYPE_CHECKING:
    from worker.salesforce.connections import OrgGrant

KIND = "salesforce"


def start_flow(team_id: int, user_id: int, login_url: str | None) -> str:
    """Start connecting the team's org for `user_id`; return the start link. Raises ConnectError."""
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.connections import authorize_link

    state = oauth_flow.new_state()
    url, login = authorize_link(state, login_url)
    path = oauth_flow.begin(
        KIND,
        state=state,
        team_id=team_id,
        user_id=user_id,
        consent_url=url,
        data={"login_url": login},
    )
    return oauth_flow.absolute(path)


class SalesforceFlow:
    label = "Salesforce"
    start_again = (
        "Start again with Connect Salesforce on the Salesforce page (or the API), in this "
        "browser while signed in to Sightline as yourself."
    )

    @property
    def start_page(self) -> tuple[str, str]:
        return url_for("salesforce_page.index"), "Salesforce"

    def finish(self, flow: Flow, values: Mapping[str, str]) -> Proposal:
        if values.get("error"):
            detail = values.get("error_description") or values["error"]
            raise FlowError(400, f"Salesforce did not connect the org: {detail}")
        # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
        from worker.salesforce.client import SalesforceError
        from worker.salesforce.connections import ConnectError, exchange_code

        try:
            grant = exchange_code(values.get("code", ""), str(flow.data["login_url"]))
        except ConnectError as exc:
            raise FlowError(400, str(exc)) from None
        except SalesforceError as exc:
            raise FlowError(502 if exc.kind == "transient" else 400, str(exc)) from None
        return Proposal(
            kind=KIND,
            team_id=flow.team_id,
            user_id=flow.user_id,
            verb="Connect",
            subject=f"Salesforce org {grant.org_id or grant.instance_url} as {grant.username}",
            detail="Sightline will write this team's emails, replies and engagement to this "
            "org as Tasks, as this Salesforce user, in place of the org it writes to now.",
            data={
                "login_url": grant.login_url,
                "instance_url": grant.instance_url,
                "org_id": grant.org_id,
                "username": grant.username,
                "credentials": grant.credentials,
            },
        )

    def save(self, proposal: Proposal) -> Saved:
        # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
        from worker.salesforce.connections import save_grant

        # Only an admin starts the flow; one made a member since then does not finish it
        # (the answer then revokes the grant, as a Cancel does).
        person = db().get(User, proposal.user_id)
        if person is None or person.role != Role.ADMIN or person.removed_at is not None:
            raise FlowError(
                403,
                "Only a team admin can connect Salesforce, and you are no longer one: "
                f"nothing was saved. {admins_sentence(proposal.team_id)}",
            )
        grant = _grant(proposal)
        save_grant(proposal.team_id, grant)
        message = f"Salesforce org {grant.org_id} ({grant.username}) is connected."
        flash(message, "success")  # shown on the Salesforce page, where the person lands
        return Saved(message, return_to=url_for("salesforce_page.index"))

    def discard(self, proposal: Proposal) -> None:
        # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
        from worker.salesforce.connections import revoke_grant

        revoke_grant(_grant(proposal))


def _grant(proposal: Proposal) -> OrgGrant:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.connections import OrgGrant

    data = proposal.data
    return OrgGrant(
        login_url=str(data["login_url"]),
        instance_url=str(data["instance_url"]),
        org_id=str(data["org_id"]) if data.get("org_id") else None,
        username=str(data["username"]),
        credentials={str(k): str(v) for k, v in dict(data["credentials"]).items()},
    )


oauth_flow.register(KIND, SalesforceFlow())
