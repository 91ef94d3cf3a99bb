"""The WSGI application: Salesforce's REST wire format, OAuth, and the admin API.

Request path, in the order a real org applies it::

    URI > 16,384 bytes → 414 (URI + headers > 16,384 → 431), from the edge: no
      JSON, no Sforce-Limit-Info, not charged        [help.salesforce.com 000386264]
    fault: latency (sleep first)
    /services/oauth2/*         token / authorize / revoke
    /id/<org id>/<user id>     the identity URL: who the Bearer token belongs to
    /services/data/vXX.X/...   Bearer token → 401 INVALID_SESSION_ID
                               allowance used up → 403 REQUEST_LIMIT_EXCEEDED
                               faults 401/403/5xx/UNABLE_TO_LOCK_ROW
                               one API request charged, then the resource
                               every answer carries Sforce-Limit-Info: api-usage=U/M
    fault: commit_then_hang / commit_then_drop (after the write is applied)
    /__fake__/*                admin API (tests only; never charged, never faulted)

REST resources: query/ and queryAll/ (SOQL subset, 2,000-row pages with
nextRecordsUrl, ``Sforce-Query-Options: batchSize=``), limits/, sobjects/
(global and per-object describe), sobjects/<T>/ create, sobjects/<T>/<id>
GET/PATCH/DELETE, sobjects/<T>/<ExtField>/<value> GET/PATCH upsert,
composite/sobjects POST/PATCH/DELETE (≤ 200 records, per-item results,
allOrNone), composite/sobjects/<T>/<ExtField> PATCH upsert, composite/ (≤ 25
subrequests, ≤ 5 of them queries or sObject Collections, charged as one API
call, a result per subrequest, allOrNone rolls all back with PROCESSING_HALTED),
jobs/ingest (Bulk API 2.0). Facts: Salesforce REST API Developer Guide (sObject Collections
create/update/upsert pages, "allOrNone" examples, status codes), Salesforce Help
000386264 (URI limit, 2,000-row batches), shared/FIELD-NOTES.md.

Composite facts: REST API Developer Guide "Composite" and "Composite Request
Body" pages (25 subrequests, 5 query/collections, one call toward limits). The
error code for going over those limits (LIMIT_EXCEEDED here) is unconfirmed.

Not modelled: composite @{reference} resolution and collation, composite/batch,
composite/tree, composite graph, SOSL search, sObject Collections GET, blob
fields, ETag/If-Modified-Since, per-app usage in Sforce-Limit-Info, concurrent
long-request limits, XML.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlencode

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from .bulk import BulkIngest
from .errors import (
    ApiError,
    RecordError,
    invalid_session,
    json_parser_error,
    normalize_id,
    not_found,
    request_limit_exceeded,
)
from .faults import Fault, Faults
from .oauth import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_PASSWORD,
    DEFAULT_SECURITY_TOKEN,
    OAuthError,
    TokenService,
)
from .schema import SObjectSpec
from .soql import parse as parse_soql
from .soql import run as run_soql
from .store import DEFAULT_USERNAME, Org, OrgConfig, Record

WSGIEnviron = dict[str, Any]
StartResponse = Callable[..., Any]

MAX_COLLECTION = 200
MIN_VERSION, MAX_VERSION = 31.0, 66.0
_API_RE = re.compile(r"^/services/data/v(?P<version>\d{2,3}\.\d)(?P<rest>/.*)?$")
_ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
)
_SERVER_UNAVAILABLE = ApiError(503, "SERVER_UNAVAILABLE", "Server Unavailable")
MAX_SUBREQUESTS = 25
MAX_HEAVY_SUBREQUESTS = 5  # queries and sObject Collections inside one composite
_REFERENCE_ID_RE = re.compile(r"^[A-Za-z0-9_]{1,80}$")
_PROCESSING_HALTED = [
    {
        "errorCode": "PROCESSING_HALTED",
        "message": "The transaction was rolled back since another operation in the same "
        "transaction failed.",
    }
]


def _bad_gateway() -> Response:
    """What the edge answers when the pod behind it is gone: HTML, no limit info, not charged."""
    return Response(
        "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>",
        status=502,
        content_type="text/html",
    )


_UNKNOWN_EXCEPTION = ApiError(
    500,
    "UNKNOWN_EXCEPTION",
    "An unexpected error occurred. Please include this ErrorId if you contact support: "
    "1183479841-42424 (-1184306412)",
)


_SOAP_FAULT = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
    "<faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, "
    "password, security token; or user locked out.</faultstring><detail><sf:LoginFault>"
    "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>Invalid username, "
    "password, security token; or user locked out.</sf:exceptionMessage></sf:LoginFault>"
    "</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
)
_SOAP_LOGIN_RESULT = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
    "<passwordExpired>false</passwordExpired><serverUrl>{server_url}</serverUrl>"
    "<sessionId>{session_id}</sessionId><userId>{user_id}</userId>"
    "<userInfo><organizationId>{org_id}</organizationId></userInfo>"
    "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
)


def _xml_text(document: str, tag: str) -> str:
    match = re.search(rf"<(?:\w+:)?{tag}>(.*?)</(?:\w+:)?{tag}>", document, re.DOTALL)
    return html.unescape(match.group(1)) if match else ""


def _lock_error(record_id: str | None = None) -> RecordError:
    suffix = f" or 1 records: {record_id}" if record_id else ""
    return RecordError(
        "UNABLE_TO_LOCK_ROW", f"unable to obtain exclusive access to this record{suffix}"
    )


OPERATIONS_KEY = "sightline.fake.operations"  # WSGI environ: what a call carried (`Call`)


@dataclass(frozen=True)
class Call:
    """One request the fake answered (admin requests are not logged).

    `operations` says what a call carried that its path does not: each
    subrequest of a composite call (``"PATCH composite/sobjects/Task/Key__c"``),
    or the operation of a Bulk API job (``"upsert Task by Key__c"``), so a test
    can tell how records were written.
    """

    method: str
    path: str
    query: str
    status: int
    started: float
    duration: float
    fault: str | None
    operations: tuple[str, ...] = ()


@dataclass
class CallLog:
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _calls: list[Call] = field(default_factory=list)

    def append(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def all(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def count(
        self, match: str | None = None, method: str | None = None, status: int | None = None
    ) -> int:
        return sum(
            1
            for c in self.all()
            if (match is None or match in c.path)
            and (method is None or c.method == method.upper())
            and (status is None or c.status == status)
        )


@dataclass
class _Cursor:
    sobject: str
    version: str
    endpoint: str
    records: list[Record]


@dataclass
class _Ctx:
    request: Request
    version: str
    fault: Fault | None


class ServerState:
    """Everything one fake org holds; shared by the HTTP app and the Python API."""

    def __init__(self, config: OrgConfig | None = None) -> None:
        self.org = Org(config)
        self.faults = Faults()
        self.calls = CallLog()
        self.bulk = BulkIngest(self.org)
        # Set when the org is reset or the server stops: wakes requests held by
        # latency / commit_then_hang so a finished test's request cannot leak into the next.
        self.interrupted = threading.Event()
        self.instance_url = ""
        self.tokens = self._new_token_service()
        self.access_token = ""
        self._cursors: dict[str, _Cursor] = {}
        self._cursor_serial = 0
        self._lock = threading.Lock()
        self.reset(config)

    def _new_token_service(self) -> TokenService:
        config = self.org.config
        tokens = TokenService(
            org_id=self.org.org_id,
            instance_url=self.instance_url,
            rotate_refresh_tokens=config.rotate_refresh_tokens,
            session_ttl=config.session_ttl,
        )
        tokens.add_app(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        tokens.add_user(DEFAULT_USERNAME, self.org.user_id)
        return tokens

    def reset(self, config: OrgConfig | None = None) -> None:
        """A fresh org: no records, faults, calls, jobs or tokens; a new access token."""
        self.interrupted.set()
        self.interrupted = threading.Event()
        self.org.reset(config)
        self.faults.clear()
        self.calls.clear()
        self.bulk.reset()
        with self._lock:
            self._cursors.clear()
        self.tokens = self._new_token_service()
        self.access_token = self.tokens.issue_access_token(DEFAULT_USERNAME)

    def configure(self, **changes: Any) -> OrgConfig:
        config = self.org.configure(**changes)
        self.tokens.rotate_refresh_tokens = config.rotate_refresh_tokens
        self.tokens.session_ttl = config.session_ttl
        return config

    def set_instance_url(self, url: str) -> None:
        self.instance_url = url
        self.tokens.instance_url = url

    def oauth_defaults(self) -> dict[str, str]:
        return {
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "username": DEFAULT_USERNAME,
            "password": DEFAULT_PASSWORD,
            "security_token": DEFAULT_SECURITY_TOKEN,
        }

    # query cursors
    def open_cursor(self, cursor: _Cursor) -> str:
        with self._lock:
            self._cursor_serial += 1
            locator = f"01g5g{self._cursor_serial:010d}"
            self._cursors[locator] = cursor
            return locator

    def cursor(self, locator: str) -> _Cursor | None:
        with self._lock:
            return self._cursors.get(locator)


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body),
        status=status,
        headers=headers,
        content_type="application/json;charset=UTF-8",
    )


class SalesforceApp:
    """The WSGI callable serving one ``ServerState``."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    # -- entry ---------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        path = request.path
        if path.startswith("/__fake__/"):
            return AdminApi(self.state).handle(request)(environ, start_response)
        started = time.time()
        interrupted = self.state.interrupted  # this org's; a reset replaces it
        fault: Fault | None = None
        too_long = self._edge_check(environ)
        if too_long is not None:
            response = too_long
        else:
            fault = self.state.faults.pick(request.method, path)
            if fault is not None and fault.kind == "latency":
                interrupted.wait(fault.seconds)
                if interrupted.is_set():
                    # The org was reset (or the server stops) while this request slept:
                    # it belongs to a finished test, so it ends unanswered and unlogged.
                    self._drop(environ)
            if fault is not None and fault.kind == "http_502":
                response = _bad_gateway()
            else:
                response = self._dispatch(request, fault)
        self.state.calls.append(
            Call(
                method=request.method,
                path=path,
                query=request.query_string.decode("latin-1"),
                status=response.status_code,
                started=started,
                duration=time.time() - started,
                fault=fault.kind if fault else None,
                operations=tuple(request.environ.get(OPERATIONS_KEY, ())),
            )
        )
        if fault is not None and fault.kind == "commit_then_drop":
            self._drop(environ)
        if fault is not None and fault.kind == "commit_then_hang":
            interrupted.wait(fault.seconds)
        return response(environ, start_response)

    def _edge_check(self, environ: WSGIEnviron) -> Response | None:
        limit = self.state.org.config.max_uri_bytes
        uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
        if len(uri.encode("latin-1", "replace")) > limit:
            return Response(
                "<html><body><h1>414 URI Too Long</h1></body></html>",
                status=414,
                content_type="text/html",
            )
        header_bytes = sum(
            len(k) + len(str(v)) + 4 for k, v in environ.items() if k.startswith("HTTP_")
        )
        if len(uri) + header_bytes > limit:
            return Response(
                "<html><body><h1>431 Request Header Fields Too Large</h1></body></html>",
                status=431,
                content_type="text/html",
            )
        return None

    @staticmethod
    def _drop(environ: WSGIEnviron) -> NoReturn:
        """Close the connection without an answer.

        Raises:
            ConnectionAbortedError: always. Werkzeug's server takes it for a client
                that went away and says nothing; returning no answer instead makes it
                log "write() before start_response" with a traceback, which reads as
                a crash of the fake in every run that uses this fault.
        """
        sock = environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket):
            # OSError: the client went first; the connection is gone either way.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("fake salesforce: connection dropped on purpose")

    def _dispatch(self, request: Request, fault: Fault | None) -> Response:
        path = request.path
        if path.startswith("/services/oauth2/"):
            return self._oauth(request, fault)
        if path.startswith("/id/") and request.method == "GET":
            return self._identity(request)
        if path.startswith("/services/Soap/u/") and request.method == "POST":
            return self._soap_login(request)
        if path.rstrip("/") == "/services/data":
            return _json_response(
                200,
                [
                    {"label": "Fake", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                    for v in range(int(MIN_VERSION), int(MAX_VERSION) + 1)
                ],
            )
        match = _API_RE.match(path)
        if match is None:
            return _json_response(404, not_found().body())
        return self._api(request, match.group("version"), match.group("rest") or "/", fault)

    # -- OAuth ---------------------------------------------------------------------------

    def _oauth(self, request: Request, fault: Fault | None) -> Response:
        if fault is not None and fault.kind in {"http_503", "http_500"}:
            error = _SERVER_UNAVAILABLE if fault.kind == "http_503" else _UNKNOWN_EXCEPTION
            return _json_response(error.status, error.body())
        tokens = self.state.tokens
        endpoint = request.path.removeprefix("/services/oauth2/").rstrip("/")
        try:
            if endpoint == "token" and request.method == "POST":
                form = {k: v for k, v in request.form.items()}
                answer = tokens.token_request(form, request.headers.get("Authorization"))
                return _json_response(200, answer)
            if endpoint == "authorize" and request.method == "GET":
                args = request.args
                code = tokens.authorize(
                    args.get("client_id", ""), args.get("redirect_uri", ""), args.get("login_hint")
                )
                query = {"code": code}
                if "state" in args:
                    query["state"] = args["state"]
                redirect = args.get("redirect_uri", "")
                separator = "&" if "?" in redirect else "?"
                return Response(
                    status=302, headers={"Location": redirect + separator + urlencode(query)}
                )
            if endpoint == "revoke" and request.method in {"POST", "GET"}:
                token = request.values.get("token", "")
                if not tokens.revoke(token):
                    raise OAuthError("unsupported_token_type", "this token type is not supported")
                return Response(status=200)
        except OAuthError as exc:
            return _json_response(exc.status, exc.body())
        return _json_response(404, not_found().body())

    def _identity(self, request: Request) -> Response:
        """The identity service: a Bearer token's own user, as JSON (Salesforce Help
        "Identity URLs"). A bad token or another user's URL: 403 with a one-word body."""
        auth = request.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1].strip() if " " in auth else ""
        parts = request.path.strip("/").split("/")
        if len(parts) != 3:
            return Response("Bad_Id", status=404, content_type="text/plain")
        found = self.state.tokens.identity(token, org_id=parts[1], user_id=parts[2])
        if isinstance(found, str):
            return Response(found, status=403, content_type="text/plain")
        return _json_response(200, found)

    def _soap_login(self, request: Request) -> Response:
        """The Partner API ``login()`` simple-salesforce uses for username+password."""
        body = request.get_data(as_text=True)
        username = _xml_text(body, "username")
        password = _xml_text(body, "password")
        user = self.state.tokens.users.get(username.lower())
        version = request.path.rstrip("/").split("/")[-1]
        if user is None or password != user.password + user.security_token:
            return Response(_SOAP_FAULT, status=500, content_type="text/xml; charset=utf-8")
        token = self.state.tokens.issue_access_token(user.username)
        server_url = f"{self.state.instance_url}/services/Soap/u/{version}/{self.state.org.org_id}"
        answer = _SOAP_LOGIN_RESULT.format(
            server_url=server_url,
            session_id=token,
            user_id=user.user_id,
            org_id=self.state.org.org_id,
        )
        return Response(answer, status=200, content_type="text/xml; charset=utf-8")

    # -- REST API ------------------------------------------------------------------------

    def _api(self, request: Request, version: str, rest: str, fault: Fault | None) -> Response:
        state = self.state
        if not MIN_VERSION <= float(version) <= MAX_VERSION:
            return _json_response(404, not_found().body())
        auth = request.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1].strip() if " " in auth else ""
        kind = fault.kind if fault else None
        if kind == "invalid_session" or not state.tokens.is_valid(token):
            return _json_response(401, invalid_session().body())
        if kind == "request_limit_exceeded" or not state.org.charge_api_call():
            return self._with_usage(_json_response(403, request_limit_exceeded().body()))
        if kind in {"http_503", "http_500"}:
            error = _SERVER_UNAVAILABLE if kind == "http_503" else _UNKNOWN_EXCEPTION
            return self._with_usage(_json_response(error.status, error.body()))
        ctx = _Ctx(request, version, fault)
        try:
            if kind == "unable_to_lock_row" and not rest.startswith("/composite"):
                raise _lock_error().as_api_error()
            response = self._route(ctx, rest.strip("/"))
        except ApiError as exc:
            response = _json_response(exc.status, exc.body())
        except RecordError as exc:
            response = _json_response(400, exc.as_api_error().body())
        return self._with_usage(response)

    def _with_usage(self, response: Response) -> Response:
        response.headers["Sforce-Limit-Info"] = self.state.org.limit_info()
        return response

    def _route(self, ctx: _Ctx, rest: str) -> Response:
        parts = rest.split("/") if rest else []
        method = ctx.request.method
        head = parts[0] if parts else ""
        if not parts:
            self._require(method, "GET")
            return _json_response(
                200,
                {
                    name: f"/services/data/v{ctx.version}/{name}"
                    for name in ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
                },
            )
        if head == "limits" and len(parts) == 1:
            self._require(method, "GET")
            return self._limits()
        if head in {"query", "queryAll"}:
            self._require(method, "GET")
            return self._query(ctx, head, parts[1:])
        if head == "sobjects":
            return self._sobjects(ctx, parts[1:])
        if parts[:2] == ["composite", "sobjects"]:
            return self._collections(ctx, parts[2:])
        if parts == ["composite"]:
            return self._composite(ctx)
        if parts[:2] == ["jobs", "ingest"]:
            return self._jobs(ctx, parts[2:])
        raise not_found()

    @staticmethod
    def _require(method: str, *allowed: str) -> None:
        """Raise Salesforce's 405 unless ``method`` is one of ``allowed``."""
        if method in allowed or (method == "HEAD" and "GET" in allowed):
            return
        raise ApiError(
            405,
            "METHOD_NOT_ALLOWED",
            f"HTTP Method '{method}' not allowed. Allowed are {','.join(allowed)}",
        )

    @staticmethod
    def _body(request: Request) -> Any:
        raw = request.get_data(as_text=True)
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise json_parser_error(f"Unexpected character in JSON body: {exc}") from exc

    # limits ---------------------------------------------------------------------------------

    def _limits(self) -> Response:
        org = self.state.org
        with org.lock:
            maximum, used = org.config.api_max, org.api_used
        return _json_response(
            200,
            {
                "DailyApiRequests": {"Max": maximum, "Remaining": max(maximum - used, 0)},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                "DataStorageMB": {"Max": 1024, "Remaining": 1024},
            },
        )

    # query ----------------------------------------------------------------------------------

    def _query(self, ctx: _Ctx, endpoint: str, rest: list[str]) -> Response:
        if rest:
            return self._query_more(ctx, "/".join(rest))
        soql = ctx.request.args.get("q")
        if not soql:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        org = self.state.org
        query = parse_soql(soql, org.sobject)
        rows = run_soql(query, org.rows(query.sobject.name, include_deleted=endpoint == "queryAll"))
        if query.count_only:
            return _json_response(200, {"totalSize": len(rows), "done": True, "records": []})
        names = [f.name for f in query.fields]
        records = [self._row(ctx.version, query.sobject, r, names) for r in rows]
        cursor = _Cursor(query.sobject.name, ctx.version, endpoint, records)
        return self._page(ctx, cursor, None, 0)

    def _page(self, ctx: _Ctx, cursor: _Cursor, locator: str | None, offset: int) -> Response:
        size = self._batch_size(ctx.request)
        page = cursor.records[offset : offset + size]
        body: dict[str, Any] = {
            "totalSize": len(cursor.records),
            "done": offset + size >= len(cursor.records),
            "records": page,
        }
        if not body["done"]:
            locator = locator or self.state.open_cursor(cursor)
            body["nextRecordsUrl"] = (
                f"/services/data/v{cursor.version}/{cursor.endpoint}/{locator}-{offset + size}"
            )
        return _json_response(200, body)

    def _query_more(self, ctx: _Ctx, token: str) -> Response:
        locator, _, offset = token.partition("-")
        cursor = self.state.cursor(locator)
        if cursor is None or not offset.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(ctx, cursor, locator, int(offset))

    def _batch_size(self, request: Request) -> int:
        size = self.state.org.config.query_batch_size
        options = request.headers.get("Sforce-Query-Options", "")
        match = re.search(r"batchSize=(\d+)", options)
        if match:
            size = min(max(int(match.group(1)), 200), 2000)
        return size

    def _row(
        self, version: str, spec: SObjectSpec, record: Record, names: list[str] | None = None
    ) -> Record:
        out: Record = {
            "attributes": {
                "type": spec.name,
                "url": f"/services/data/v{version}/sobjects/{spec.name}/{record['Id']}",
            }
        }
        out.update(self.state.org.as_json(spec.name, record, names))
        return out

    # sobjects ---------------------------------------------------------------------------

    def _sobjects(self, ctx: _Ctx, parts: list[str]) -> Response:
        org = self.state.org
        method = ctx.request.method
        if not parts:
            self._require(method, "GET")
            return _json_response(
                200,
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": MAX_COLLECTION,
                    "sobjects": [s.summary(ctx.version) for s in org.schema.values()],
                },
            )
        spec = org.sobject(parts[0])
        if spec is None:
            raise not_found()
        if len(parts) == 1:
            if method == "POST":
                return self._create_one(ctx, spec)
            self._require(method, "GET", "POST")
            return _json_response(
                200,
                {
                    "objectDescribe": spec.summary(ctx.version),
                    "recentItems": [],
                },
            )
        if len(parts) == 2 and parts[1] == "describe":
            self._require(method, "GET")
            return _json_response(200, spec.describe(ctx.version))
        if len(parts) == 2:
            return self._one_record(ctx, spec, parts[1])
        if len(parts) == 3:
            return self._by_external_id(ctx, spec, parts[1], parts[2])
        raise not_found()

    def _create_one(self, ctx: _Ctx, spec: SObjectSpec) -> Response:
        body = self._body(ctx.request)
        if not isinstance(body, dict):
            raise json_parser_error("Expected a JSON object for the record")
        record_id = self.state.org.insert(spec.name, body)
        return _json_response(201, {"id": record_id, "success": True, "errors": []})

    def _find(self, spec: SObjectSpec, raw_id: str) -> Record:
        full = normalize_id(raw_id)
        record = self.state.org.get(full) if full and full.startswith(spec.key_prefix) else None
        if record is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {raw_id}",
            )
        if record["IsDeleted"]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def _one_record(self, ctx: _Ctx, spec: SObjectSpec, raw_id: str) -> Response:
        method = ctx.request.method
        self._require(method, "GET", "PATCH", "DELETE")
        record = self._find(spec, raw_id)
        org = self.state.org
        if method in {"GET", "HEAD"}:
            fields = ctx.request.args.get("fields")
            names = [f.strip() for f in fields.split(",")] if fields else None
            return _json_response(200, self._row(ctx.version, spec, record, names))
        if method == "PATCH":
            body = self._body(ctx.request)
            if not isinstance(body, dict):
                raise json_parser_error("Expected a JSON object for the record")
            org.update(spec.name, record["Id"], body)
            return Response(status=204)
        org.delete_via_api(record["Id"])
        return Response(status=204)

    def _external_field(self, spec: SObjectSpec, field_name: str) -> str:
        field_spec = spec.field(field_name)
        if field_spec is None:
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        if not (field_spec.external_id or field_spec.id_lookup) or field_spec.name == "Id":
            raise ApiError(
                400,
                "INVALID_FIELD",
                f"Field name provided, {field_spec.name} is not an External ID or "
                f"indexed field for {spec.name}",
            )
        return field_spec.name

    def _by_external_id(
        self, ctx: _Ctx, spec: SObjectSpec, field_name: str, value: str
    ) -> Response:
        method = ctx.request.method
        self._require(method, "GET", "PATCH")
        name = self._external_field(spec, field_name)
        org = self.state.org
        if method in {"GET", "HEAD"}:
            record = org.find_by_external_id(spec, name, value)
            if record is None:
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            return _json_response(200, self._row(ctx.version, spec, record))
        body = self._body(ctx.request)
        if not isinstance(body, dict):
            raise json_parser_error("Expected a JSON object for the record")
        record_id, created = org.upsert(spec.name, name, value, body)
        answer = {"id": record_id, "success": True, "errors": [], "created": created}
        return _json_response(201 if created else 200, answer)

    # sObject Collections ----------------------------------------------------------------

    def _collections(self, ctx: _Ctx, parts: list[str]) -> Response:
        method = ctx.request.method
        if not parts:
            if method == "DELETE":
                return self._collection_delete(ctx)
            self._require(method, "POST", "PATCH", "DELETE")
            records, all_or_none = self._collection_body(ctx)
            specs = [self._record_type(r, None) for r in records]
            if method == "POST":
                return self._collection_save(ctx, records, specs, all_or_none, self._insert_item)
            return self._collection_save(ctx, records, specs, all_or_none, self._update_item)
        if len(parts) == 2:
            self._require(method, "PATCH")
            spec = self.state.org.sobject(parts[0])
            if spec is None:
                raise not_found()
            ext = self._external_field(spec, parts[1])
            records, all_or_none = self._collection_body(ctx)
            specs = [self._record_type(r, spec) for r in records]
            duplicates = self._duplicate_keys(records, ext)

            def upsert_item(index: int, record: Record, item_spec: SObjectSpec) -> Record:
                key = next((v for k, v in record.items() if k.lower() == ext.lower()), None)
                if key is None or key == "":
                    raise RecordError("MISSING_ARGUMENT", f"{ext} not specified", [ext])
                if str(key).lower() in duplicates:
                    raise RecordError(
                        self.state.org.config.duplicate_key_code,
                        f"Duplicate external id specified: {key}",
                        [ext],
                    )
                record_id, created = self.state.org.upsert(item_spec.name, ext, key, record)
                return {"id": record_id, "success": True, "errors": [], "created": created}

            return self._collection_save(ctx, records, specs, all_or_none, upsert_item)
        raise not_found()

    def _collection_body(self, ctx: _Ctx) -> tuple[list[Record], bool]:
        body = self._body(ctx.request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise json_parser_error("Expected a JSON object with a 'records' array")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        if not all(isinstance(r, dict) for r in records):
            raise json_parser_error("Each record must be a JSON object")
        return records, bool(body.get("allOrNone", False))

    def _record_type(self, record: Record, expected: SObjectSpec | None) -> SObjectSpec:
        attributes = record.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        spec = self.state.org.sobject(str(type_name)) if type_name else None
        if spec is None or not spec.createable:
            raise ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        if expected is not None and spec.name != expected.name:
            raise ApiError(
                400, "INVALID_TYPE", f"The list can contain objects only of type {expected.name}"
            )
        # Salesforce reads every record before saving any: a bad field fails the request.
        self.state.org.check_payload(spec, {k: v for k, v in record.items() if k.lower() != "id"})
        return spec

    @staticmethod
    def _duplicate_keys(records: list[Record], ext: str) -> set[str]:
        seen: dict[str, int] = {}
        for record in records:
            key = next((v for k, v in record.items() if k.lower() == ext.lower()), None)
            if key not in (None, ""):
                seen[str(key).lower()] = seen.get(str(key).lower(), 0) + 1
        return {k for k, n in seen.items() if n > 1}

    def _insert_item(self, _index: int, record: Record, spec: SObjectSpec) -> Record:
        if any(k.lower() == "id" for k in record):
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"]
            )
        return {"id": self.state.org.insert(spec.name, record), "success": True, "errors": []}

    def _update_item(self, _index: int, record: Record, spec: SObjectSpec) -> Record:
        raw_id = next((str(v) for k, v in record.items() if k.lower() == "id"), None)
        if not raw_id:
            raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        values = {k: v for k, v in record.items() if k.lower() != "id"}
        self.state.org.update(spec.name, raw_id, values)
        return {"id": normalize_id(raw_id) or raw_id, "success": True, "errors": []}

    def _collection_save(
        self,
        ctx: _Ctx,
        records: list[Record],
        specs: list[SObjectSpec],
        all_or_none: bool,
        save: Callable[[int, Record, SObjectSpec], Record],
    ) -> Response:
        fault = ctx.fault
        locked: set[int] = set()
        if fault is not None and fault.kind == "unable_to_lock_row":
            locked = set(fault.items) if fault.items is not None else set(range(len(records)))
        org = self.state.org
        with org.transaction() as rollback:
            results: list[Record] = []
            for index, (record, spec) in enumerate(zip(records, specs, strict=True)):
                try:
                    if index in locked:
                        raise _lock_error()
                    results.append(save(index, record, spec))
                except RecordError as exc:
                    results.append({"success": False, "errors": [exc.item()]})
            if all_or_none and not all(r["success"] for r in results):
                rollback()
                results = [
                    r if not r["success"] else {"success": False, "errors": [_ROLLED_BACK.item()]}
                    for r in results
                ]
        return _json_response(200, results)

    def _collection_delete(self, ctx: _Ctx) -> Response:
        ids = [i for i in ctx.request.args.get("ids", "").split(",") if i]
        if len(ids) > MAX_COLLECTION:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        all_or_none = ctx.request.args.get("allOrNone", "false").lower() == "true"
        org = self.state.org
        with org.transaction() as rollback:
            results: list[Record] = []
            for raw_id in ids:
                try:
                    if normalize_id(raw_id) is None:
                        raise RecordError("MALFORMED_ID", f"malformed id {raw_id}")
                    org.delete_via_api(raw_id)
                    results.append({"id": normalize_id(raw_id), "success": True, "errors": []})
                except RecordError as exc:
                    results.append({"id": raw_id, "success": False, "errors": [exc.item()]})
            if all_or_none and not all(r["success"] for r in results):
                rollback()
                results = [
                    r
                    if not r["success"]
                    else {"id": r["id"], "success": False, "errors": [_ROLLED_BACK.item()]}
                    for r in results
                ]
        return _json_response(200, results)

    # Composite ------------------------------------------------------------------------------

    def _composite(self, ctx: _Ctx) -> Response:
        """``POST composite``: up to 25 subrequests, one API call, a result for each."""
        method = ctx.request.method
        self._require(method, "GET", "POST")
        if method in {"GET", "HEAD"}:
            base = f"/services/data/v{ctx.version}/composite"
            return _json_response(200, {"sobjects": f"{base}/sobjects"})
        body = self._body(ctx.request)
        subrequests = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subrequests, list) or not subrequests:
            raise json_parser_error("Expected a JSON object with a 'compositeRequest' array")
        if len(subrequests) > MAX_SUBREQUESTS:
            raise ApiError(
                400,
                "LIMIT_EXCEEDED",
                f"Composite requests may contain at most {MAX_SUBREQUESTS} subrequests",
            )
        parsed = [self._subrequest(ctx, sub, index) for index, sub in enumerate(subrequests)]
        ctx.request.environ[OPERATIONS_KEY] = [f"{p[4]} {p[2]}" for p in parsed]
        references = [p[0] for p in parsed]
        if len(set(references)) != len(references):
            raise ApiError(400, "INVALID_API_INPUT", "Duplicate referenceId provided")
        heavy = sum(
            1 for _, _, rest, _, _ in parsed if rest.startswith(("query", "composite/sobjects"))
        )
        if heavy > MAX_HEAVY_SUBREQUESTS:
            raise ApiError(
                400,
                "LIMIT_EXCEEDED",
                f"Composite requests may contain at most {MAX_HEAVY_SUBREQUESTS} query or "
                "sObject Collections subrequests",
            )
        all_or_none = bool(body.get("allOrNone", False)) if isinstance(body, dict) else False
        org = self.state.org
        results: list[Record] = []
        with org.transaction() as rollback:
            for reference, version, rest, request, _ in parsed:
                status, answer = self._run_subrequest(ctx, request, version, rest)
                results.append(
                    {
                        "body": answer,
                        "httpHeaders": {},
                        "httpStatusCode": status,
                        "referenceId": reference,
                    }
                )
            if all_or_none and any(r["httpStatusCode"] >= 400 for r in results):
                rollback()
                results = [
                    r
                    if r["httpStatusCode"] >= 400
                    else {**r, "body": _PROCESSING_HALTED, "httpStatusCode": 400}
                    for r in results
                ]
        return _json_response(200, {"compositeResponse": results})

    def _subrequest(self, ctx: _Ctx, sub: Any, index: int) -> tuple[str, str, str, Request, str]:
        """Check one subrequest; (referenceId, version, resource path, request, method)."""
        if not isinstance(sub, dict):
            raise json_parser_error(f"compositeRequest[{index}] must be a JSON object")
        method, url, reference = sub.get("method"), sub.get("url"), sub.get("referenceId")
        if method not in {"GET", "POST", "PATCH", "PUT", "DELETE"}:
            raise ApiError(400, "INVALID_API_INPUT", f"Invalid method in subrequest {index}")
        if not isinstance(reference, str) or not _REFERENCE_ID_RE.match(reference):
            raise ApiError(400, "INVALID_API_INPUT", f"Invalid referenceId in subrequest {index}")
        if not isinstance(url, str):
            raise ApiError(400, "INVALID_API_INPUT", f"Missing url in subrequest {index}")
        if "@{" in json.dumps(sub):
            # Real orgs resolve @{ref.field} references; the fake does not model them.
            raise ApiError(400, "INVALID_API_INPUT", "the fake does not model @{} references")
        path, _, query = url.partition("?")
        match = _API_RE.match(path)
        if match is None:
            raise ApiError(400, "INVALID_API_INPUT", f"Invalid url in subrequest {index}: {url}")
        builder = EnvironBuilder(
            method=method,
            path=path,
            query_string=query,
            json=sub.get("body") if "body" in sub else None,
            headers=[("Authorization", ctx.request.headers.get("Authorization", ""))],
        )
        try:
            request = Request(builder.get_environ())
        finally:
            builder.close()
        rest = (match.group("rest") or "/").strip("/")
        return reference, match.group("version"), rest, request, method

    def _run_subrequest(
        self, ctx: _Ctx, request: Request, version: str, rest: str
    ) -> tuple[int, Any]:
        sub_ctx = _Ctx(request, version, ctx.fault)
        try:
            response = self._route(sub_ctx, rest)
        except ApiError as exc:
            return exc.status, exc.body()
        except RecordError as exc:
            return 400, exc.as_api_error().body()
        if response.status_code == 204:
            return 204, None
        return response.status_code, json.loads(response.get_data(as_text=True))

    # Bulk API 2.0 ---------------------------------------------------------------------------

    def _jobs(self, ctx: _Ctx, parts: list[str]) -> Response:
        bulk = self.state.bulk
        method = ctx.request.method
        user_id = self.state.org.user_id
        if not parts:
            self._require(method, "POST")
            body = self._body(ctx.request)
            if not isinstance(body, dict):
                raise json_parser_error("Expected a JSON object for the job")
            job = bulk.create(body, ctx.version)
            by = f" by {job['externalIdFieldName']}" if job.get("externalIdFieldName") else ""
            ctx.request.environ[OPERATIONS_KEY] = [f"{job['operation']} {job['object']}{by}"]
            return _json_response(200, job)
        job_id = parts[0]
        if len(parts) == 1:
            self._require(method, "GET", "PATCH", "DELETE")
            if method in {"GET", "HEAD"}:
                return _json_response(200, bulk.job(job_id).info(user_id))
            if method == "DELETE":
                bulk.delete(job_id)
                return Response(status=204)
            body = self._body(ctx.request)
            state = body.get("state") if isinstance(body, dict) else None
            return _json_response(200, bulk.set_state(job_id, str(state)))
        if len(parts) == 2 and parts[1] == "batches":
            self._require(method, "PUT")
            bulk.upload(job_id, ctx.request.get_data(as_text=True))
            return Response(status=201)
        if len(parts) == 2:
            self._require(method, "GET")
            return Response(bulk.results(job_id, parts[1]), status=200, content_type="text/csv")
        raise not_found()


