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
services) and a `CallLog` that counts every answer's bytes: the benchmarks'
"bytes fetched per message" are read from it.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_LOCK = threading.Lock()


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


class _Handler(WSGIRequestHandler):
    """Keep-alive, no Nagle delay, no stderr line per request."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        pass


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
    """A WSGI app on https://127.0.0.1:<port>, served by threads."""

    def __init__(self, app: WSGIApp, *, name: str, port: int = 0, tls: bool = True) -> None:
        self.calls = CallLog()
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            provider_ca().issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1",
            port,
            _Metered(app, self.calls),
            threaded=True,
            ssl_context=context,
            request_handler=_Handler,
        )
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self.port = self._server.server_port
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
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
