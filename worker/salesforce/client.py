"""The Salesforce REST calls Sightline makes, through simple-salesforce.

This is the only module that imports simple_salesforce. Every failure leaves it
as one `SalesforceError` that says what kind of failure it was, so the outbox can
decide in one place what to do:

    kind            cause                                  outbox does
    session         401 INVALID_SESSION_ID                 re-authenticate once, retry
    limit           403 REQUEST_LIMIT_EXCEEDED             park the org's queue, resume later
    transient       5xx, timeouts, connection errors       back off, retry
    rejected        any other 4xx (our request is wrong)   park the rows as failed (dead letters)

`calls` counts every HTTP request made, for the calls-per-activity benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.exceptions import (
    SalesforceError as VendorError,
)
from simple_salesforce.format import format_soql

from config.settings import SalesforceSettings

log = logging.getLogger(__name__)

COLLECTION_LIMIT = 200  # records per sObject Collections call (Salesforce's limit)
TIMEOUT_SECONDS = 60


class SalesforceError(Exception):
    def __init__(self, message: str, *, kind: str, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.kind = kind
        self.codes = tuple(codes)

    @property
    def permanent(self) -> bool:
        return self.kind == "rejected"


def _codes(content: Any) -> list[str]:
    if isinstance(content, list):
        return [str(item.get("errorCode", "")) for item in content if isinstance(item, dict)]
    if isinstance(content, dict) and "errorCode" in content:
        return [str(content["errorCode"])]
    return []


def _translate(exc: Exception) -> SalesforceError:
    if isinstance(exc, SalesforceExpiredSession):
        return SalesforceError("Salesforce session expired or invalid", kind="session")
    if isinstance(exc, SalesforceAuthenticationFailed):
        return SalesforceError(f"Salesforce login failed: {exc.message}", kind="rejected")
    if isinstance(exc, VendorError):
        codes = _codes(exc.content)
        text = f"Salesforce answered {exc.status} {','.join(codes) or ''}".strip()
        if "REQUEST_LIMIT_EXCEEDED" in codes:
            return SalesforceError(text, kind="limit", codes=codes)
        if "INVALID_SESSION_ID" in codes or exc.status == 401:
            return SalesforceError(text, kind="session", codes=codes)
        if isinstance(exc, SalesforceGeneralError) or exc.status >= 500:
            return SalesforceError(text, kind="transient", codes=codes)
        if "UNABLE_TO_LOCK_ROW" in codes or "SERVER_UNAVAILABLE" in codes:
            return SalesforceError(text, kind="transient", codes=codes)
        if isinstance(
            exc, SalesforceRefusedRequest | SalesforceMalformedRequest | SalesforceResourceNotFound
        ):
            return SalesforceError(text, kind="rejected", codes=codes)
        return SalesforceError(text, kind="rejected", codes=codes)
    if isinstance(exc, requests.RequestException | OSError):
        return SalesforceError(f"Salesforce unreachable: {type(exc).__name__}", kind="transient")
    raise exc


class _CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls += 1
        kwargs.setdefault("timeout", TIMEOUT_SECONDS)
        return super().request(*args, **kwargs)


class SalesforceApi:
    """One org's API, authenticated from settings. Re-authenticates on demand."""

    def __init__(self, settings: SalesforceSettings) -> None:
        if not settings.configured:
            raise SalesforceError("Salesforce is not configured", kind="rejected")
        self.settings = settings
        self._session = _CountingSession()
        self._sf: Salesforce | None = None

    @property
    def calls(self) -> int:
        return self._session.calls

    def _client(self) -> Salesforce:
        if self._sf is None:
            self._sf = self._login()
        return self._sf

    def _login(self) -> Salesforce:
        s = self.settings
        try:
            if s.username and s.password:
                return Salesforce(
                    username=s.username,
                    password=s.password,
                    security_token=s.security_token or "",
                    domain=s.domain,
                    version=s.api_version,
                    session=self._session,
                )
            return Salesforce(
                instance_url=s.instance_url,
                session_id=s.access_token,
                version=s.api_version,
                session=self._session,
            )
        except Exception as exc:
            raise _translate(exc) from exc

    def reauthenticate(self) -> bool:
        """Log in again. False when only a fixed access token is configured."""
        if not (self.settings.username and self.settings.password):
            return False
        self._sf = self._login()
        return True

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self._client().restful(path, method=method, **kwargs)
        except Exception as exc:
            raise _translate(exc) from exc

    def usage(self) -> tuple[int, int] | None:
        """(used, max) daily API requests from the last Sforce-Limit-Info header."""
        if self._sf is None:
            return None
        usage = self._sf.api_usage.get("api-usage")
        return (int(usage.used), int(usage.total)) if usage else None

    def query_all(self, soql: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        result = self._call("GET", "query/", params={"q": soql})
        while True:
            records.extend(result.get("records", []))
            next_url = result.get("nextRecordsUrl")
            if result.get("done", True) or not next_url:
                return records
            path = next_url.split(f"/v{self.settings.api_version}/", 1)[-1]
            result = self._call("GET", path)

    def query_in(self, template: str, values: Sequence[str]) -> list[dict[str, Any]]:
        """Run `template` (with one `{}` for an IN list) over `values`, chunked.

        A GET query's URI is limited (~16 KB); 100 addresses stay well under it.
        """
        records: list[dict[str, Any]] = []
        for start in range(0, len(values), 100):
            chunk = list(values[start : start + 100])
            records.extend(self.query_all(format_soql(template, chunk)))
        return records

    def task_fields(self) -> dict[str, dict[str, Any]]:
        described = self._call("GET", "sobjects/Task/describe/")
        return {f["name"]: f for f in described.get("fields", [])}

    def create(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """sObject Collections create; one result per record, in order."""
        return self._collection("POST", "composite/sobjects", records)

    def upsert(self, key_field: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """sObject Collections upsert by external id; one result per record."""
        return self._collection("PATCH", f"composite/sobjects/Task/{key_field}", records)

    def _collection(
        self, method: str, path: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if len(records) > COLLECTION_LIMIT:
            raise ValueError(f"at most {COLLECTION_LIMIT} records per call, got {len(records)}")
        body = {
            "allOrNone": False,
            "records": [{"attributes": {"type": "Task"}, **r} for r in records],
        }
        result = self._call(method, path, json=body)
        if not isinstance(result, list) or len(result) != len(records):
            raise SalesforceError(
                "Salesforce returned an unexpected collection result", kind="transient"
            )
        return result
