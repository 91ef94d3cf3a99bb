"""The Salesforce REST calls Sightline makes, through simple-salesforce.

With `auth`, the only module that imports simple_salesforce. Every failure
leaves it as one `SalesforceError` that says what kind of failure it was, so
the outbox decides in one place what to do:

    kind       cause                                       outbox does
    session    401 INVALID_SESSION_ID after one renewal    back off, retry
    auth       login / token grant refused                 hold the rows, org needs reconnecting
    limit      403 REQUEST_LIMIT_EXCEEDED                  park the org's queue, resume later
    transient  5xx, 502 from the edge, timeouts, resets,   back off with jitter, retry
               UNABLE_TO_LOCK_ROW
    rejected   any other 4xx (our request is wrong)        dead letter (replayable)

A 401 renews the session once (`TokenSource.renew`, serialised per org) and
repeats the call; a second 401 is `session`.

Calls are few and large: `query_many` packs SOQL queries into `composite`
requests (≤ 25 subrequests, ≤ 5 of them queries or sObject Collections, one
API call each) and `write_many` packs sObject Collections (≤ 200 records each)
the same way, so one call carries up to 1,000 records. A query's SOQL is kept
under `MAX_SOQL_CHARS`, the size of a GET URI Salesforce accepts, though
inside a composite it travels in the body.

Every response's `Sforce-Limit-Info` is handed to `on_response`, errors
included (simple-salesforce itself only reads it from successful answers).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.bulk2 import SFBulk2Handler, SFBulk2Type
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceOperationError,
)
from simple_salesforce.exceptions import (
    SalesforceError as VendorError,
)
from simple_salesforce.format import format_soql

from core.outbound import OutboundError
from worker.salesforce.hosts import guard_session

log = logging.getLogger(__name__)

COLLECTION_LIMIT = 200  # records per sObject Collections call
COMPOSITE_LIMIT = 25  # subrequests per composite call
COMPOSITE_HEAVY_LIMIT = 5  # of which queries or sObject Collections
MAX_SOQL_CHARS = 12_000  # a query's text, kept well under the 16 KB URI limit
TRANSIENT_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG", "QUERY_TIMEOUT"}
)


class SalesforceError(Exception):
    """A Salesforce call failed; `kind` says whether retrying can help (see the table above)."""

    def __init__(self, message: str, *, kind: str, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.codes = tuple(codes)

    @property
    def permanent(self) -> bool:
        return self.kind == "rejected"


@dataclass(frozen=True)
class OrgSession:
    instance_url: str
    access_token: str


class TokenSource(Protocol):
    """Where an org's access token comes from (see `auth`)."""

    def current(self) -> OrgSession:
        """The session to use now (logging in first if there is none)."""

    def renew(self, stale_token: str | None) -> OrgSession:
        """A session other than `stale_token`; raises SalesforceError(kind="auth")."""


def error_codes(content: Any) -> list[str]:
    if isinstance(content, list):
        return [str(item.get("errorCode", "")) for item in content if isinstance(item, dict)]
    if isinstance(content, dict) and "errorCode" in content:
        return [str(content["errorCode"])]
    return []


def classify(status: int, codes: Sequence[str], text: str) -> SalesforceError:
    """The SalesforceError for an HTTP status and Salesforce error codes."""
    if "REQUEST_LIMIT_EXCEEDED" in codes:
        return SalesforceError(text, kind="limit", codes=codes)
    if "INVALID_SESSION_ID" in codes or status == 401:
        return SalesforceError(text, kind="session", codes=codes)
    if status >= 500 or TRANSIENT_CODES.intersection(codes):
        return SalesforceError(text, kind="transient", codes=codes)
    return SalesforceError(text, kind="rejected", codes=codes)


