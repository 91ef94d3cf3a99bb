"""Salesforce's two error shapes, and the ids every record carries.

The REST API reports a failed *request* as an HTTP status with a JSON array
``[{"message": ..., "errorCode": ..., "fields": [...]}]`` (``ApiError``). A
failed *record* inside an sObject Collections call is an item of an HTTP 200
answer, ``{"success": false, "errors": [{"statusCode", "message", "fields"}]}``
(``RecordError``); a single-record call turns the same record error into a
top-level 400. Keeping both here lets every module raise the error Salesforce
would, and leaves the choice of shape to the endpoint.

Ids: Salesforce ids are 15 case-sensitive characters (3-character key prefix
first) or the 18-character form whose last 3 characters encode which of the
first 15 are upper case. The fake issues 18-character ids and accepts both.
"""

from __future__ import annotations

import re
from typing import Any

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")


class ApiError(Exception):
    """A whole request failed: ``status`` with Salesforce's error array."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        fields: list[str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        item: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            item["fields"] = self.fields
        return [item]


class RecordError(Exception):
    """One record could not be saved (a DML error with a ``statusCode``)."""

    def __init__(self, status_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.fields = list(fields or [])

    def item(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": self.fields}

    def as_api_error(self, status: int = 400) -> ApiError:
        """The shape a single-record endpoint (``sobjects/Task/``) answers with."""
        return ApiError(status, self.status_code, self.message, self.fields)

    def bulk_text(self) -> str:
        """The ``sf__Error`` column of a Bulk API 2.0 failedResults CSV."""
        fields = " ".join(self.fields)
        return f"{self.status_code}:{self.message}:{fields + ' ' if fields else ''}--"


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def invalid_session() -> ApiError:
    return ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")


def request_limit_exceeded() -> ApiError:
    return ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")


def json_parser_error(detail: str) -> ApiError:
    return ApiError(400, "JSON_PARSER_ERROR", detail)


def checksum_suffix(id15: str) -> str:
    """The 3 characters that make a 15-character id case-insensitively unique."""
    suffix = ""
    for chunk in range(3):
        flags = 0
        for position in range(5):
            char = id15[chunk * 5 + position]
            if "A" <= char <= "Z":
                flags |= 1 << position
        suffix += _CHECKSUM_ALPHABET[flags]
    return suffix


def normalize_id(value: str) -> str | None:
    """Return the 18-character form of ``value``, or None if it is no valid id."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        return None
    if len(value) == 15:
        return value + checksum_suffix(value)
    if checksum_suffix(value[:15]) != value[15:]:
        return None
    return value


def make_id(prefix: str, counter: int) -> str:
    """An 18-character id: key prefix, pod ``5g``, a reserved ``0``, a base-62 serial."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    serial = ""
    n = counter
    for _ in range(9):
        n, digit = divmod(n, 62)
        serial = alphabet[digit] + serial
    id15 = f"{prefix}5g0{serial}"
    return id15 + checksum_suffix(id15)
