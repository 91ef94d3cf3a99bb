"""What the provider fakes (Gmail, Microsoft Graph, EWS) share: TLS, a threaded server, a call log.

The real client libraries insist on TLS in places (MSAL only accepts an https
authority, oauthlib refuses an http token endpoint), so every provider fake
speaks TLS with a certificate from one throwaway CA per test process
(`provider_ca()`). `trust_provider_ca()` writes that CA plus the bundle the
environment already trusted into one file and points `REQUESTS_CA_BUNDLE`
(requests: MSAL, exchangelib, google-auth) and `HTTPLIB2_CA_CERTS`
(google-api-python-client) at it, so subprocesses trust the fakes too.

`FakeHttpServer` serves a WSGI app on 127.0.0.1 in a background thread, with
HTTP/1.1 keep-alive (the clients reuse connections, as they do with the real
services, and NTLM authenticates a connection: werkzeug's development server
closes every connection, so a small threaded server runs the apps) and a
`CallLog` that counts every answer's bytes: the benchmarks' "bytes fetched per
message" are read from it.
"""

from __future__ import annotations

import http.client
import io
import itertools
import os
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import trustme

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_LOCK = threading.Lock()
_CONNECTIONS = itertools.count(1)


@dataclass
class _Authority:
    ca: trustme.CA
    folder: Path


_AUTHORITY: list[_Authority] = []


def _authority() -> _Authority:
    with _LOCK:
        if not _AUTHORITY:
            folder = Path(tempfile.mkdtemp(prefix="fake-providers-ca-"))
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(folder / "ca.pem"))
            _AUTHORITY.append(_Authority(ca, folder))
        return _AUTHORITY[0]


def provider_ca() -> trustme.CA:
    """The process's throwaway CA for provider fakes (made once)."""
    return _authority().ca


def provider_ca_path() -> str:
    return str(_authority().folder / "ca.pem")


def _default_bundle() -> str:
    configured = os.environ.get("REQUESTS_CA_BUNDLE")
    if configured and Path(configured).is_file():
        return configured
    import certifi

    return str(certifi.where())


def trust_provider_ca() -> str:
    """Make this process (and its children) trust the provider fakes. Returns the bundle path."""
    combined = _authority().folder / "trusted.pem"
    if not combined.exists():
        base = Path(_default_bundle()).read_text()
        combined.write_text(base + "\n" + Path(provider_ca_path()).read_text())
    os.environ["REQUESTS_CA_BUNDLE"] = str(combined)
    os.environ["HTTPLIB2_CA_CERTS"] = str(combined)
    return str(combined)


@dataclass
class Call:
    method: str
    path: str
    query: str
    status: int
    bytes_out: int  # status line, headers and body as sent
    label: str = ""  # what the app says this call was (e.g. "messages.get")