def _translate(exc: Exception) -> SalesforceError:
    if isinstance(exc, SalesforceError):
        return exc
    if isinstance(exc, SalesforceExpiredSession):
        return SalesforceError("Salesforce session expired or invalid", kind="session")
    if isinstance(exc, SalesforceAuthenticationFailed):
        return SalesforceError(f"Salesforce login failed: {exc.message}", kind="auth")
    if isinstance(exc, SalesforceOperationError) and not isinstance(exc, VendorError):
        return SalesforceError(f"Salesforce job failed: {exc}", kind="transient")
    if isinstance(exc, VendorError):
        codes = error_codes(exc.content)
        text = f"Salesforce answered {exc.status} {','.join(codes)}".strip()
        if isinstance(exc, SalesforceGeneralError) and exc.status < 500 and not codes:
            return SalesforceError(text, kind="transient", codes=codes)
        return classify(int(exc.status), codes, text)
    if isinstance(exc, OutboundError):  # the org's URL is not one we send a token to
        return SalesforceError(f"Salesforce instance refused: {exc}", kind="auth")
    if isinstance(exc, requests.RequestException | OSError):
        return SalesforceError(f"Salesforce unreachable: {type(exc).__name__}", kind="transient")
    raise exc


class _CountingSession(requests.Session):
    """Counts requests and reports each response (for the budget) before anyone parses it."""

    def __init__(
        self, timeout: float, on_response: Callable[[requests.Response], None] | None
    ) -> None:
        super().__init__()
        self.calls = 0
        self.timeout = timeout
        self.on_response = on_response

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls += 1
        kwargs.setdefault("timeout", self.timeout)
        response = super().request(*args, **kwargs)
        if self.on_response is not None:
            self.on_response(response)
        return response


@dataclass(frozen=True)
class CollectionOp:
    """One sObject Collections request: `method` on `path` with ≤ 200 records."""

    method: str  # POST (create), PATCH (update by Id, or upsert with an external-id path)
    path: str  # "composite/sobjects" or "composite/sobjects/Task/<ExtId__c>"
    records: list[dict[str, Any]]


@dataclass(frozen=True)
class OpResult:
    """Per-record answers of a CollectionOp, or why the whole op failed."""

    items: list[dict[str, Any]]
    error: SalesforceError | None = None


