"""The fake Salesforce, driven by the real simple-salesforce client and requests.

Each test pins one behaviour of a real org that Sightline's Salesforce code
relies on; if the fake drifted from the wire format (error shapes, status
codes, headers, quotas, expiries) the client would raise something else, or
nothing, and the test fails.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import hmac
import io
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from simple_salesforce.api import Salesforce, SFType
from simple_salesforce.bulk2 import SFBulk2Handler, SFBulk2Type
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from tests.fakes.salesforce import (
    EXT_ID_FIELD,
    FakeSalesforce,
    FakeSalesforceProcess,
    generate_rsa_keypair,
    make_jwt,
    normalize_id,
)

pytest_plugins = ["tests.fakes.salesforce_plugin"]

TOKEN_PATH = "/services/oauth2/token"


def task(**fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Task"}, **fields}


def collection(sf: Salesforce, records: list[dict[str, Any]], all_or_none: bool = False) -> Any:
    return sf.restful(
        "composite/sobjects", method="POST", json={"allOrNone": all_or_none, "records": records}
    )


def upsert(sf: Salesforce, records: list[dict[str, Any]], field: str = EXT_ID_FIELD) -> Any:
    return sf.restful(
        f"composite/sobjects/Task/{field}",
        method="PATCH",
        json={"allOrNone": False, "records": records},
    )


def body(exc: pytest.ExceptionInfo[Any]) -> Any:
    """The parsed error body simple-salesforce attached to its exception."""
    return exc.value.content


def error_code(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(body(exc)[0]["errorCode"])


def tasks_api(sf: Salesforce) -> SFType:
    api = sf.Task
    assert isinstance(api, SFType)
    return api


def bulk_tasks(sf: Salesforce) -> SFBulk2Type:
    handler = sf.bulk2
    assert isinstance(handler, SFBulk2Handler)
    api = handler.Task
    assert isinstance(api, SFBulk2Type)
    return api


def codes(results: list[dict[str, Any]]) -> list[str | None]:
    return [None if r["success"] else r["errors"][0]["statusCode"] for r in results]


# -- TLS and processes ----------------------------------------------------------------


def test_speaks_tls_with_its_own_ca_only(fake_salesforce: FakeSalesforce) -> None:
    assert fake_salesforce.instance_url.startswith("https://127.0.0.1:")
    assert Path(fake_salesforce.ca_bundle).read_text().startswith("-----BEGIN CERTIFICATE-----")
    public_trust = requests.Session()
    public_trust.trust_env = False  # ignore REQUESTS_CA_BUNDLE: only the public CAs
    with pytest.raises(requests.exceptions.SSLError):
        public_trust.get(f"{fake_salesforce.instance_url}/services/data/", timeout=5)
    ok = requests.get(
        f"{fake_salesforce.instance_url}/services/data/",
        verify=fake_salesforce.ca_bundle,
        timeout=5,
    )
    assert {"version": "59.0"}.items() <= next(
        v for v in ok.json() if v["version"] == "59.0"
    ).items()


def test_ca_bundle_is_trusted_by_another_process(fake_salesforce: FakeSalesforce) -> None:
    script = (
        "import os, requests; "
        "print(requests.get(os.environ['SF_URL'] + '/services/data/', timeout=5).status_code)"
    )
    env = {
        **os.environ,
        "SF_URL": fake_salesforce.instance_url,
        "REQUESTS_CA_BUNDLE": fake_salesforce.ca_bundle,
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "200"


def test_runs_as_a_process_steered_through_the_admin_api(tmp_path: Path) -> None:
    with FakeSalesforceProcess(tmp_path) as fake:
        assert fake.admin is not None
        contact = fake.admin.add_contact("proc@example.com")
        session = requests.Session()
        session.verify = fake.ca_bundle
        session.trust_env = False  # this machine's REQUESTS_CA_BUNDLE would win over verify
        sf = Salesforce(
            instance_url=fake.instance_url, session_id=fake.admin.access_token(), session=session
        )
        found = sf.query("SELECT Id FROM Contact WHERE Email = 'PROC@example.com'")
        assert [r["Id"] for r in found["records"]] == [contact]
        fake.admin.add_fault("http_503", match="composite")
        with pytest.raises(SalesforceGeneralError) as exc:
            collection(sf, [task(Subject="x", WhoId=contact)])
        assert exc.value.status == 503
        assert collection(sf, [task(Subject="x", WhoId=contact)])[0]["success"] is True
        assert [t["Subject"] for t in fake.admin.tasks()] == ["x"]
        assert [c["status"] for c in fake.admin.calls()] == [200, 503, 200]
        ca_before = Path(fake.ca_bundle).read_bytes()
    with FakeSalesforceProcess(tmp_path) as again:  # a restart keeps the CA workers trust
        assert Path(again.ca_bundle).read_bytes() == ca_before


# -- SOQL -----------------------------------------------------------------------------


def test_query_matches_email_case_insensitively_with_salesforce_shape(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("Ada.Lovelace@Example.com")
    fake_salesforce.add_contact("someone.else@example.com")
    result = salesforce_client.query(
        "select Id, email from contact where Email IN ('ada.lovelace@example.COM', 'x@y.z')"
    )
    assert result["totalSize"] == 1 and result["done"] is True
    record = result["records"][0]
    assert record["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v59.0/sobjects/Contact/{contact}",
    }
    assert record["Id"] == contact and record["Email"] == "Ada.Lovelace@Example.com"
    assert (
        len(contact) == 18 and contact.startswith("003") and normalize_id(contact[:15]) == contact
    )


def test_ids_use_salesforce_18_character_checksum() -> None:
    # The case-safe suffix of a well-known 15-character Account id.
    assert normalize_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert normalize_id("001A0000006Vm9rIAD") is None
    assert normalize_id("not-an-id") is None


def test_query_leads_by_conversion_state(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("c@example.com")
    converted = fake_salesforce.add_lead("c@example.com", converted_to=contact)
    open_lead = fake_salesforce.add_lead("l@example.com")
    assert converted.startswith("00Q")
    live = salesforce_client.query(
        "SELECT Id FROM Lead WHERE IsConverted = false AND Email IN ('c@example.com', "
        "'l@example.com')"
    )
    assert [r["Id"] for r in live["records"]] == [open_lead]
    moved = salesforce_client.query(
        "SELECT Id, ConvertedContactId FROM Lead WHERE ConvertedContactId != null"
    )
    assert [(r["Id"], r["ConvertedContactId"]) for r in moved["records"]] == [(converted, contact)]
    either = salesforce_client.query(
        "SELECT Id FROM Lead WHERE (IsConverted = true OR Email = 'l@example.com') "
        "ORDER BY Email DESC LIMIT 5"
    )
    assert [r["Id"] for r in either["records"]] == [open_lead, converted]


def test_query_filters_datetimes_and_refuses_quoted_ones(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    moments = iter([datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)])
    fake_salesforce.set_clock(lambda: next(moments))
    fake_salesforce.add_contact("old@example.com")
    recent = fake_salesforce.add_contact("new@example.com")
    fake_salesforce.set_clock(None)
    result = salesforce_client.query(
        "SELECT Id, CreatedDate FROM Contact WHERE CreatedDate > 2024-03-01T00:00:00Z"
    )
    assert [(r["Id"], r["CreatedDate"]) for r in result["records"]] == [
        (recent, "2024-06-01T00:00:00.000+0000")
    ]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        salesforce_client.query("SELECT Id FROM Contact WHERE CreatedDate > '2024-03-01T00:00:00Z'")
    assert error_code(exc) == "INVALID_FIELD"
    assert "must be of type dateTime" in body(exc)[0]["message"]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY"),
        ("SELECT Id, FROM Contact", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Contact WHERE Email = 'a' AND Email = 'b' OR Email = 'c'",
            "MALFORMED_QUERY",
        ),
        ("SELECT Id FROM Contact LIMIT", "MALFORMED_QUERY"),
        ("SELECT Id, Nope__c FROM Contact", "INVALID_FIELD"),
        ("SELECT Id FROM Prospect__c", "INVALID_TYPE"),
        ("SELECT Id FROM Task WHERE WhoId = 'not-an-id'", "INVALID_QUERY_FILTER_OPERATOR"),
    ],
)
def test_bad_soql_is_refused_with_salesforce_error_codes(
    salesforce_client: Salesforce, soql: str, code: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        salesforce_client.query(soql)
    assert exc.value.status == 400
    assert error_code(exc) == code
    assert "ERROR at Row:1:Column:" in body(exc)[0]["message"]


def test_query_pages_2000_rows_with_next_records_url(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    for n in range(2500):
        fake_salesforce.add_contact(f"p{n}@example.com")
    first = salesforce_client.query("SELECT Id FROM Contact")
    assert (first["totalSize"], first["done"], len(first["records"])) == (2500, False, 2000)
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    everything = salesforce_client.query_all("SELECT Id FROM Contact")
    assert len({r["Id"] for r in everything["records"]}) == 2500
    counted = salesforce_client.query("SELECT COUNT() FROM Contact WHERE Email LIKE 'p1%'")
    assert counted["totalSize"] == 1 + 10 + 100 + 1000


def test_deleted_records_leave_query_but_stay_in_query_all(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("gone@example.com")
    fake_salesforce.delete(contact)
    soql = "SELECT Id, IsDeleted FROM Contact WHERE Email = 'gone@example.com'"
    assert salesforce_client.query(soql)["totalSize"] == 0
    assert salesforce_client.query_all(soql, include_deleted=True)["records"][0]["IsDeleted"]


def test_uri_over_16384_bytes_is_414_and_not_charged(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    emails = ", ".join(f"'prospect.number.{n}@example-company.com'" for n in range(400))
    used_before = fake_salesforce.api_usage[0]
    with pytest.raises(SalesforceGeneralError) as exc:
        salesforce_client.query(f"SELECT Id FROM Contact WHERE Email IN ({emails})")
    assert exc.value.status == 414
    assert fake_salesforce.api_usage[0] == used_before
    chunk = ", ".join(f"'prospect.number.{n}@example-company.com'" for n in range(120))
    assert (
        salesforce_client.query(f"SELECT Id FROM Contact WHERE Email IN ({chunk})")["totalSize"]
        == 0
    )


# -- describe -------------------------------------------------------------------------


def test_task_describe_reports_the_sightline_fields(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fields = {f["name"]: f for f in tasks_api(salesforce_client).describe()["fields"]}
    key = fields[EXT_ID_FIELD]
    assert (key["type"], key["length"], key["externalId"], key["unique"], key["idLookup"]) == (
        "string",
        80,
        True,
        True,
        True,
    )
    assert fields["Sightline_Opens__c"]["type"] == "double"
    assert fields["TaskSubtype"]["createable"] and not fields["TaskSubtype"]["updateable"]
    assert not fields["CompletedDateTime"]["createable"]
    assert (fields["Subject"]["length"], fields["Description"]["length"]) == (255, 32000)
    fake_salesforce.configure(ext_id_field=False, counter_fields=False)
    names = {f["name"] for f in tasks_api(salesforce_client).describe()["fields"]}
    assert EXT_ID_FIELD not in names and "Sightline_Opens__c" not in names


# -- single records -------------------------------------------------------------------


def test_task_create_get_update_delete(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("t@example.com")
    created = tasks_api(salesforce_client).create(
        {
            "Subject": "Email: Hello",
            "WhoId": contact,
            "TaskSubtype": "Email",
            "Status": "Completed",
            "ActivityDate": "2024-05-01",
        }
    )
    assert created["success"] is True and created["id"].startswith("00T")
    stored = tasks_api(salesforce_client).get(created["id"])
    assert stored["IsClosed"] is True and stored["CompletedDateTime"] is not None
    assert (stored["TaskSubtype"], stored["WhoId"]) == ("Email", contact)
    assert (
        tasks_api(salesforce_client).update(created["id"], {"Description": "opened twice"}) == 204
    )
    assert fake_salesforce.tasks()[0]["Description"] == "opened twice"
    assert tasks_api(salesforce_client).delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as exc:
        tasks_api(salesforce_client).get(created["id"])
    assert error_code(exc) == "ENTITY_IS_DELETED"
    with pytest.raises(SalesforceResourceNotFound) as missing:
        tasks_api(salesforce_client).get("00T5g00000000zzAAA")
    assert error_code(missing) == "NOT_FOUND"


def _task_case(fake: FakeSalesforce, case: str) -> dict[str, Any]:
    contact = fake.add_contact("v@example.com")
    if case == "deleted_who":
        gone = fake.add_contact("gone@example.com")
        fake.delete(gone)
        return {"WhoId": gone}
    if case == "converted_lead":
        return {"WhoId": fake.add_lead("v@example.com", converted_to=contact)}
    if case == "account_as_who":
        return {"WhoId": fake.add_account("Acme")}
    cases: dict[str, dict[str, Any]] = {
        "subject_256": {"Subject": "x" * 256, "WhoId": contact},
        "description_32001": {"Description": "x" * 32001, "WhoId": contact},
        "completed_datetime": {"CompletedDateTime": "2024-01-01T00:00:00Z"},
        "bad_status": {"Status": "Done"},
        "unknown_field": {"Nope__c": 1},
        "malformed_who": {"WhoId": "not-an-id"},
        "missing_who": {"WhoId": "0035g0000000999AAA"},
    }
    return cases[case]


@pytest.mark.parametrize(
    ("case", "code", "fields"),
    [
        ("subject_256", "STRING_TOO_LONG", ["Subject"]),
        ("description_32001", "STRING_TOO_LONG", ["Description"]),
        ("completed_datetime", "INVALID_FIELD_FOR_INSERT_UPDATE", ["CompletedDateTime"]),
        ("bad_status", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["Status"]),
        ("unknown_field", "INVALID_FIELD", None),
        ("malformed_who", "MALFORMED_ID", ["WhoId"]),
        ("account_as_who", "FIELD_INTEGRITY_EXCEPTION", ["WhoId"]),
        ("missing_who", "INVALID_CROSS_REFERENCE_KEY", []),
        ("deleted_who", "ENTITY_IS_DELETED", []),
        ("converted_lead", "CANNOT_UPDATE_CONVERTED_LEAD", []),
    ],
)
def test_task_save_rules_as_single_call_errors(
    fake_salesforce: FakeSalesforce,
    salesforce_client: Salesforce,
    case: str,
    code: str,
    fields: list[str] | None,
) -> None:
    payload = _task_case(fake_salesforce, case)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        tasks_api(salesforce_client).create(payload)
    assert exc.value.status == 400
    assert error_code(exc) == code
    assert body(exc)[0].get("fields") == fields
    assert fake_salesforce.tasks() == []


def test_text_at_its_limit_is_accepted(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    lead = fake_salesforce.add_lead("edge@example.com")
    created = tasks_api(salesforce_client).create(
        {"Subject": "s" * 255, "Description": "d" * 32000, "WhoId": lead[:15]}
    )
    assert created["success"]
    assert fake_salesforce.tasks()[0]["WhoId"] == lead  # a 15-character id is accepted


def test_task_subtype_is_set_on_create_and_refused_on_update(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("s@example.com")
    created = tasks_api(salesforce_client).create({"WhoId": contact, "TaskSubtype": "Email"})
    with pytest.raises(SalesforceMalformedRequest) as exc:
        tasks_api(salesforce_client).update(created["id"], {"TaskSubtype": "Call"})
    assert error_code(exc) == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert body(exc)[0]["fields"] == ["TaskSubtype"]
    assert fake_salesforce.tasks()[0]["TaskSubtype"] == "Email"


# -- sObject Collections ----------------------------------------------------------------


def test_collection_answers_200_with_a_result_per_record(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("a@example.com")
    used_before = fake_salesforce.api_usage[0]
    results = collection(
        salesforce_client,
        [
            task(Subject="ok", WhoId=contact),
            task(Subject="x" * 300, WhoId=contact),
            task(Subject="ok too", WhoId=contact, TaskSubtype="Email"),
        ],
    )
    assert codes(results) == [None, "STRING_TOO_LONG", None]
    assert results[1]["errors"][0]["fields"] == ["Subject"] and "id" not in results[1]
    assert [t["Id"] for t in fake_salesforce.tasks()] == [results[0]["id"], results[2]["id"]]
    assert fake_salesforce.api_usage[0] == used_before + 1  # one call, however many records


def test_collection_all_or_none_rolls_everything_back(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("a@example.com")
    results = collection(
        salesforce_client,
        [
            task(Subject="fine", WhoId=contact),
            task(Subject="bad", Status="Done"),
            task(Subject="fine too", WhoId=contact),
        ],
        all_or_none=True,
    )
    assert codes(results) == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    ]
    assert fake_salesforce.tasks() == []
    again = collection(salesforce_client, [task(Subject="fine", WhoId=contact)], all_or_none=True)
    assert codes(again) == [None]


def test_collection_over_200_records_is_refused_whole(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        collection(salesforce_client, [task(Subject=str(n)) for n in range(201)])
    assert error_code(exc) == "EXCEEDED_ID_LIMIT"
    assert fake_salesforce.tasks() == []
    assert codes(collection(salesforce_client, [task(Subject=str(n)) for n in range(200)])) == (
        [None] * 200
    )


def test_collection_with_an_unknown_field_fails_the_request(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as exc:
        collection(salesforce_client, [task(Subject="a"), task(Subject="b", Opens__c=1)])
    assert error_code(exc) == "INVALID_FIELD"
    assert body(exc)[0]["message"] == "No such column 'Opens__c' on sobject of type Task"
    assert fake_salesforce.tasks() == []


# -- upsert by external id ----------------------------------------------------------------


def test_upsert_creates_then_updates_by_key(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("u@example.com")
    first = upsert(
        salesforce_client,
        [
            task(Sightline_Key__c="msg-1:sent", Subject="Email: hi", WhoId=contact),
            task(
                Sightline_Key__c="msg-1:open", Subject="Opened", WhoId=contact, Sightline_Opens__c=1
            ),
        ],
    )
    assert [(r["success"], r["created"]) for r in first] == [(True, True), (True, True)]
    second = upsert(
        salesforce_client,
        [
            task(
                Sightline_Key__c="msg-1:open",
                Sightline_Opens__c=2,
                Sightline_Last_Opened__c="2024-05-01T10:00:00Z",
            ),
        ],
    )
    assert (second[0]["created"], second[0]["id"]) == (False, first[1]["id"])
    opened = next(t for t in fake_salesforce.tasks() if t[EXT_ID_FIELD] == "msg-1:open")
    assert (opened["Sightline_Opens__c"], opened["Sightline_Last_Opened__c"]) == (
        2.0,
        "2024-05-01T10:00:00.000+0000",
    )
    assert len(fake_salesforce.tasks()) == 2


def test_upsert_refuses_duplicate_keys_within_one_request(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    results = upsert(
        salesforce_client,
        [
            task(Sightline_Key__c="k", Subject="a"),
            task(Sightline_Key__c="K", Subject="b"),
            task(Sightline_Key__c="other", Subject="c"),
        ],
    )
    assert codes(results) == ["DUPLICATE_VALUE", "DUPLICATE_VALUE", None]
    assert results[0]["errors"][0]["message"] == "Duplicate external id specified: k"
    assert results[0]["errors"][0]["fields"] == [EXT_ID_FIELD]
    assert [t[EXT_ID_FIELD] for t in fake_salesforce.tasks()] == ["other"]
    fake_salesforce.configure(duplicate_key_code="DUPLICATE_EXTERNAL_ID")
    again = upsert(salesforce_client, [task(Sightline_Key__c="z"), task(Sightline_Key__c="z")])
    assert codes(again) == ["DUPLICATE_EXTERNAL_ID", "DUPLICATE_EXTERNAL_ID"]


def test_a_second_record_with_a_used_key_is_duplicate_value(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    first = tasks_api(salesforce_client).create({EXT_ID_FIELD: "same"})
    with pytest.raises(SalesforceMalformedRequest) as exc:
        tasks_api(salesforce_client).create({EXT_ID_FIELD: "SAME"})
    assert error_code(exc) == "DUPLICATE_VALUE"
    assert body(exc)[0]["message"] == (
        f"duplicate value found: {EXT_ID_FIELD} duplicates value on record with id: {first['id']}"
    )


def test_upsert_on_a_field_the_org_lacks(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.configure(ext_id_field=False)
    with pytest.raises(SalesforceResourceNotFound) as missing:
        upsert(salesforce_client, [task(Subject="a")])
    assert error_code(missing) == "NOT_FOUND"
    with pytest.raises(SalesforceMalformedRequest) as not_external:
        upsert(salesforce_client, [task(Subject="a")], field="Subject")
    assert error_code(not_external) == "INVALID_FIELD"
    assert "is not an External ID or indexed field for Task" in (body(not_external)[0]["message"])


def test_single_row_upsert_through_sftype(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("r@example.com")
    path = f"{EXT_ID_FIELD}/msg-9:reply"
    assert (
        tasks_api(salesforce_client).upsert(path, {"Subject": "Replied", "WhoId": contact}) == 201
    )
    assert tasks_api(salesforce_client).upsert(path, {"Status": "Completed"}) == 200
    (only,) = fake_salesforce.tasks()
    assert (only["Subject"], only["Status"], only["IsClosed"]) == ("Replied", "Completed", True)


# -- the daily API allowance and sessions ---------------------------------------------------


def test_sforce_limit_info_feeds_api_usage(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.set_api_usage(41, 500)
    salesforce_client.query("SELECT Id FROM Contact")
    usage = salesforce_client.api_usage["api-usage"]
    assert (usage.used, usage.total) == (42, 500) == fake_salesforce.api_usage
    limits = salesforce_client.limits()
    assert limits["DailyApiRequests"] == {"Max": 500, "Remaining": 500 - 43}


def test_exhausted_allowance_is_a_403_refusal(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.set_api_usage(99, 100)
    salesforce_client.query("SELECT Id FROM Contact")  # the 100th call still passes
    with pytest.raises(SalesforceRefusedRequest) as exc:
        salesforce_client.query("SELECT Id FROM Contact")
    assert exc.value.status == 403
    assert body(exc) == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert fake_salesforce.api_usage == (100, 100)


def test_expired_session_raises_expired_session(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    other = Salesforce(
        instance_url=fake_salesforce.instance_url, session_id=fake_salesforce.issue_token()
    )
    fake_salesforce.expire_token(fake_salesforce.access_token)
    with pytest.raises(SalesforceExpiredSession) as exc:
        salesforce_client.query("SELECT Id FROM Contact")
    assert body(exc) == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    assert other.query("SELECT Id FROM Contact")["totalSize"] == 0


def test_sessions_expire_after_their_ttl(fake_salesforce: FakeSalesforce) -> None:
    fake_salesforce.configure(session_ttl=0.3)
    sf = Salesforce(
        instance_url=fake_salesforce.instance_url, session_id=fake_salesforce.issue_token()
    )
    sf.query("SELECT Id FROM Contact")
    time.sleep(0.5)
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Contact")


# -- OAuth ------------------------------------------------------------------------------------


def _token(fake: FakeSalesforce, **form: str) -> requests.Response:
    return requests.post(f"{fake.instance_url}{TOKEN_PATH}", data=form, timeout=10)


def test_refresh_grant_answers_a_signed_salesforce_token(fake_salesforce: FakeSalesforce) -> None:
    app = fake_salesforce.oauth
    refresh = fake_salesforce.issue_refresh_token()
    answer = _token(
        fake_salesforce,
        grant_type="refresh_token",
        refresh_token=refresh,
        client_id=app["client_id"],
        client_secret=app["client_secret"],
    )
    assert answer.status_code == 200
    body = answer.json()
    assert {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    } <= body.keys()
    assert "refresh_token" not in body  # no rotation: the same refresh token keeps working
    assert (body["instance_url"], body["token_type"]) == (fake_salesforce.instance_url, "Bearer")
    expected = base64.b64encode(
        hmac.new(
            app["client_secret"].encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
        ).digest()
    ).decode()
    assert body["signature"] == expected
    sf = Salesforce(instance_url=body["instance_url"], session_id=body["access_token"])
    assert sf.query("SELECT Id FROM Task")["totalSize"] == 0
    again = _token(
        fake_salesforce,
        grant_type="refresh_token",
        refresh_token=refresh,
        client_id=app["client_id"],
    )
    assert again.status_code == 200


def test_refresh_rotation_invalidates_the_previous_token(fake_salesforce: FakeSalesforce) -> None:
    fake_salesforce.configure(rotate_refresh_tokens=True)
    client_id = fake_salesforce.oauth["client_id"]
    old = fake_salesforce.issue_refresh_token()
    first = _token(
        fake_salesforce, grant_type="refresh_token", refresh_token=old, client_id=client_id
    ).json()
    assert first["refresh_token"] != old
    reused = _token(
        fake_salesforce, grant_type="refresh_token", refresh_token=old, client_id=client_id
    )
    assert reused.status_code == 400
    assert reused.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }
    chained = _token(
        fake_salesforce,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
        client_id=client_id,
    )
    assert chained.status_code == 200 and chained.json()["refresh_token"] != first["refresh_token"]


def test_password_grant_and_its_failures(fake_salesforce: FakeSalesforce) -> None:
    app = fake_salesforce.oauth
    good = _token(
        fake_salesforce,
        grant_type="password",
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        username=app["username"],
        password=app["password"] + app["security_token"],
    )
    assert good.status_code == 200 and "refresh_token" not in good.json()
    wrong = _token(
        fake_salesforce,
        grant_type="password",
        client_id=app["client_id"],
        client_secret=app["client_secret"],
        username=app["username"],
        password="nope",
    )
    assert (wrong.status_code, wrong.json()["error_description"]) == (400, "authentication failure")
    stranger = _token(
        fake_salesforce,
        grant_type="password",
        client_id="unknown",
        username=app["username"],
        password="x",
    )
    assert stranger.json() == {
        "error": "invalid_client_id",
        "error_description": "client identifier invalid",
    }
    odd = _token(fake_salesforce, grant_type="magic")
    assert odd.json()["error"] == "unsupported_grant_type"


def test_authorization_code_flow(fake_salesforce: FakeSalesforce) -> None:
    app = fake_salesforce.oauth
    redirect = "https://sightline.example/oauth/callback"
    authorize = requests.get(
        f"{fake_salesforce.instance_url}/services/oauth2/authorize",
        params={
            "response_type": "code",
            "client_id": app["client_id"],
            "redirect_uri": redirect,
            "state": "xyz",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert authorize.status_code == 302
    location = urlsplit(authorize.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    exchange = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "redirect_uri": redirect,
    }
    granted = _token(fake_salesforce, **exchange)
    assert granted.status_code == 200 and granted.json()["refresh_token"]
    replayed = _token(fake_salesforce, **exchange)
    assert replayed.json() == {
        "error": "invalid_grant",
        "error_description": "expired authorization code",
    }


def test_jwt_bearer_grant_checks_signature_audience_and_expiry(
    fake_salesforce: FakeSalesforce,
) -> None:
    private_pem, public_pem = generate_rsa_keypair()
    fake_salesforce.register_app("jwt-app", "unused-secret", jwt_public_key_pem=public_pem)
    username = fake_salesforce.oauth["username"]
    claims = {
        "iss": "jwt-app",
        "sub": username,
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 120,
    }

    def grant(assertion: str) -> requests.Response:
        return _token(
            fake_salesforce,
            grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
            assertion=assertion,
        )

    ok = grant(make_jwt(private_pem, claims))
    assert ok.status_code == 200 and "refresh_token" not in ok.json()
    stranger_pem, _ = generate_rsa_keypair()
    assert grant(make_jwt(stranger_pem, claims)).json()["error_description"] == (
        "invalid assertion"
    )
    wrong_aud = grant(make_jwt(private_pem, {**claims, "aud": "https://evil.example"}))
    assert wrong_aud.json()["error_description"] == "audience is invalid"
    stale = grant(make_jwt(private_pem, {**claims, "exp": int(time.time()) - 600}))
    assert (stale.status_code, stale.json()["error"]) == (400, "invalid_grant")
    unknown_user = grant(make_jwt(private_pem, {**claims, "sub": "nobody@example.com"}))
    assert unknown_user.json()["error_description"] == "user hasn't approved this consumer"


def test_simple_salesforce_jwt_login_against_the_fake(fake_salesforce: FakeSalesforce) -> None:
    private_pem, public_pem = generate_rsa_keypair()
    fake_salesforce.register_app("jwt-app", "unused-secret", jwt_public_key_pem=public_pem)
    sf = Salesforce(
        username=fake_salesforce.oauth["username"],
        consumer_key="jwt-app",
        privatekey=private_pem.decode(),
        session=fake_salesforce.login_session(),
    )
    assert sf.sf_instance == urlsplit(fake_salesforce.instance_url).netloc
    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 0


def test_simple_salesforce_soap_login_against_the_fake(fake_salesforce: FakeSalesforce) -> None:
    app = fake_salesforce.oauth
    sf = Salesforce(
        username=app["username"],
        password=app["password"],
        security_token=app["security_token"],
        session=fake_salesforce.login_session(),
    )
    assert sf.query("SELECT Id FROM Contact")["totalSize"] == 0
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(
            username=app["username"],
            password="wrong",
            security_token=app["security_token"],
            session=fake_salesforce.login_session(),
        )
    assert exc.value.code == "INVALID_LOGIN"


# -- faults -----------------------------------------------------------------------------------


def test_http_503_and_500_faults_use_salesforce_bodies_once(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.faults.add("http_503")
    fake_salesforce.faults.add("http_500")
    with pytest.raises(SalesforceGeneralError) as unavailable:
        salesforce_client.query("SELECT Id FROM Contact")
    assert (unavailable.value.status, error_code(unavailable)) == (503, "SERVER_UNAVAILABLE")
    with pytest.raises(SalesforceGeneralError) as broken:
        salesforce_client.query("SELECT Id FROM Contact")
    assert (broken.value.status, error_code(broken)) == (500, "UNKNOWN_EXCEPTION")
    assert salesforce_client.query("SELECT Id FROM Contact")["totalSize"] == 0
    assert [c.fault for c in fake_salesforce.calls] == ["http_503", "http_500", None]


def test_unable_to_lock_row_per_item_and_top_level(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("l@example.com")
    fake_salesforce.faults.add("unable_to_lock_row", match="composite", items=[1])
    results = collection(salesforce_client, [task(WhoId=contact), task(WhoId=contact)])
    assert codes(results) == [None, "UNABLE_TO_LOCK_ROW"]
    assert len(fake_salesforce.tasks()) == 1
    fake_salesforce.faults.add("unable_to_lock_row")
    with pytest.raises(SalesforceMalformedRequest) as exc:
        tasks_api(salesforce_client).create({"WhoId": contact})
    assert error_code(exc) == "UNABLE_TO_LOCK_ROW"
    assert len(fake_salesforce.tasks()) == 1


def test_injected_invalid_session_and_request_limit(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.faults.add("invalid_session")
    with pytest.raises(SalesforceExpiredSession):
        salesforce_client.query("SELECT Id FROM Contact")
    fake_salesforce.faults.add("request_limit_exceeded", count=None, duration=0.4)
    for _ in range(2):
        with pytest.raises(SalesforceRefusedRequest):
            salesforce_client.query("SELECT Id FROM Contact")
    time.sleep(0.5)
    assert salesforce_client.query("SELECT Id FROM Contact")["totalSize"] == 0


def test_latency_delays_the_answer(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.faults.add("latency", seconds=0.6)
    started = time.monotonic()
    salesforce_client.query("SELECT Id FROM Contact")
    assert time.monotonic() - started >= 0.6
    fake_salesforce.faults.add("latency", seconds=2.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        salesforce_client.query("SELECT Id FROM Contact", timeout=0.3)


def test_commit_then_drop_writes_but_never_answers(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("d@example.com")
    fake_salesforce.faults.add("commit_then_drop", match="composite")
    with pytest.raises(requests.exceptions.ConnectionError):
        upsert(salesforce_client, [task(Sightline_Key__c="k1", WhoId=contact)])
    assert [t[EXT_ID_FIELD] for t in fake_salesforce.tasks()] == ["k1"]
    retried = upsert(salesforce_client, [task(Sightline_Key__c="k1", WhoId=contact)])
    assert retried[0]["created"] is False and len(fake_salesforce.tasks()) == 1


def test_commit_then_hang_writes_then_times_the_client_out(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("h@example.com")
    fake_salesforce.faults.add("commit_then_hang", seconds=3.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        salesforce_client.restful(
            "composite/sobjects",
            method="POST",
            timeout=0.5,
            json={"allOrNone": False, "records": [task(WhoId=contact)]},
        )
    assert len(fake_salesforce.tasks()) == 1


def test_fault_rate_replays_with_the_same_seed(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    def run() -> list[int]:
        fake_salesforce.reset_calls()
        fake_salesforce.faults.rate(0.3, kinds=["http_503", "http_500"], seed=7)
        for _ in range(30):
            with contextlib.suppress(SalesforceGeneralError):
                salesforce_client.query("SELECT Id FROM Contact")
        fake_salesforce.faults.rate(0)
        return [c.status for c in fake_salesforce.calls]

    first, second = run(), run()
    assert first == second
    assert 0 < sum(s != 200 for s in first) < 30


def test_faults_only_hit_matching_requests_and_calls_are_logged(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.faults.add("http_503", match="composite/sobjects", method="POST")
    assert salesforce_client.query("SELECT Id FROM Contact")["totalSize"] == 0
    with pytest.raises(SalesforceGeneralError):
        collection(salesforce_client, [task(Subject="a")])
    assert fake_salesforce.faults.armed() == []
    assert fake_salesforce.call_count("composite") == 1
    assert fake_salesforce.call_count(status=503) == 1
    fake_salesforce.reset_calls()
    assert fake_salesforce.calls == []
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake_salesforce.faults.add("http_418")


# -- Composite ---------------------------------------------------------------------------------


def composite(sf: Salesforce, subrequests: list[dict[str, Any]], all_or_none: bool = False) -> Any:
    return sf.restful(
        "composite",
        method="POST",
        json={"allOrNone": all_or_none, "compositeRequest": subrequests},
    )


def sub(ref: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "method": method,
        "url": f"/services/data/v62.0/{path}",
        "referenceId": ref,
    }
    if body is not None:
        request["body"] = body
    return request


def test_composite_runs_queries_and_collections_as_one_call(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("c@example.com")
    used_before = fake_salesforce.api_usage[0]
    answer = composite(
        salesforce_client,
        [
            sub(
                "who",
                "GET",
                "query/?q=SELECT+Id,Email+FROM+Contact+WHERE+Email+IN+('C@example.com')",
            ),
            sub(
                "tasks",
                "POST",
                "composite/sobjects",
                {"allOrNone": False, "records": [task(WhoId=contact), task(Status="Done")]},
            ),
            sub("bad", "GET", "query/?q=SELECT+Nope+FROM+Contact"),
            sub("one", "GET", f"sobjects/Contact/{contact}"),
        ],
    )
    results = answer["compositeResponse"]
    assert [r["referenceId"] for r in results] == ["who", "tasks", "bad", "one"]
    assert [r["httpStatusCode"] for r in results] == [200, 200, 400, 200]
    assert results[0]["body"]["records"][0]["Id"] == contact
    assert codes(results[1]["body"]) == [None, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"]
    assert results[2]["body"][0]["errorCode"] == "INVALID_FIELD"
    assert results[3]["body"]["Email"] == "c@example.com"
    assert len(fake_salesforce.tasks()) == 1  # allOrNone false: the rest went through
    assert fake_salesforce.api_usage[0] == used_before + 1


def test_composite_all_or_none_halts_everything(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("c@example.com")
    answer = composite(
        salesforce_client,
        [
            sub("fine", "POST", "sobjects/Task/", {"WhoId": contact}),
            sub("broken", "POST", "sobjects/Task/", {"WhoId": contact, "Status": "Done"}),
        ],
        all_or_none=True,
    )
    fine, broken = answer["compositeResponse"]
    assert (fine["httpStatusCode"], fine["body"][0]["errorCode"]) == (400, "PROCESSING_HALTED")
    assert broken["body"][0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert fake_salesforce.tasks() == []


def test_composite_limits_are_refused_whole(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    query = "query/?q=SELECT+Id+FROM+Contact"
    with pytest.raises(SalesforceMalformedRequest) as too_many:
        composite(salesforce_client, [sub(f"q{n}", "GET", "sobjects/Contact/") for n in range(26)])
    assert error_code(too_many) == "LIMIT_EXCEEDED"
    with pytest.raises(SalesforceMalformedRequest) as heavy:
        composite(salesforce_client, [sub(f"q{n}", "GET", query) for n in range(6)])
    assert error_code(heavy) == "LIMIT_EXCEEDED"
    with pytest.raises(SalesforceMalformedRequest) as duplicate:
        composite(salesforce_client, [sub("q", "GET", query), sub("q", "GET", query)])
    assert error_code(duplicate) == "INVALID_API_INPUT"
    assert (
        len(
            composite(salesforce_client, [sub(f"q{n}", "GET", query) for n in range(5)])[
                "compositeResponse"
            ]
        )
        == 5
    )


def test_composite_lock_fault_hits_collection_items(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("c@example.com")
    fake_salesforce.faults.add("unable_to_lock_row", match="composite", items=[0])
    records = {"allOrNone": False, "records": [task(WhoId=contact), task(WhoId=contact)]}
    answer = composite(salesforce_client, [sub("w", "POST", "composite/sobjects", records)])
    assert codes(answer["compositeResponse"][0]["body"]) == ["UNABLE_TO_LOCK_ROW", None]


def test_validation_rule_fails_the_record_with_custom_validation(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.configure(validation_rules=(("Task", "Subject", "[blocked]"),))
    contact = fake_salesforce.add_contact("v@example.com")
    results = collection(
        salesforce_client,
        [task(WhoId=contact, Subject="Email: [Blocked] offer"), task(WhoId=contact, Subject="ok")],
    )
    assert codes(results) == ["FIELD_CUSTOM_VALIDATION_EXCEPTION", None]
    assert "validation rule" in results[0]["errors"][0]["message"]


def test_http_502_comes_from_the_edge_uncharged(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    fake_salesforce.faults.add("http_502")
    used_before = fake_salesforce.api_usage[0]
    with pytest.raises(SalesforceGeneralError) as exc:
        salesforce_client.query("SELECT Id FROM Contact")
    assert exc.value.status == 502
    assert "Bad Gateway" in str(body(exc))
    assert fake_salesforce.api_usage[0] == used_before


# -- Bulk API 2.0 ------------------------------------------------------------------------------


def test_bulk2_insert_and_results_through_simple_salesforce(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("b@example.com")
    outcome = bulk_tasks(salesforce_client).insert(
        records=[
            {"Subject": "one", "WhoId": contact},
            {"Subject": "two", "WhoId": contact, "Status": "Done"},
        ],
        wait=0,
    )
    assert outcome[0]["numberRecordsProcessed"] == 2
    assert outcome[0]["numberRecordsFailed"] == 1
    job = str(outcome[0]["job_id"])  # typed int by simple-salesforce, a string on the wire
    assert job.startswith("750")
    failed = list(
        csv.DictReader(io.StringIO(bulk_tasks(salesforce_client).get_failed_records(job)))
    )
    assert failed[0]["sf__Error"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:")
    succeeded = list(
        csv.DictReader(io.StringIO(bulk_tasks(salesforce_client).get_successful_records(job)))
    )
    assert succeeded[0]["sf__Created"] == "true"
    assert [t["Subject"] for t in fake_salesforce.tasks()] == ["one"]


def test_bulk2_upsert_by_external_id(
    fake_salesforce: FakeSalesforce, salesforce_client: Salesforce
) -> None:
    contact = fake_salesforce.add_contact("bu@example.com")
    rows = [
        {EXT_ID_FIELD: "a", "Subject": "A", "WhoId": contact},
        {EXT_ID_FIELD: "b", "Subject": "B", "WhoId": contact},
    ]
    bulk_tasks(salesforce_client).upsert(records=rows, external_id_field=EXT_ID_FIELD, wait=0)
    bulk_tasks(salesforce_client).upsert(
        records=[{EXT_ID_FIELD: "a", "Subject": "A2"}], external_id_field=EXT_ID_FIELD, wait=0
    )
    assert sorted(t["Subject"] for t in fake_salesforce.tasks()) == ["A2", "B"]


def test_clock_helpers_keep_time_zones(fake_salesforce: FakeSalesforce) -> None:
    fake_salesforce.set_clock(lambda: datetime(2024, 1, 1, 12, tzinfo=UTC) + timedelta(hours=1))
    contact = fake_salesforce.add_contact("z@example.com")
    (record,) = fake_salesforce.records("Contact")
    assert (record["Id"], record["CreatedDate"]) == (contact, "2024-01-01T13:00:00.000+0000")