class CallLog:
    def __init__(self) -> None:
        self._calls: list[Call] = []
        self._lock = threading.Lock()

    def add(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def all(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def bytes_out(self, match: Callable[[Call], bool] | None = None) -> int:
        return sum(c.bytes_out for c in self.all() if match is None or match(c))

    def count(self, match: Callable[[Call], bool] | None = None) -> int:
        return sum(1 for c in self.all() if match is None or match(c))


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive in front of a WSGI app.

    A response without Content-Length is sent chunked, one chunk per item the
    app yields, so a streaming answer (EWS GetStreamingEvents) streams.
    """

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.serial = next(_CONNECTIONS)  # unique per connection, unlike id() of the socket

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._run()

    def do_POST(self) -> None:
        self._run()

    def do_PUT(self) -> None:
        self._run()

    def do_PATCH(self) -> None:
        self._run()

    def do_DELETE(self) -> None:
        self._run()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.server.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "fake.connection": self.serial,
        }
        for key, value in self.headers.items():
            name = key.upper().replace("-", "_")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif name != "CONTENT_LENGTH":
                existing = environ.get(f"HTTP_{name}")
                environ[f"HTTP_{name}"] = f"{existing}, {value}" if existing else value
        return environ

    def _run(self) -> None:
        environ = self._environ(self._body())
        started: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started["status"], started["headers"] = status, headers
            return lambda data: None

        result = self.server.app(environ, start_response)
        try:
            chunked: bool | None = None
            for chunk in result:
                if chunked is None:
                    chunked = self._head(started)
                if chunk:
                    self._write(chunk, chunked)
            if chunked is None:
                chunked = self._head(started)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _head(self, started: dict[str, Any]) -> bool:
        code, _, reason = str(started["status"]).partition(" ")
        self.send_response(int(code), reason)
        names = {k.lower() for k, _ in started["headers"]}
        chunked = "content-length" not in names and int(code) not in (204, 304)
        for key, value in started["headers"]:
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        return chunked

    def _write(self, data: bytes, chunked: bool) -> None:
        if chunked:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        else:
            self.wfile.write(data)


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The scale bench opens 10,000 streams at once (the kernel caps it at somaxconn).
    request_queue_size = 4096

    def __init__(self, port: int, app: WSGIApp, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.app = app
        self.context = context
        self.scheme = "https" if context is not None else "http"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (a stream closed on purpose) is not an error here.
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError | TimeoutError):
            super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is not None:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


class _Metered:
    """WSGI middleware: record each answer's size in the call log."""

    def __init__(self, app: WSGIApp, log: CallLog) -> None:
        self.app = app
        self.log = log

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        captured: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = status
            captured["headers"] = headers
            return start_response(status, headers, exc_info)

        body = 0
        result = self.app(environ, start)
        try:
            for chunk in result:
                body += len(chunk)
                yield chunk
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            status = captured.get("status", "500 ?")
            head = len(f"HTTP/1.1 {status}\r\n") + sum(
                len(k) + len(v) + 4 for k, v in captured.get("headers", [])
            )
            self.log.add(
                Call(
                    method=environ.get("REQUEST_METHOD", ""),
                    path=environ.get("PATH_INFO", ""),
                    query=environ.get("QUERY_STRING", ""),
                    status=int(status.split(" ", 1)[0]),
                    bytes_out=head + 2 + body,
                    label=str(environ.get("fake.label", "")),
                )
            )


class FakeHttpServer:
    """A WSGI app on https://127.0.0.1:<port>, served by threads, connections kept alive."""

    def __init__(self, app: WSGIApp, *, name: str, port: int = 0, tls: bool = True) -> None:
        self.calls = CallLog()
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            provider_ca().issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server = _Server(port, _Metered(app, self.calls), context)
        self.port = int(self._server.server_address[1])
        self.url = f"{self._server.scheme}://127.0.0.1:{self.port}"
        self.name = name
        self._thread: threading.Thread | None = None

    def start(self) -> FakeHttpServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"{self.name}:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


_KEPT_ALIVE = threading.local()


def post_kept_alive(
    url: str, headers: dict[str, str], body: bytes, *, timeout: float
) -> tuple[int, bytes]:
    """POST on this thread's kept-alive connection to `url`'s host: (status, body).

    How the fakes' pushers (Pub/Sub, Graph's notifications) reach `web`, as the
    real services hold their connections. Plain http.client: the scale bench
    pushes 167 a second from the process on the machine it measures, and
    `requests` spent twice the CPU (most of it reading proxy settings from the
    environment on every call). A connection the server closed is retried once,
    fresh (the real pushers redeliver too).
    """
    parts = urlsplit(url)
    key = (parts.scheme, parts.netloc)
    connections: dict[tuple[str, str], http.client.HTTPConnection] = (
        _KEPT_ALIVE.__dict__.setdefault("connections", {})
    )
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    for attempt in (1, 2):
        connection = connections.get(key)
        if connection is None:
            secure = parts.scheme == "https"
            kind = http.client.HTTPSConnection if secure else http.client.HTTPConnection
            connection = connections[key] = kind(parts.netloc, timeout=timeout)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            return int(response.status), response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            del connections[key]
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
