"""A prospect's zone from their Contact's or Lead's address in the TLS fake org.

Through the real outbox flush (simple-salesforce against the fake): resolving
who a Task belongs to also reads the record's address and phone, and the
prospect's zone follows, unless a person set one by hand.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Prospect
from core.zones.inference import from_domain
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.test_salesforce_outbox import owe, salesforce, team_id
from worker.salesforce.outbox import flush_team
from worker.sequences.send_windows import learn_zone, set_zone

pytestmark = pytest.mark.integration
__all__ = ["salesforce", "team_id"]  # fixtures, shared with test_salesforce_outbox


def add_prospect(team_id: int, email: str, zone: str | None = None) -> None:
    with session_scope() as session:
        prospect = Prospect(team_id=team_id, email=email)
        learn_zone(prospect, from_domain(email))
        if zone:
            set_zone(prospect, zone)
        session.add(prospect)


def zones() -> dict[str, tuple[str | None, str | None, str | None]]:
    with session_scope() as session:
        rows = session.execute(
            select(
                Prospect.email,
                Prospect.time_zone,
                Prospect.time_zone_source,
                Prospect.time_zone_note,
            )
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_the_contact_or_lead_address_gives_the_zone_unless_one_was_set(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    salesforce.add_contact(
        "dana@acme.de", MailingCity="Austin", MailingState="TX", MailingCountry="United States"
    )
    salesforce.add_lead("walter@acme.test", Country="Australia", State="WA")
    salesforce.add_lead("fox@acme.test", Phone="+44 20 7946 0000")
    salesforce.add_contact("monica@acme.test", MailingCountry="Japan")
    add_prospect(team_id, "dana@acme.de")  # the domain says Berlin; Salesforce knows better
    add_prospect(team_id, "walter@acme.test")
    add_prospect(team_id, "fox@acme.test")
    add_prospect(team_id, "monica@acme.test", zone="America/Denver")  # set by hand: kept
    for n, email in enumerate(
        ["dana@acme.de", "walter@acme.test", "fox@acme.test", "monica@acme.test"]
    ):
        owe(team_id, 1, email=email, start=10 * n)
    assert flush_team(team_id).done == 4
    assert zones() == {
        "dana@acme.de": ("America/Chicago", "salesforce", "Salesforce address: Austin, TX, US"),
        "walter@acme.test": ("Australia/Perth", "salesforce", "Salesforce address: WA, AU"),
        "fox@acme.test": ("Europe/London", "phone", "the phone number's code +44"),
        "monica@acme.test": ("America/Denver", "set", None),
    }
