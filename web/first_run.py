"""The first-run checklist the empty Live Feed shows: what a new team does first.

Three steps, each ticked from the team's own rows, never from a flag someone
must remember to set: a mailbox connected (any mailbox not disconnected), a
Salesforce org (the team's own connection active, or the operator's org when the
team has none of its own), a sequence created. Each names where it is done. The
feed shows the list only while the team's feed is empty (`web.feed`), so a team
already at work never sees it.

Must never: call Salesforce or a mailbox provider (this runs on every empty feed
page), or count another team's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import get_settings
from core.models import (
    Mailbox,
    MailboxStatus,
    SalesforceAuthKind,
    SalesforceConnection,
    SalesforceConnectionStatus,
    Sequence,
)


@dataclass(frozen=True)
class Step:
    key: str  # mailbox, salesforce, sequence
    title: str
    done: bool
    hint: str


def _has_mailbox(session: Session, team_id: int) -> bool:
    found = session.scalar(
        select(Mailbox.id)
        .where(Mailbox.team_id == team_id, Mailbox.status != MailboxStatus.DISABLED)
        .limit(1)
    )
    return found is not None


def _has_salesforce(session: Session, team_id: int) -> bool:
    """The team's own org is connected, or it uses the operator's org (SALESFORCE_*)."""
    row = session.scalar(
        select(SalesforceConnection).where(SalesforceConnection.team_id == team_id)
    )
    if row is None or row.auth_kind == SalesforceAuthKind.DEFAULT:
        return get_settings().salesforce.configured
    return row.status == SalesforceConnectionStatus.ACTIVE


def _has_sequence(session: Session, team_id: int) -> bool:
    found = session.scalar(select(Sequence.id).where(Sequence.team_id == team_id).limit(1))
    return found is not None


def salesforce_connectable() -> bool:
    """A team can connect its own org here: the operator set up a Connected App."""
    settings = get_settings().salesforce
    return bool(settings.client_id and settings.client_secret)


def checklist(session: Session, team_id: int) -> list[Step]:
    """The three first steps, each ticked when the team's data says it is done."""
    return [
        Step(
            "mailbox",
            "Connect a mailbox",
            _has_mailbox(session, team_id),
            "Gmail, Microsoft 365, Exchange or IMAP: emails go out from it and replies are "
            "found in it.",
        ),
        Step(
            "salesforce",
            "Connect Salesforce",
            _has_salesforce(session, team_id),
            "Every email, reply and open becomes a Task on the prospect's Contact or Lead.",
        ),
        Step(
            "sequence",
            "Create a sequence",
            _has_sequence(session, team_id),
            "A few emails, days apart; a reply stops it for that prospect.",
        ),
    ]