class AdminApi:
    """``/__fake__/*``: inspect and steer the fake from another process."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def handle(self, request: Request) -> Response:
        try:
            return self._route(request)
        except (KeyError, ValueError, TypeError) as exc:
            return _json_response(400, {"error": f"{type(exc).__name__}: {exc}"})

    def _route(self, request: Request) -> Response:
        state, org = self.state, self.state.org
        path = request.path.removeprefix("/__fake__/").strip("/")
        method = request.method
        body: dict[str, Any] = request.get_json(silent=True) or {}
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "health"): lambda: {"ok": True, "instance_url": state.instance_url},
            ("POST", "reset"): lambda: state.reset(OrgConfig(**body) if body else None),
            ("GET", "config"): lambda: asdict(org.config),
            ("PATCH", "config"): lambda: asdict(state.configure(**body)),
            ("GET", "oauth"): state.oauth_defaults,
            ("POST", "contacts"): lambda: {"id": org.add_contact(**body)},
            ("POST", "leads"): lambda: {"id": org.add_lead(**body)},
            ("POST", "accounts"): lambda: {"id": org.add_account(**body)},
            ("GET", "tasks"): lambda: org.tasks(
                include_deleted=request.args.get("include_deleted") == "1"
            ),
            ("GET", "faults"): lambda: [f.public() for f in state.faults.armed()],
            ("POST", "faults"): lambda: state.faults.add(**body).public(),
            ("POST", "faults/rate"): lambda: state.faults.rate(**body),
            ("DELETE", "faults"): state.faults.clear,
            ("GET", "faults/fired"): lambda: [list(f) for f in state.faults.fired_list()],
            ("GET", "calls"): lambda: [asdict(c) for c in state.calls.all()],
            ("DELETE", "calls"): state.calls.clear,
            ("GET", "usage"): lambda: {"used": org.api_used, "max": org.config.api_max},
            ("PUT", "usage"): lambda: org.set_api_usage(int(body["used"]), body.get("max")),
            ("GET", "token"): lambda: {"access_token": state.access_token},
            ("POST", "tokens"): lambda: {
                "access_token": state.tokens.issue_access_token(
                    body.get("username", DEFAULT_USERNAME)
                )
            },
            ("POST", "tokens/expire"): lambda: {"expired": state.tokens.expire(body.get("token"))},
            ("POST", "refresh-tokens"): lambda: {
                "refresh_token": state.tokens.issue_refresh_token(
                    body.get("client_id", DEFAULT_CLIENT_ID), body.get("username", DEFAULT_USERNAME)
                )
            },
            ("POST", "apps"): lambda: {
                "client_id": state.tokens.add_app(
                    body["client_id"],
                    body["client_secret"],
                    jwt_public_key_pem=(
                        body["jwt_public_key_pem"].encode()
                        if body.get("jwt_public_key_pem")
                        else None
                    ),
                    redirect_uris=tuple(body.get("redirect_uris", ())),
                ).client_id
            },
        }
        if path.startswith("records/"):
            rest = path.removeprefix("records/")
            if method == "DELETE":
                org.delete(rest)
                return _json_response(200, {"deleted": rest})
            spec = org.sobject(rest)
            if spec is None:
                return _json_response(404, {"error": f"no sObject {rest}"})
            include_deleted = request.args.get("include_deleted") == "1"
            return _json_response(
                200,
                [
                    org.as_json(spec.name, r)
                    for r in org.rows(spec.name, include_deleted=include_deleted)
                ],
            )
        action = routes.get((method, path))
        if action is None:
            return _json_response(404, {"error": f"no admin route {method} /__fake__/{path}"})
        result = action()
        return _json_response(200, result if result is not None else {"ok": True})
