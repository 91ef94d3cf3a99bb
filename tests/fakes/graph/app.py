"""The fake Microsoft identity platform and Microsoft Graph v1.0 (mail) WSGI app.

    GET  /{tenant}/v2.0/.well-known/openid-configuration   MSAL's tenant discovery
    GET  /{tenant}/oauth2/v2.0/authorize                   consent: 302 with code (+ state)
    POST /{tenant}/oauth2/v2.0/token                       authorization_code (PKCE) | refresh_token
    GET  /v1.0/me                                          the signed-in user
    GET  /v1.0/me/mailFolders[/{f}/childFolders]           folders, paged ($top, $skip)
    GET  /v1.0/me/mailFolders/{folder}                     a folder, by well-known name or id
    POST /v1.0/me/messages                                 a draft, from base64 MIME (text/plain)
    POST /v1.0/me/messages/{id}/send                       202; the draft becomes a new Sent item
    GET  /v1.0/me/messages/{id}[/$value]                   one message ($select, $expand) or MIME
    GET  /v1.0/me[/mailFolders/{f}]/messages               $filter=internetMessageId eq '...'
    GET  /v1.0/me/mailFolders/{f}/messages/delta           delta rounds: nextLink … deltaLink
    POST|PATCH|DELETE /v1.0/subscriptions[/{id}]           change notifications (validation)

Errors are Graph's `{"error": {"code", "message", "innerError"}}`; throttling is
429 + `Retry-After`; an expired delta token is 410 Gone; identity errors are
OAuth's `{"error", "error_description", "error_codes"}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import jwt
from werkzeug.wrappers import Request, Response

from .folders import FolderTree
from .store import (
    MAX_SUBSCRIPTION_MINUTES,
    GraphError,
    GraphMessage,
    GraphStore,
    GraphUser,
    Subscription,
    client_info,
)

_FOLDER_ARG = re.compile(r"^mailFolders(?:\('([^']+)'\)|/([^/]+))$", re.IGNORECASE)
_PROPERTY = re.compile(r"id eq '([^']+)'")
_INTERNET_ID_FILTER = re.compile(r"^internetMessageId eq '(.*)'$")
_RECEIVED_FILTER = re.compile(r"^receivedDateTime (ge|gt) (\S+)$")
DEFAULT_PAGE = 10


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def delta_token(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _untoken(value: str) -> dict[str, Any]:
    try:
        decoded: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        )
        return decoded
    except (ValueError, binascii.Error):
        raise GraphError(400, "BadRequest", "Invalid delta or skip token.") from None


def _extended(message: GraphMessage, wanted: list[str]) -> list[dict[str, str]]:
    values: dict[str, str | None] = {
        "String 0x1042": message.header("In-Reply-To"),
        "String 0x1039": message.header("References"),
        "String 0x001A": _message_class(message),
    }
    return [
        {"id": key, "value": str(values[key])}
        for key in wanted
        if key in values and values[key] is not None
    ]


def _message_class(message: GraphMessage) -> str:
    content_type = (message.header("Content-Type") or "").lower()
    if "multipart/report" in content_type and "delivery-status" in content_type:
        return "REPORT.IPM.Note.NDR"
    return "IPM.Note"


def _render(
    message: GraphMessage, select: list[str] | None, expand: list[str] | None
) -> dict[str, Any]:
    name, address = message.sender()
    full: dict[str, Any] = {
        "@odata.etag": f'W/"{message.change_key}"',
        "id": message.id,
        "createdDateTime": _iso(message.received),
        "lastModifiedDateTime": _iso(message.received),
        "changeKey": message.change_key,
        "receivedDateTime": _iso(message.received),
        "sentDateTime": _iso(message.received),
        "hasAttachments": False,
        "internetMessageId": message.internet_message_id,
        "subject": message.header("Subject") or "",
        "bodyPreview": message.raw.split(b"\n\n", 1)[-1][:255].decode("utf-8", "replace"),
        "importance": "normal",
        "parentFolderId": message.folder,
        "conversationId": message.conversation_id,
        "isDraft": message.folder == "drafts",
        "isRead": False,
        "from": {"emailAddress": {"name": name or address, "address": address}},
        "toRecipients": [{"emailAddress": {"address": a}} for a in message.recipients("To")],
    }
    if select is None:
        body = dict(full)
    else:
        body = {"@odata.etag": full["@odata.etag"], "id": message.id}
        for key in select:
            if key in full:
                body[key] = full[key]
    if expand is not None:
        body["singleValueExtendedProperties"] = _extended(message, expand)
    return body


def _parse_expand(value: str | None) -> list[str] | None:
    if not value:
        return None
    if not value.startswith("singleValueExtendedProperties"):
        raise GraphError(400, "BadRequest", f"Could not find a property named '{value}'.")
    return _PROPERTY.findall(value)


def _pick(full: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if select is None:
        return full
    return {"id": full["id"], **{k: full[k] for k in select if k in full}}


def _parse_select(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


class GraphApp:
    def __init__(
        self,
        store: GraphStore,
        base_url: Callable[[], str],
        notify: Callable[[str, dict[str, str], bytes], tuple[int, str]],
    ) -> None:
        self.store = store
        self.base_url = base_url
        self.notify = notify
        self.signing_key = secrets.token_bytes(32)
        self.rounds: dict[str, dict[str, Any]] = {}  # skip tokens: a round's remaining pages
        self.folders = FolderTree()
        # Delta rounds started (a deltaLink or a first round; not their nextLink pages)
        # per folder key: one Inbox round per sync, what the scale bench counts.
        self.delta_rounds: dict[str, int] = {}

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except GraphError as exc:
            response = _json(exc.status, exc.body(), exc.headers)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/v1.0/"):
            return self.graph(request, path[len("/v1.0/") :])
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            request.environ["fake.label"] = "oidc.discovery"
            return self.discovery(parts[0])
        if len(parts) == 4 and parts[1:3] == ["oauth2", "v2.0"] and parts[3] == "authorize":
            request.environ["fake.label"] = "oauth.authorize"
            return self.authorize(request, parts[0])
        if len(parts) == 4 and parts[1:3] == ["oauth2", "v2.0"] and parts[3] == "token":
            request.environ["fake.label"] = "oauth.token"
            return self.token(request, parts[0])
        raise GraphError(404, "UnknownError", f"No route for {path}")

    # -- identity ----------------------------------------------------------------------

    def issuer(self, tenant: str) -> str:
        return f"{self.base_url()}/{self.store.tenant_id}/v2.0"

    def discovery(self, tenant: str) -> Response:
        base = f"{self.base_url()}/{tenant}"
        return _json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": self.issuer(tenant),
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            },
        )

    def authorize(self, request: Request, tenant: str) -> Response:
        args = request.args
        redirect_uri = args.get("redirect_uri", "")
        client_id = args.get("client_id", "")
        if client_id not in self.store.clients or not redirect_uri:
            return Response("AADSTS700016: Application not found", status=400)
        query: dict[str, str] = {}
        consenting = self.store.consenting_user
        if consenting is None or consenting.lower() not in self.store.users:
            query["error"] = "access_denied"
            query["error_description"] = "AADSTS65004: User declined to consent."
        else:
            code = "0.AX" + secrets.token_urlsafe(40)
            self.store.codes[code] = _code(
                consenting, client_id, redirect_uri, args.get("scope", "").split(), args
            )
            query["code"] = code
            query["session_state"] = str(uuid.uuid4())
        if args.get("state"):
            query["state"] = args["state"]
        if args.get("response_mode") == "form_post":
            fields = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>'
                for k, v in query.items()
            )
            page = (
                '<html><head><title>Working...</title></head><body><form method="POST" '
                f'name="hiddenform" action="{html.escape(redirect_uri)}">{fields}'
                "<noscript><p>Script is disabled. Click Submit to continue.</p>"
                '<input type="submit" value="Submit"/></noscript></form>'
                "<script>window.setTimeout(function(){document.forms[0].submit()},0)</script>"
                "</body></html>"
            )
            return Response(page, status=200, content_type="text/html; charset=utf-8")
        sep = "&" if "?" in redirect_uri else "?"
        return Response(status=302, headers={"Location": redirect_uri + sep + urlencode(query)})

    def _oauth_error(self, status: int, error: str, description: str, code: int) -> Response:
        return _json(
            status,
            {
                "error": error,
                "error_description": f"{description}\r\nTrace ID: {uuid.uuid4()}",
                "error_codes": [code],
                "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
            },
        )

    def token(self, request: Request, tenant: str) -> Response:
        form = request.form
        client_id = form.get("client_id", "")
        if self.store.clients.get(client_id) != form.get("client_secret"):
            return self._oauth_error(
                401, "invalid_client", "AADSTS7000215: Invalid client secret provided.", 7000215
            )
        grant = form.get("grant_type")
        if grant == "authorization_code":
            code = self.store.codes.pop(form.get("code", ""), None)
            if (
                code is None
                or code.client_id != client_id
                or code.redirect_uri != form.get("redirect_uri")
                or not _pkce_ok(form.get("code_verifier"), code.challenge, code.method)
            ):
                return self._oauth_error(
                    400,
                    "invalid_grant",
                    "AADSTS70008: The provided authorization code is invalid.",
                    70008,
                )
            return self._tokens(tenant, code.email, client_id, code.scopes, code.nonce)
        if grant == "refresh_token":
            store = self.store
            with store.lock:
                refresh = store.refresh_tokens.get(form.get("refresh_token", ""))
                if refresh is None or refresh.revoked or refresh.client_id != client_id:
                    return self._oauth_error(
                        400,
                        "invalid_grant",
                        "AADSTS50173: The provided grant has expired due to it being revoked, a "
                        "fresh auth token is needed.",
                        50173,
                    )
                if refresh.used and store.strict_rotation:
                    return self._oauth_error(
                        400,
                        "invalid_grant",
                        "AADSTS700082: The refresh token has expired due to inactivity.",
                        700082,
                    )
                refresh.used = True
            scopes = form.get("scope", "").split() or refresh.scopes
            return self._tokens(tenant, refresh.email, client_id, scopes, None)
        return self._oauth_error(400, "unsupported_grant_type", "AADSTS70003", 70003)

    def _tokens(
        self, tenant: str, email: str, client_id: str, scopes: list[str], nonce: str | None
    ) -> Response:
        return _json(200, self.token_response(tenant, email, client_id, scopes, nonce))

    def token_response(
        self, tenant: str, email: str, client_id: str, scopes: list[str], nonce: str | None
    ) -> dict[str, Any]:
        """New tokens for `email`, as the token endpoint's JSON answer."""
        user = self.store.user(email)
        access, refresh = self.store.issue_tokens(email, client_id, scopes)
        now = int(time.time())
        claims = {
            "aud": client_id,
            "iss": self.issuer(tenant),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": email.split("@", maxsplit=1)[0].title(),
            "oid": user.oid,
            "preferred_username": email,
            "sub": hashlib.sha256(user.oid.encode()).hexdigest()[:43],
            "tid": self.store.tenant_id,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        id_token = jwt.encode(claims, self.signing_key, algorithm="HS256")
        granted = [s for s in scopes if s not in ("openid", "profile", "offline_access")]
        return {
            "token_type": "Bearer",
            "scope": " ".join(granted),
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": access,
            "refresh_token": refresh,
            "id_token": id_token,
            "client_info": client_info(user, self.store.tenant_id),
        }

    # -- graph -------------------------------------------------------------------------

    def graph(self, request: Request, rest: str) -> Response:
        if rest.startswith("subscriptions"):
            user = self.store.authenticate(request.headers.get("Authorization"))
            self._charge(user, request)
            return self.subscriptions(request, user, rest)
        if not (rest == "me" or rest.startswith("me/")):
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest}'.")
        user = self.store.authenticate(request.headers.get("Authorization"))
        self._charge(user, request)
        parts = rest.split("/")[1:]
        method = request.method
        if not parts:
            request.environ["fake.label"] = "me"
            return _json(
                200,
                {
                    "id": user.oid,
                    "displayName": user.email.split("@")[0].title(),
                    "mail": user.email,
                    "userPrincipalName": user.email,
                },
            )
        folder: str | None = None
        if parts == ["mailFolders"] and method == "GET":
            request.environ["fake.label"] = "mailFolders.list"
            return self.list_folders(request, user, None)
        if parts[0].lower().startswith("mailfolders"):
            folder_part = "/".join(parts[:2]) if parts[0].lower() == "mailfolders" else parts[0]
            match = _FOLDER_ARG.match(folder_part)
            if not match:
                raise GraphError(400, "BadRequest", "Invalid folder.")
            folder = self.folders.resolve(user, match.group(1) or match.group(2) or "")
            if folder is None:
                raise GraphError(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            parts = parts[2:] if parts[0].lower() == "mailfolders" else parts[1:]
            if not parts and method == "GET":
                request.environ["fake.label"] = "mailFolders.get"
                shown = self.folders.render(user, self.folders.folders(user)[folder])
                return _json(200, _pick(shown, _parse_select(request.args.get("$select"))))
            if parts == ["childFolders"] and method == "GET":
                request.environ["fake.label"] = "mailFolders.childFolders"
                return self.list_folders(request, user, folder)
        if parts == ["messages", "delta"] and method == "GET" and folder is not None:
            request.environ["fake.label"] = "messages.delta"
            return self.delta(request, user, folder)
        if parts == ["messages"] and method == "GET":
            request.environ["fake.label"] = "messages.list"
            return self.list_messages(request, user, folder)
        if parts == ["messages"] and method == "POST" and folder is None:
            request.environ["fake.label"] = "messages.create"
            return self.create_draft(request, user)
        if len(parts) == 3 and parts[0] == "messages" and parts[2] == "send" and method == "POST":
            request.environ["fake.label"] = "messages.send"
            self.store.send_draft(user.email, parts[1])
            return Response(b"", status=202)
        if len(parts) in (2, 3) and parts[0] == "messages" and method == "GET":
            message = user.messages.get(parts[1])
            if message is None:
                raise GraphError(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            if len(parts) == 3 and parts[2] == "$value":
                request.environ["fake.label"] = "messages.value"
                if message.id in self.store.corrupt_ids:
                    raise GraphError(
                        500,
                        "ErrorMimeContentConversionFailed",
                        "Microsoft.Exchange.Data.Storage.ConversionFailedException",
                    )
                return Response(message.raw, status=200, content_type="text/plain")
            request.environ["fake.label"] = "messages.get"
            return _json(
                200,
                _render(
                    message,
                    _parse_select(request.args.get("$select")),
                    _parse_expand(request.args.get("$expand")),
                ),
            )
        raise GraphError(400, "BadRequest", f"Unsupported request {method} {rest}")

    def _charge(self, user: GraphUser, request: Request) -> None:
        with self.store.lock:
            user.calls += 1
            if user.throttle_calls > 0:
                user.throttle_calls -= 1
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    {"Retry-After": str(user.retry_after)},
                )

    def create_draft(self, request: Request, user: GraphUser) -> Response:
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("text/plain"):
            raise GraphError(
                400, "RequestBodyRead", "Only MIME (text/plain, base64) drafts are modelled."
            )
        try:
            raw = base64.b64decode(request.get_data(), validate=True)
        except binascii.Error:
            raise GraphError(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            ) from None
        draft = self.store.add_message(user.email, raw, "drafts")
        return _json(201, _render(draft, None, None))

    def list_messages(self, request: Request, user: GraphUser, folder: str | None) -> Response:
        flt = request.args.get("$filter", "")
        match = _INTERNET_ID_FILTER.match(flt)
        if not match:
            raise GraphError(400, "BadRequest", "Only internetMessageId filters are modelled.")
        wanted = match.group(1).replace("''", "'")
        with self.store.lock:
            found = [
                m
                for m in user.messages.values()
                if m.internet_message_id == wanted and (folder is None or m.folder == folder)
            ]
        select = _parse_select(request.args.get("$select"))
        top = int(request.args.get("$top", "10"))
        return _json(200, {"value": [_render(m, select, None) for m in found[:top]]})

    def list_folders(self, request: Request, user: GraphUser, parent: str | None) -> Response:
        """One page of a folder's children (msgfolderroot's when `parent` is None)."""
        args = request.args
        top = int(args.get("$top", str(DEFAULT_PAGE)))
        skip = int(args.get("$skip", "0"))
        select = _parse_select(args.get("$select"))
        children = self.folders.children(user, parent)
        page = children[skip : skip + top]
        body: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('"
            f"{user.oid}')/mailFolders",
            "value": [_pick(self.folders.render(user, f), select) for f in page],
        }
        if skip + top < len(children):
            query = {k: v for k, v in args.items() if k != "$skip"}
            query["$skip"] = str(skip + top)
            body["@odata.nextLink"] = f"{self.base_url()}{request.path}?{urlencode(query)}"
        return _json(200, body)

    # -- delta -------------------------------------------------------------------------

    def delta(self, request: Request, user: GraphUser, folder: str) -> Response:
        args = request.args
        base = f"{self.base_url()}/v1.0/me/mailFolders/{folder}/messages/delta"
        prefer = request.headers.get("Prefer", "")
        size_match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        if "$skiptoken" not in args:
            with self.store.lock:
                self.delta_rounds[folder] = self.delta_rounds.get(folder, 0) + 1
        if "$deltatoken" in args:
            state = _untoken(args["$deltatoken"])
            if state.get("f") != folder or state.get("u") != user.oid:
                raise GraphError(
                    400, "BadRequest", "The delta token does not belong to this folder."
                )
            if int(state["s"]) < user.oldest_seq:
                raise GraphError(
                    410, "SyncStateNotFound", "The sync state generation is not found."
                )
            with self.store.lock:
                changed = [
                    c for c in user.changes if c.seq > int(state["s"]) and c.folder == folder
                ]
                seq = user.seq
            rows = self._rows(user, changed)
            state = {**state, "mode": "changes", "rows": rows, "s_end": seq, "o": 0}
        elif "$skiptoken" in args:
            saved = self.rounds.get(args["$skiptoken"])
            if saved is None:
                raise GraphError(
                    410, "SyncStateNotFound", "The sync state generation is not found."
                )
            state = saved
            rows = state["rows"]
        else:
            received_after: datetime | None = None
            flt = args.get("$filter")
            if flt:
                match = _RECEIVED_FILTER.match(flt)
                if not match:
                    raise GraphError(
                        400,
                        "BadRequest",
                        "Only receivedDateTime ge/gt filters are supported on delta.",
                    )
                received_after = datetime.fromisoformat(match.group(2).replace("Z", "+00:00"))
            with self.store.lock:
                current = [
                    m
                    for m in user.messages.values()
                    if m.folder == folder
                    and (received_after is None or m.received >= received_after)
                ]
                seq = user.seq
            rows = [{"id": m.id} for m in sorted(current, key=lambda m: m.received)]
            state = {
                "u": user.oid,
                "f": folder,
                "sel": args.get("$select"),
                "exp": args.get("$expand"),
                "rows": rows,
                "s_end": seq,
                "o": 0,
            }
        page_size = int(size_match.group(1)) if size_match else DEFAULT_PAGE
        offset = int(state.get("o", 0))
        page = rows[offset : offset + page_size]
        select = _parse_select(state.get("sel"))
        expand = _parse_expand(state.get("exp"))
        value: list[dict[str, Any]] = []
        for row in page:
            if row.get("removed"):
                value.append(
                    {
                        "@odata.type": "#microsoft.graph.message",
                        "id": row["id"],
                        "@removed": {"reason": "deleted"},
                    }
                )
                continue
            message = user.messages.get(row["id"])
            if message is not None and message.folder == folder:
                value.append(_render(message, select, expand))
        body: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
            "value": value,
        }
        if offset + page_size < len(rows):
            skip = secrets.token_urlsafe(24)
            self.rounds[skip] = {**state, "o": offset + page_size}
            body["@odata.nextLink"] = f"{base}?$skiptoken={skip}"
        else:
            final = {
                "u": user.oid,
                "f": folder,
                "sel": state.get("sel"),
                "exp": state.get("exp"),
                "s": state["s_end"],
            }
            body["@odata.deltaLink"] = f"{base}?$deltatoken={delta_token(final)}"
        return _json(
            200,
            body,
            {"Preference-Applied": f"odata.maxpagesize={page_size}"} if size_match else None,
        )

    def _rows(self, user: GraphUser, changes: list[Any]) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for change in changes:
            latest[change.message_id] = {"id": change.message_id, "removed": change.removed}
        return list(latest.values())

    # -- subscriptions -----------------------------------------------------------------

    def subscriptions(self, request: Request, user: GraphUser, rest: str) -> Response:
        parts = rest.split("/")
        store = self.store
        if len(parts) == 1 and request.method == "POST":
            request.environ["fake.label"] = "subscriptions.create"
            body = request.get_json(silent=True) or {}
            expiration = self._expiration(body.get("expirationDateTime"))
            url = str(body.get("notificationUrl", ""))
            if not url.startswith("https://") and not url.startswith("http://"):
                raise GraphError(
                    400, "ValidationError", "The notification URL must be an https URL."
                )
            token = secrets.token_urlsafe(24)
            status, text = self.notify(
                f"{url}{'&' if '?' in url else '?'}{urlencode({'validationToken': token})}",
                {"Content-Type": "text/plain; charset=utf-8"},
                b"",
            )
            if status != 200 or text != token:
                raise GraphError(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond "
                    "with 200 OK to validation request.",
                )
            subscription = Subscription(
                id=str(uuid.uuid4()),
                email=user.email,
                resource=str(body.get("resource", "")),
                change_type=str(body.get("changeType", "")),
                notification_url=url,
                client_state=body.get("clientState"),
                expiration=expiration,
                lifecycle_url=body.get("lifecycleNotificationUrl"),
            )
            with store.lock:
                store.subscriptions[subscription.id] = subscription
            return _json(201, self._subscription_body(subscription))
        if len(parts) == 2:
            with store.lock:
                found = store.subscriptions.get(parts[1])
            if found is None or found.email != user.email:
                raise GraphError(404, "ResourceNotFound", "The object was not found.")
            subscription = found
            if request.method == "PATCH":
                request.environ["fake.label"] = "subscriptions.renew"
                body = request.get_json(silent=True) or {}
                subscription.expiration = self._expiration(body.get("expirationDateTime"))
                return _json(200, self._subscription_body(subscription))
            if request.method == "DELETE":
                request.environ["fake.label"] = "subscriptions.delete"
                with store.lock:
                    store.subscriptions.pop(subscription.id, None)
                return Response(b"", status=204)
        raise GraphError(400, "BadRequest", "Unsupported subscription request.")

    def _expiration(self, value: Any) -> datetime:
        try:
            expiration = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise GraphError(400, "BadRequest", "expirationDateTime is invalid.") from None
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        if expiration > now + timedelta(minutes=MAX_SUBSCRIPTION_MINUTES):
            raise GraphError(
                400,
                "ExtensionError",
                f"Subscription expiration can only be {MAX_SUBSCRIPTION_MINUTES} minutes in the "
                "future.",
            )
        if expiration <= now:
            raise GraphError(
                400, "ExtensionError", "Subscription expiration must be in the future."
            )
        return expiration

    def _subscription_body(self, subscription: Subscription) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": subscription.id,
            "resource": subscription.resource,
            "applicationId": next(iter(self.store.clients), ""),
            "changeType": subscription.change_type,
            "clientState": subscription.client_state,
            "notificationUrl": subscription.notification_url,
            "expirationDateTime": subscription.expiration.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "creatorId": self.store.user(subscription.email).oid,
            "latestSupportedTlsVersion": "v1_2",
        }


def _code(email: str, client_id: str, redirect_uri: str, scopes: list[str], args: Any) -> Any:
    from .store import AuthCode

    return AuthCode(
        email=email.lower(),
        client_id=client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        challenge=args.get("code_challenge"),
        method=args.get("code_challenge_method"),
        nonce=args.get("nonce"),
    )


def _pkce_ok(verifier: str | None, challenge: str | None, method: str | None) -> bool:
    if challenge is None:
        return True
    if verifier is None:
        return False
    if (method or "plain") == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
    return verifier == challenge