def soql_in(template: str, values: Sequence[str]) -> list[str]:
    """`template` (one `{}` for an IN list) over `values`, split so each query stays short."""
    queries: list[str] = []
    chunk: list[str] = []
    size = len(template)
    for value in values:
        grow = len(value) + 4  # quotes, comma, space; escaping is rare
        if chunk and size + grow > MAX_SOQL_CHARS:
            queries.append(format_soql(template, chunk))
            chunk, size = [], len(template)
        chunk.append(value)
        size += grow
    if chunk:
        queries.append(format_soql(template, chunk))
    return queries


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SalesforceApi:
    """One org's REST API. Renews its session through `tokens` when Salesforce says so."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        api_version: str,
        timeout: float = 60,
        on_response: Callable[[requests.Response], None] | None = None,
    ) -> None:
        self.tokens = tokens
        self.api_version = api_version
        # Every call goes to a Salesforce host or the operator's own, pinned (hosts).
        self._session = guard_session(_CountingSession(timeout, on_response))
        self._sf: Salesforce | None = None
        self._token: str | None = None

    @property
    def calls(self) -> int:
        """HTTP requests made to the REST API (logins and token grants not included)."""
        return self._session.calls

    def _client(self) -> Salesforce:
        if self._sf is None:
            session = self.tokens.current()
            self._sf = self._bind(session)
        return self._sf

    def _bind(self, session: OrgSession) -> Salesforce:
        self._token = session.access_token
        return Salesforce(
            instance_url=session.instance_url,
            session_id=session.access_token,
            version=self.api_version,
            session=self._session,
        )

    def _with_renewal(self, call: Callable[[Salesforce], Any]) -> Any:
        """Run `call`; on a 401 renew the session once and run it again."""
        for attempt in (1, 2):
            try:
                return call(self._client())
            except Exception as exc:
                error = _translate(exc)
                if error.kind != "session" or attempt == 2:
                    raise error from exc
            self._sf = self._bind(self.tokens.renew(self._token))
        raise AssertionError("unreachable")  # pragma: no cover

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST request (`path` relative to /services/data/vXX.X/)."""
        return self._with_renewal(lambda sf: sf.restful(path, method=method, **kwargs))

    # -- reads -------------------------------------------------------------------------

    def describe(self, sobject: str) -> dict[str, dict[str, Any]]:
        """The object's fields by name."""
        described = self.call("GET", f"sobjects/{sobject}/describe/")
        return {f["name"]: f for f in described.get("fields", [])}

    def query_many(self, queries: Sequence[str]) -> list[list[dict[str, Any]]]:
        """Run SOQL queries, five to a composite call; every page of each, in order."""
        results: list[list[dict[str, Any]]] = []
        for batch in _batches(list(queries), COMPOSITE_HEAVY_LIMIT):
            subrequests = [
                {"method": "GET", "url": self._url("query/", {"q": soql}), "referenceId": f"q{n}"}
                for n, soql in enumerate(batch)
            ]
            for answer in self._composite(subrequests):
                status, body = int(answer["httpStatusCode"]), answer.get("body")
                if status >= 300:
                    codes = error_codes(body)
                    raise classify(status, codes, f"Salesforce query answered {status} {codes}")
                results.append(self._all_pages(body if isinstance(body, dict) else {}))
        return results

    def _all_pages(self, page: dict[str, Any]) -> list[dict[str, Any]]:
        records = list(page.get("records", []))
        while not page.get("done", True) and page.get("nextRecordsUrl"):
            path = str(page["nextRecordsUrl"]).split(f"/v{self.api_version}/", 1)[-1]
            page = self.call("GET", path)
            records.extend(page.get("records", []))
        return records

    # -- writes ------------------------------------------------------------------------

    def write_many(self, ops: Sequence[CollectionOp]) -> list[OpResult]:
        """Run sObject Collections requests, five to a composite call; a result per op.

        A failure of one op (a bad field fails the whole collection) is its
        OpResult's `error`; a failure of the call itself raises SalesforceError.
        """
        results: list[OpResult] = []
        for batch in _batches(list(ops), COMPOSITE_HEAVY_LIMIT):
            subrequests = []
            for n, op in enumerate(batch):
                if not 0 < len(op.records) <= COLLECTION_LIMIT:
                    raise ValueError(
                        f"1 to {COLLECTION_LIMIT} records per op, got {len(op.records)}"
                    )
                subrequests.append(
                    {
                        "method": op.method,
                        "url": self._url(op.path),
                        "referenceId": f"w{n}",
                        "body": {"allOrNone": False, "records": op.records},
                    }
                )
            for op, answer in zip(batch, self._composite(subrequests), strict=True):
                status, body = int(answer["httpStatusCode"]), answer.get("body")
                if status >= 300 or not isinstance(body, list) or len(body) != len(op.records):
                    codes = error_codes(body)
                    error = classify(
                        status, codes, f"Salesforce collection answered {status} {codes}"
                    )
                    results.append(OpResult([], error))
                else:
                    results.append(OpResult(body))
        return results

    def _composite(self, subrequests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(subrequests) > COMPOSITE_LIMIT:
            raise ValueError(f"at most {COMPOSITE_LIMIT} subrequests, got {len(subrequests)}")
        answer = self.call(
            "POST", "composite", json={"allOrNone": False, "compositeRequest": subrequests}
        )
        results = answer.get("compositeResponse") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(subrequests):
            raise SalesforceError(
                "Salesforce returned an unexpected composite result", kind="transient"
            )
        by_ref = {str(r.get("referenceId")): r for r in results}
        return [by_ref[s["referenceId"]] for s in subrequests]

    def _url(self, path: str, params: dict[str, str] | None = None) -> str:
        url = f"/services/data/v{self.api_version}/{path}"
        if params:
            url += "?" + urlencode(params)
        return url

    # -- Bulk API 2.0 ------------------------------------------------------------------

    def bulk_upsert(
        self, sobject: str, key_field: str, records: list[dict[str, Any]]
    ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """Upsert through a Bulk API 2.0 ingest job; (successful rows, failed rows) as CSV dicts.

        Successful rows carry `sf__Id`, failed rows `sf__Error`; both carry our columns.
        """

        def run(sf: Salesforce) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
            handler = sf.bulk2
            assert isinstance(handler, SFBulk2Handler)
            api = getattr(handler, sobject)
            assert isinstance(api, SFBulk2Type)
            jobs = api.upsert(records=records, external_id_field=key_field, wait=1)
            done: list[dict[str, str]] = []
            failed: list[dict[str, str]] = []
            for job in jobs:
                job_id = str(job["job_id"])
                done += list(csv.DictReader(io.StringIO(api.get_successful_records(job_id))))
                failed += list(csv.DictReader(io.StringIO(api.get_failed_records(job_id))))
            return done, failed

        result: tuple[list[dict[str, str]], list[dict[str, str]]] = self._with_renewal(run)
        return result
