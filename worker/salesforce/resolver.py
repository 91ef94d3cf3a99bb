"""Email → the Contact or Lead a Task belongs to, in few calls, cached per org.

Rule: a Contact with that email; else an unconverted Lead; else a converted
Lead's Contact (`ConvertedContactId`), which may carry another address.
Several matches: the most recently modified wins.

Lookups run as SOQL `IN (…)` queries whose text stays under the URI limit
(`client.soql_in`), a Contact query and a Lead query per chunk of addresses,
packed five to a composite call by the caller together with its other
queries: `queries()` says what to ask, `absorb()` reads the answers.

Answers are cached in Redis per org: a Contact for a day, a Lead for an hour
(it may be converted), "nobody" for five minutes (a Lead may be created any
minute). `forget()` drops entries Salesforce called stale
(ENTITY_IS_DELETED, INVALID_CROSS_REFERENCE_KEY, a converted Lead).

A Contact's AccountId, when it has one, is kept in `accounts` for the caller:
it says who a prospect's colleagues are (`worker.sequences.company`).

The address (Contact: Mailing*, Lead: City/State/Country) and Phone of the
record an address resolved to are read as a time zone guess, kept in `places`
for the caller (`core.zones.inference`).

`create_leads` makes Leads for addresses nobody has, when a team opted in.
It never calls Salesforce for an address it has a cached answer for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.redis import get_redis
from core.zones.inference import ZoneGuess, infer
from worker.salesforce.client import COLLECTION_LIMIT, CollectionOp, SalesforceApi, soql_in

log = logging.getLogger(__name__)

CONTACT_SECONDS = 86400
LEAD_SECONDS = 3600
NOBODY_SECONDS = 300
CONTACT_SOQL = (
    "SELECT Id, Email, AccountId, MailingCity, MailingState, MailingCountry, Phone "
    "FROM Contact WHERE Email IN {} ORDER BY LastModifiedDate DESC"
)
LEAD_SOQL = (
    "SELECT Id, Email, IsConverted, ConvertedContactId, City, State, Country, Phone "
    "FROM Lead WHERE Email IN {} ORDER BY LastModifiedDate DESC"
)
# Salesforce's Lead field lengths; longer values would be STRING_TOO_LONG.
LEAD_LIMITS = {"FirstName": 40, "LastName": 80, "Company": 255, "Email": 80}


@dataclass(frozen=True)
class Prospective:
    """What we know of a person, to make a Lead of them."""

    email: str
    name: str | None = None
    company: str | None = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WhoResolver:
    def __init__(self, org_key: str) -> None:
        self.org_key = org_key
        self.redis = get_redis()
        # email → the Account of the Contact found for it, from fresh answers only.
        self.accounts: dict[str, str] = {}
        # email → the zone its Contact's or Lead's address (or phone) says, fresh answers only.
        self.places: dict[str, ZoneGuess] = {}

    def _key(self, email: str) -> str:
        return f"sightline:sf:who:{self.org_key}:{email}"

    def cached(self, emails: Sequence[str]) -> tuple[dict[str, str | None], list[str]]:
        """(answers known from the cache, addresses still to look up)."""
        wanted = sorted(set(emails))
        values = self.redis.mget([self._key(e) for e in wanted]) if wanted else []
        found: dict[str, str | None] = {}
        missing: list[str] = []
        for email, value in zip(wanted, values, strict=True):
            if value is None:
                missing.append(email)
            else:
                found[email] = _text(value) or None
        return found, missing

    @staticmethod
    def queries(missing: Sequence[str]) -> list[str]:
        """The SOQL to run for `missing`: Contact chunks first, then Lead chunks."""
        return soql_in(CONTACT_SOQL, missing) + soql_in(LEAD_SOQL, missing)

    def absorb(
        self, missing: Sequence[str], answers: Sequence[list[dict[str, Any]]]
    ) -> dict[str, str | None]:
        """Read the answers to `queries(missing)` (same order); cache and return them."""
        contact_count = len(soql_in(CONTACT_SOQL, missing))
        contacts = [r for page in answers[:contact_count] for r in page]
        leads = [r for page in answers[contact_count:] for r in page]
        who: dict[str, str] = {}
        for record in contacts:
            email = str(record.get("Email") or "").lower()
            if who.setdefault(email, str(record["Id"])) == str(record["Id"]) and record.get(
                "AccountId"
            ):
                self.accounts[email] = str(record["AccountId"])
        converted: dict[str, str] = {}
        for record in leads:
            email = str(record.get("Email") or "").lower()
            if not record.get("IsConverted"):
                who.setdefault(email, str(record["Id"]))
            elif record.get("ConvertedContactId"):
                converted.setdefault(email, str(record["ConvertedContactId"]))
        for email, contact_id in converted.items():
            who.setdefault(email, contact_id)
        self._read_places(who, contacts, leads)
        found: dict[str, str | None] = {}
        with self.redis.pipeline() as pipe:
            for email in missing:
                answer = who.get(email)
                found[email] = answer
                seconds = NOBODY_SECONDS
                if answer:
                    seconds = CONTACT_SECONDS if answer.startswith("003") else LEAD_SECONDS
                pipe.set(self._key(email), answer or "", ex=seconds)
            pipe.execute()
        return found

    def _read_places(
        self, who: dict[str, str], contacts: list[dict[str, Any]], leads: list[dict[str, Any]]
    ) -> None:
        """Where the record each address resolved to says the person is (`core.zones`)."""
        for record, prefix in [*((c, "Mailing") for c in contacts), *((r, "") for r in leads)]:
            email = str(record.get("Email") or "").lower()
            if who.get(email) != str(record["Id"]) or email in self.places:
                continue
            guess = infer(
                email=None,
                phone=record.get("Phone"),
                country=record.get(f"{prefix}Country"),
                state=record.get(f"{prefix}State"),
                city=record.get(f"{prefix}City"),
            )
            if guess is not None:
                self.places[email] = guess

    def resolve(self, api: SalesforceApi, emails: Sequence[str]) -> dict[str, str | None]:
        """Cached answers, and one round of queries for the rest."""
        found, missing = self.cached(emails)
        if missing:
            found.update(self.absorb(missing, api.query_many(self.queries(missing))))
        return found

    def forget(self, emails: Sequence[str]) -> None:
        if emails:
            self.redis.delete(*[self._key(e) for e in set(emails)])

    def create_leads(self, api: SalesforceApi, people: Sequence[Prospective]) -> dict[str, str]:
        """Make a Lead for each person (opt-in); email → new Lead id for those created.

        An address too long for Lead.Email is skipped (it stays waiting). If the
        call fails, nothing is cached, so the next attempt looks again before
        creating: a write we never heard back from is found, not repeated.
        """
        records = []
        for person in people:
            if len(person.email) > LEAD_LIMITS["Email"]:
                log.warning("salesforce_lead_skipped reason=email_too_long org=%s", self.org_key)
                continue
            records.append(_lead_record(person))
        created: dict[str, str] = {}
        if not records:
            return created
        ops = [
            CollectionOp("POST", "composite/sobjects", records[start : start + COLLECTION_LIMIT])
            for start in range(0, len(records), COLLECTION_LIMIT)
        ]
        self.forget([str(r["Email"]) for r in records])
        for op, result in zip(ops, api.write_many(ops), strict=True):
            if result.error is not None:
                log.warning(
                    "salesforce_lead_create_failed org=%s kind=%s error=%s",
                    self.org_key,
                    result.error.kind,
                    result.error,
                )
                continue
            for record, item in zip(op.records, result.items, strict=True):
                email = str(record["Email"])
                if item.get("success"):
                    created[email] = str(item["id"])
                    self.redis.set(self._key(email), str(item["id"]), ex=LEAD_SECONDS)
                    log.info("salesforce_lead_created org=%s lead_id=%s", self.org_key, item["id"])
                else:
                    log.warning(
                        "salesforce_lead_refused org=%s errors=%s", self.org_key, item.get("errors")
                    )
        return created


def _lead_record(person: Prospective) -> dict[str, Any]:
    local, _, domain = person.email.partition("@")
    name = (person.name or "").strip()
    first, _, last = name.rpartition(" ") if " " in name else ("", "", name)
    values = {
        "FirstName": first or None,
        "LastName": last or local or person.email,
        "Company": (person.company or "").strip() or domain or "Unknown",
        "Email": person.email,
    }
    record: dict[str, Any] = {"attributes": {"type": "Lead"}}
    for field_name, value in values.items():
        if value is not None:
            record[field_name] = value[: LEAD_LIMITS[field_name]]
    return record
