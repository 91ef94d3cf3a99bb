"""Which org a team writes to and whether it can be written to now: the `OrgProfile`.

A flush reads it once; the Salesforce page and the banner on every page read it
too. That is why it lives apart from `connections` (which imports the client,
simple-salesforce: 8 MiB RSS in a web process): reading a profile costs one
lookup of the team's `salesforce_connections` row (unique on team_id) and the
settings, nothing more. This module never calls Salesforce.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from config import get_settings
from core.db import session_scope
from core.models import SalesforceAuthKind, SalesforceConnection, SalesforceConnectionStatus

DEFAULT_BUDGET_SHARE = 80


@dataclass(frozen=True)
class OrgProfile:
    team_id: int
    org_key: str
    auth_kind: str
    connection_id: int | None
    budget_share: int
    create_leads: bool
    ready: bool
    reason: str | None = None


def profile_of(team_id: int, row: SalesforceConnection | None) -> OrgProfile:
    """The profile a team's connection row (None: the team has none) gives."""
    share = row.budget_share if row is not None else DEFAULT_BUDGET_SHARE
    create_leads = bool(row.create_leads) if row is not None else False
    if row is None or row.auth_kind == SalesforceAuthKind.DEFAULT:
        ready = get_settings().salesforce.configured
        return OrgProfile(
            team_id,
            "default",
            SalesforceAuthKind.DEFAULT,
            None,
            share,
            create_leads,
            ready,
            None if ready else "no Salesforce org: connect one or set SALESFORCE_* settings",
        )
    ready = row.status == SalesforceConnectionStatus.ACTIVE
    return OrgProfile(
        team_id,
        f"org:{row.org_id}" if row.org_id else f"conn:{row.id}",
        row.auth_kind,
        row.id,
        share,
        create_leads,
        ready,
        None if ready else f"Salesforce connection {row.status}: {row.status_reason or ''}".strip(),
    )


def load_profile(team_id: int) -> OrgProfile:
    """The team's org and settings, as a flush needs them."""
    with session_scope() as session:
        row = session.scalar(
            select(SalesforceConnection).where(SalesforceConnection.team_id == team_id)
        )
        if row is not None:
            session.expunge(row)
    return profile_of(team_id, row)
