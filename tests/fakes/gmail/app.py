"""The fake Gmail's WSGI app: the Gmail REST API, batch, Google OAuth, and certs.

Paths follow the discovery document shipped inside google-api-python-client
(`googleapiclient/discovery_cache/documents/gmail.v1.json`): `servicePath` is
empty and every method path starts `gmail/v1/users/{userId}/`; `batchPath` is
`batch` (Google also serves `batch/gmail/v1`). Answers are the documented
resources (Message, History, Profile, WatchResponse, ListMessagesResponse,
ListHistoryResponse), errors Google's JSON error body, `fields` honoured.

    GET  gmail/v1/users/{u}/profile                     getProfile (1 unit)
    POST gmail/v1/users/{u}/watch | stop                watch (100) / stop (50)
    GET  gmail/v1/users/{u}/history                     history.list (2)
    GET  gmail/v1/users/{u}/messages                    messages.list (5), q: rfc822msgid:
                                                        in: -in: label: after: before: newer_than:
    GET  gmail/v1/users/{u}/messages/{id}               messages.get (5): minimal|metadata|raw|full
    POST gmail/v1/users/{u}/messages/send               messages.send (100): {"raw", "threadId"}
    POST upload/gmail/v1/users/{u}/messages/send        the same as a media upload (message/rfc822)
    POST batch, batch/gmail/v1                          multipart/mixed, ≤ 100 calls, each charged
    GET  o/oauth2/auth, o/oauth2/v2/auth                consent: 302 to redirect_uri with code
    POST token                                          authorization_code (PKCE) | refresh_token
    POST revoke                                         revoke a grant
    GET  oauth2/v1/certs                                push-token certificates {kid: PEM}

A token granted only Gmail add-on scopes (`gmail.addons.*`) reads one message: the
one its `X-Goog-Gmail-Access-Token` header (an add-on event's message token) names.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from email.parser import Parser
from typing import Any
from urllib.parse import urlencode, urlsplit

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from .fields import FieldsError, parse_fields, select
from .pubsub import PubSub
from .store import (
    GmailApiError,
    GmailStore,
    GmailUser,
    StoredMessage,
    Token,
    bad_request,
    not_found,
    pkce_ok,
)

_USER_PATH = re.compile(r"^/(?:upload/)?gmail/v1/users/(?P<user>[^/]+)/(?P<rest>.*)$")
MAX_BATCH = 100
# Tokens granted only these scopes are a Gmail add-on's (gmail.addons.current.message.*).
ADDON_SCOPE_PREFIX = "https://www.googleapis.com/auth/gmail.addons."


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json; charset=UTF-8",
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _error(exc: GmailApiError) -> Response:
    return _json(exc.code, exc.body(), exc.headers)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _message_resource(message: StoredMessage, fmt: str, wanted: list[str]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.labels),
    }
    if fmt == "minimal":
        resource.update(
            sizeEstimate=len(message.raw),
            historyId=str(message.history_id),
            internalDate=str(message.internal_date_ms),
        )
        return resource
    resource["snippet"] = message.snippet()
    if fmt == "raw":
        resource["raw"] = _b64url(message.raw)
    else:
        headers = message.headers()
        if fmt == "metadata" and wanted:
            names = {w.lower() for w in wanted}
            headers = [(k, v) for k, v in headers if k.lower() in names]
        content_type = (message.header("Content-Type") or "text/plain").split(";")[0].strip()
        payload: dict[str, Any] = {
            "partId": "",
            "mimeType": content_type,
            "filename": "",
            "headers": [{"name": k, "value": v} for k, v in headers],
        }
        if fmt == "metadata":
            payload["body"] = {"size": 0}
        else:  # full: Gmail's part tree, the headers as sent
            payload = {
                **_part_resource(message_from_bytes(message.raw), ""),
                "headers": payload["headers"],
            }
        resource["payload"] = payload
    resource.update(
        sizeEstimate=len(message.raw),
        historyId=str(message.history_id),
        internalDate=str(message.internal_date_ms),
    )
    return resource


def _part_resource(part: Message, part_id: str) -> dict[str, Any]:
    """One MessagePart as Gmail's format=full gives it: leaves carry their content
    transfer-decoded in body.data, attachments only an attachmentId."""
    entry: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": part.get_filename() or "",
        "headers": [{"name": k, "value": str(v)} for k, v in part.items()],
    }
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        entry["body"] = {"size": 0}
        entry["parts"] = [
            _part_resource(child, f"{part_id}.{i}" if part_id else str(i))
            for i, child in enumerate(children)
        ]
        return entry
    data = part.get_payload(decode=True)
    data = data if isinstance(data, bytes) else b""
    if entry["filename"]:
        entry["body"] = {"size": len(data), "attachmentId": f"att-{part_id or '0'}"}
    else:
        entry["body"] = {"size": len(data), "data": _b64url(data)}
    return entry


def _parse_when(value: str) -> float | None:
    if value.isdigit():
        return float(value)
    for pattern in ("%Y/%m/%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, pattern).timestamp()
        except ValueError:
            continue
    return None


def _query_matches(message: StoredMessage, query: str, now: float) -> bool:
    for word in query.split():
        negate = word.startswith("-")
        token = word.lstrip("-")
        key, _, value = token.partition(":")
        key = key.lower()
        if key == "rfc822msgid":
            wanted = value.strip("<>").lower()
            own = (message.header("Message-ID") or "").strip().strip("<>").lower()
            result = own == wanted
        elif key in ("in", "label"):
            label = {"drafts": "DRAFT", "draft": "DRAFT", "chats": "CHAT"}.get(
                value.lower(), value.upper()
            )
            result = label in message.labels
        elif key in ("after", "before"):
            when = _parse_when(value)
            if when is None:
                raise bad_request(f"Invalid query: {token}")
            seconds = message.internal_date_ms / 1000
            result = seconds > when if key == "after" else seconds < when
        elif key == "newer_than":
            match = re.fullmatch(r"(\d+)([dmy])", value)
            if not match:
                raise bad_request(f"Invalid query: {token}")
            days = int(match.group(1)) * {"d": 1, "m": 30, "y": 365}[match.group(2)]
            result = message.internal_date_ms / 1000 > now - days * 86400
        else:
            result = token.lower().encode() in message.raw.lower()
        if result == negate:
            return False
    return True


class GmailApp:
    """Routes requests to the store. `pubsub` publishes watched changes."""

    def __init__(self, store: GmailStore, pubsub: PubSub, certs: dict[str, str]) -> None:
        self.store = store
        self.pubsub = pubsub
        self.certs = certs

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    # -- routing -----------------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        path = request.path
        try:
            if path in ("/batch", "/batch/gmail/v1") and request.method == "POST":
                request.environ["fake.label"] = "batch"
                return self.batch(request)
            if path in ("/o/oauth2/auth", "/o/oauth2/v2/auth"):
                request.environ["fake.label"] = "oauth.authorize"
                return self.authorize(request)
            if path == "/token" and request.method == "POST":
                request.environ["fake.label"] = "oauth.token"
                return self.token(request)
            if path == "/revoke" and request.method == "POST":
                request.environ["fake.label"] = "oauth.revoke"
                return self.revoke(request)
            if path == "/oauth2/v1/certs":
                request.environ["fake.label"] = "certs"
                return _json(200, self.certs, {"Cache-Control": "public, max-age=19800"})
            match = _USER_PATH.match(path)
            if match is None:
                return _error(not_found())
            return self.api(request, match.group("user"), match.group("rest"))
        except GmailApiError as exc:
            return _error(exc)

    def _authorized_user(self, request: Request, user_id: str) -> tuple[GmailUser, Token]:
        token = self.store.authenticate(request.headers.get("Authorization"))
        if user_id not in ("me", token.email):
            raise GmailApiError(
                403, "Delegation denied for " + token.email, "forbidden", "PERMISSION_DENIED"
            )
        return self.store.user(token.email), token

    def api(self, request: Request, user_id: str, rest: str) -> Response:
        user, token = self._authorized_user(request, user_id)
        if token.scopes and all(s.startswith(ADDON_SCOPE_PREFIX) for s in token.scopes):
            self._addon_message_only(request, user, rest)
        method = request.method
        route: tuple[str, Callable[[Request, GmailUser], Any]] | None = None
        message_match = re.fullmatch(r"messages/([0-9a-f]+)", rest)
        if rest == "profile" and method == "GET":
            route = ("users.getProfile", self.profile)
        elif rest == "watch" and method == "POST":
            route = ("users.watch", self.watch)
        elif rest == "stop" and method == "POST":
            route = ("users.stop", self.stop)
        elif rest == "history" and method == "GET":
            route = ("users.history.list", self.history)
        elif rest == "messages" and method == "GET":
            route = ("users.messages.list", self.list_messages)
        elif rest == "messages/send" and method == "POST":
            route = ("users.messages.send", self.send)
        elif message_match and method == "GET":
            route = (
                "users.messages.get",
                lambda r, u: self.get_message(r, u, message_match.group(1)),
            )
        if route is None:
            raise not_found()
        label, handler = route
        request.environ["fake.label"] = label
        self.store.charge(user, label)
        body = handler(request, user)
        if body is None:
            return Response(b"", status=204)
        fields = request.args.get("fields")
        if fields:
            try:
                body = select(body, parse_fields(fields))
            except FieldsError as exc:
                raise bad_request(str(exc)) from None
        return _json(200, body)

    def _addon_message_only(self, request: Request, user: GmailUser, rest: str) -> None:
        """A Gmail add-on's token reads only the message its event's message token names."""
        message_token = request.headers.get("X-Goog-Gmail-Access-Token", "")
        allowed = self.store.message_tokens.get(message_token)
        if request.method != "GET" or allowed is None or allowed != (user.email, rest[9:]):
            raise GmailApiError(
                403,
                "Request had insufficient authentication scopes.",
                "forbidden",
                "PERMISSION_DENIED",
            )

    # -- methods -----------------------------------------------------------------------

    def profile(self, request: Request, user: GmailUser) -> dict[str, Any]:
        return {
            "emailAddress": user.email,
            "messagesTotal": len(user.messages),
            "threadsTotal": len({m.thread_id for m in user.messages.values()}),
            "historyId": str(user.history_id),
        }

    def watch(self, request: Request, user: GmailUser) -> dict[str, Any]:
        body = request.get_json(silent=True) or {}
        topic = body.get("topicName")
        if not topic or not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
            raise bad_request("Invalid topicName does not match projects/*/topics/*")
        if topic not in self.store.topics:
            raise GmailApiError(
                403,
                f"Error sending test message to Cloud PubSub {topic} : User not authorized to "
                "perform this action.",
                "forbidden",
                "PERMISSION_DENIED",
            )
        from .store import WATCH_SECONDS, Watch

        expiration = int((self.store.clock() + WATCH_SECONDS) * 1000)
        user.watch = Watch(
            topic=topic,
            label_ids=list(body.get("labelIds") or []),
            behavior=str(
                body.get("labelFilterBehavior") or body.get("labelFilterAction") or "include"
            ),
            expiration_ms=expiration,
        )
        return {"historyId": str(user.history_id), "expiration": str(expiration)}

    def stop(self, request: Request, user: GmailUser) -> None:
        user.watch = None

    def history(self, request: Request, user: GmailUser) -> dict[str, Any]:
        start_text = request.args.get("startHistoryId")
        if not start_text or not start_text.isdigit():
            raise bad_request("Invalid startHistoryId", "invalidArgument")
        start = int(start_text)
        if start < user.oldest_history_id:
            raise not_found()
        types = request.args.getlist("historyTypes")
        label = request.args.get("labelId")
        limit = min(int(request.args.get("maxResults", "100")), 500)
        offset = int(request.args.get("pageToken") or 0)
        with self.store.lock:
            records = [r for r in user.history if r.id > start]
            current = user.history_id
        items: list[dict[str, Any]] = []
        for record in records:
            added = [
                m
                for m in record.added
                if label is None or label in record.labels_at_add.get(m.id, [])
            ]
            if types and "messageAdded" not in types:
                added = []
            if not added and (types or label):
                continue
            refs = [{"id": m.id, "threadId": m.thread_id} for m in record.added]
            item: dict[str, Any] = {"id": str(record.id), "messages": refs}
            if added:
                item["messagesAdded"] = [
                    {
                        "message": {
                            "id": m.id,
                            "threadId": m.thread_id,
                            "labelIds": record.labels_at_add.get(m.id, []),
                        }
                    }
                    for m in added
                ]
            items.append(item)
        page = items[offset : offset + limit]
        body: dict[str, Any] = {"historyId": str(current)}
        if page:
            body["history"] = page
        if offset + limit < len(items):
            body["nextPageToken"] = str(offset + limit)
        return body

    def list_messages(self, request: Request, user: GmailUser) -> dict[str, Any]:
        query = request.args.get("q", "")
        labels = request.args.getlist("labelIds")
        include_spam = request.args.get("includeSpamTrash", "false") == "true"
        limit = min(int(request.args.get("maxResults", "100")), 500)
        offset = int(request.args.get("pageToken") or 0)
        now = self.store.clock()
        with self.store.lock:
            candidates = sorted(
                user.messages.values(), key=lambda m: m.internal_date_ms, reverse=True
            )
        found = [
            m
            for m in candidates
            if (include_spam or not {"SPAM", "TRASH"} & set(m.labels))
            and all(label in m.labels for label in labels)
            and _query_matches(m, query, now)
        ]
        page = found[offset : offset + limit]
        body: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if page:
            body["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if offset + limit < len(found):
            body["nextPageToken"] = str(offset + limit)
        return body

    def get_message(self, request: Request, user: GmailUser, message_id: str) -> dict[str, Any]:
        message = user.messages.get(message_id)
        if message is None:
            raise not_found()
        if message_id in self.store.faults.fail_message_ids:
            raise GmailApiError(500, "Internal error encountered.", "backendError", "INTERNAL")
        fmt = request.args.get("format", "full")
        if fmt not in ("minimal", "metadata", "raw", "full"):
            raise bad_request(f"Invalid value at 'format' ({fmt})")
        if fmt in ("raw", "full") and message_id in self.store.faults.corrupt_message_ids:
            raise GmailApiError(
                400, "Precondition check failed.", "failedPrecondition", "FAILED_PRECONDITION"
            )
        return _message_resource(message, fmt, request.args.getlist("metadataHeaders"))

    def send(self, request: Request, user: GmailUser) -> dict[str, Any]:
        if request.path.startswith("/upload/"):
            raw = request.get_data()
            thread_id = None
        else:
            body = request.get_json(silent=True) or {}
            encoded = body.get("raw")
            if not encoded:
                raise bad_request(
                    "'raw' RFC822 payload message string or uploading message via "
                    "/upload/* URL required",
                    "invalidArgument",
                )
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError:
                raise bad_request("Invalid value for ByteString") from None
            thread_id = body.get("threadId")
        if b"\n" not in raw:
            raise bad_request("Invalid To header", "invalidArgument")
        stored = self.store.send(user.email, raw, thread_id)
        return {"id": stored.id, "threadId": stored.thread_id, "labelIds": list(stored.labels)}

    # -- batch -------------------------------------------------------------------------

    def batch(self, request: Request) -> Response:
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/mixed"):
            raise bad_request("Invalid batch request: expected multipart/mixed")
        envelope = message_from_bytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + request.get_data()
        )
        parts = envelope.get_payload()
        if not isinstance(parts, list) or not parts:
            raise bad_request("Invalid batch request: no parts")
        if len(parts) > MAX_BATCH:
            raise bad_request(f"Too many requests in batch (limit is {MAX_BATCH}).")
        boundary = "batch_" + secrets.token_hex(12)
        out: list[bytes] = []
        for part in parts:
            if not isinstance(part, Message):
                raise bad_request("Invalid batch request: a part is not a message")
            content_id = str(part.get("Content-ID", "")).strip()
            inner = self._inner_response(str(part.get_payload(decode=False)))
            inner_id = content_id[1:-1] if content_id.startswith("<") else content_id
            head = (
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-{inner_id}>\r\n\r\n"
            )
            out.append(head.encode() + inner + b"\r\n")
        out.append(f"--{boundary}--\r\n".encode())
        return Response(
            b"".join(out), status=200, content_type=f"multipart/mixed; boundary={boundary}"
        )

    def _inner_response(self, payload: str) -> bytes:
        request_line, _, rest = payload.partition("\n")
        method, target, _ = [*request_line.strip().split(" "), "", ""][:3]
        parsed = Parser().parsestr(rest)
        body = parsed.get_payload()
        split = urlsplit(target)
        headers = {k: v for k, v in parsed.items() if k.lower() not in ("content-length", "host")}
        builder = EnvironBuilder(
            path=split.path,
            method=method,
            query_string=split.query,
            headers=list(headers.items()),
            data=body.encode() if isinstance(body, str) and body else None,
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        inner_request = Request(environ)
        if _USER_PATH.match(split.path) is None:
            response = _error(not_found())
        else:
            response = self.dispatch(inner_request)
        status_text = response.status
        head = [f"HTTP/1.1 {status_text}", f"Content-Type: {response.content_type}"]
        data = response.get_data()
        head.append(f"Content-Length: {len(data)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + data

    # -- OAuth -------------------------------------------------------------------------

    def authorize(self, request: Request) -> Response:
        args = request.args
        redirect_uri = args.get("redirect_uri", "")
        client_id = args.get("client_id", "")
        if client_id not in self.store.clients or not redirect_uri:
            return Response("Error 401: invalid_client", status=401, content_type="text/plain")
        query: dict[str, str] = {}
        if args.get("state"):
            query["state"] = args["state"]
        consenting = self.store.consenting_user
        if consenting is None or consenting.lower() not in self.store.users:
            query["error"] = "access_denied"
        else:
            scopes = args.get("scope", "").split()
            query["code"] = self.store.issue_code(
                consenting,
                client_id,
                redirect_uri,
                scopes,
                args.get("code_challenge"),
                args.get("code_challenge_method"),
            )
            query["scope"] = " ".join(scopes)
        separator = "&" if "?" in redirect_uri else "?"
        return Response(
            status=302, headers={"Location": redirect_uri + separator + urlencode(query)}
        )

    def _client(self, request: Request) -> str | None:
        form = request.form
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        if request.authorization and request.authorization.type == "basic":
            client_id = request.authorization.username
            secret = request.authorization.password
        if client_id is None or self.store.clients.get(client_id) != secret:
            return None
        return client_id

    def token(self, request: Request) -> Response:
        client_id = self._client(request)
        if client_id is None:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        grant = request.form.get("grant_type")
        store = self.store
        if grant == "authorization_code":
            code = store.codes.pop(request.form.get("code", ""), None)
            if (
                code is None
                or code.client_id != client_id
                or code.redirect_uri != request.form.get("redirect_uri")
                or not pkce_ok(
                    request.form.get("code_verifier"),
                    code.code_challenge,
                    code.code_challenge_method,
                )
            ):
                return _oauth_error(400, "invalid_grant", "Bad Request")
            access = store.issue_access_token(code.email, client_id, code.scopes)
            refresh = store.issue_refresh_token(code.email, client_id, code.scopes)
            return _json(
                200,
                {
                    "access_token": access,
                    "expires_in": 3599,
                    "refresh_token": refresh,
                    "scope": " ".join(code.scopes),
                    "token_type": "Bearer",
                },
            )
        if grant == "refresh_token":
            token = store.refresh_tokens.get(request.form.get("refresh_token", ""))
            if token is None or token.revoked or token.client_id != client_id:
                return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            access = store.issue_access_token(token.email, client_id, token.scopes)
            return _json(
                200,
                {
                    "access_token": access,
                    "expires_in": 3599,
                    "scope": " ".join(token.scopes),
                    "token_type": "Bearer",
                },
            )
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")

    def revoke(self, request: Request) -> Response:
        value = request.form.get("token") or request.args.get("token") or ""
        if not self.store.revoke_token(value):
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        return _json(200, {})
