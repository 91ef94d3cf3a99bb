"""Run the fake: ``FakeSalesforce`` (a TLS server on 127.0.0.1) and its helpers.

``FakeSalesforce`` serves the app in a background thread, or in the foreground
for ``python -m tests.fakes.salesforce``. TLS comes from a throwaway ``trustme``
CA written to ``ca_bundle`` (a PEM file, so another process can trust it through
``REQUESTS_CA_BUNDLE``); with a ``state_dir`` the CA is kept there and reused,
so restarting the fake does not invalidate a worker's bundle, and
``server.json`` tells other processes where the fake listens.

``FakeSalesforceProcess`` starts the fake as a subprocess and steers it through
``AdminClient`` (``/__fake__/...``), for tests that kill and restart workers.

The Python API of ``FakeSalesforce`` and the admin routes are the same
operations on one ``ServerState``; see ``app.AdminApi`` for the route list.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import trustme
from requests.adapters import HTTPAdapter
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import Call, SalesforceApp, ServerState
from .faults import Faults
from .store import OrgConfig, Record

log = logging.getLogger(__name__)
LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without a stderr line per request, and without Nagle's delay.

    Werkzeug closes every connection after one answer and writes headers and
    body separately; with Nagle's algorithm on, each call then waits on a
    delayed ACK (about 13 ms a call here, 3 ms without).
    """

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("fake salesforce request=%r code=%s", self.requestline, code)

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("fake salesforce error " + format, *args)


def _load_or_make_ca(state_dir: Path) -> trustme.CA:
    cert, key = state_dir / "ca.pem", state_dir / "ca-key.pem"
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(cert))
    key.write_bytes(ca.private_key_pem.bytes())
    key.chmod(0o600)
    return ca


class FakeSalesforce:
    """A Salesforce org on ``https://127.0.0.1:<port>``.

    Use as a context manager, or ``start()``/``stop()``. The attributes a test
    needs: ``instance_url``, ``ca_bundle``, ``access_token``; seeding with
    ``add_contact``/``add_lead``/``delete``; inspection with ``tasks()`` and
    ``calls``; steering with ``faults`` and ``configure``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: str | Path | None = None,
        config: OrgConfig | None = None,
    ) -> None:
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="fake-sf-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state = ServerState(config)
        self._ca = _load_or_make_ca(self.state_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(host, "localhost", *LOGIN_HOSTS).configure_cert(context)
        self._server: BaseWSGIServer = make_server(
            host,
            port,
            SalesforceApp(self.state),
            threaded=True,
            ssl_context=context,
            request_handler=_QuietHandler,
        )
        self.port = self._server.server_port
        self.instance_url = f"https://{host}:{self.port}"
        self.state.set_instance_url(self.instance_url)
        self._thread: threading.Thread | None = None

    # -- life cycle --------------------------------------------------------------------

    @property
    def ca_bundle(self) -> str:
        """Path of the CA PEM to trust (``REQUESTS_CA_BUNDLE``)."""
        return str(self.state_dir / "ca.pem")

    def combined_ca_bundle(self, base: str | None = None) -> str:
        """Write the fake's CA plus the PEM bundle ``base`` to one file; return its path.

        For ``REQUESTS_CA_BUNDLE`` when the process also talks to other TLS
        servers (``base`` defaults to the current ``REQUESTS_CA_BUNDLE``).
        """
        base = base if base is not None else os.environ.get("REQUESTS_CA_BUNDLE")
        extra = Path(base).read_text() if base and Path(base).is_file() else ""
        combined = self.state_dir / "requests-ca-bundle.pem"
        combined.write_text(Path(self.ca_bundle).read_text() + "\n" + extra)
        return str(combined)

    def start(self) -> FakeSalesforce:
        if self._thread is None:
            self._write_server_info()
            self._thread = threading.Thread(
                target=self._server.serve_forever, name=f"fake-salesforce:{self.port}", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` (the CLI's mode)."""
        self._write_server_info()
        self._server.serve_forever()

    def stop(self) -> None:
        self.state.interrupted.set()  # wakes handlers held by latency/commit_then_hang
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> FakeSalesforce:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_server_info(self) -> None:
        info = {
            "instance_url": self.instance_url,
            "port": self.port,
            "ca_bundle": self.ca_bundle,
            "pid": os.getpid(),
        }
        tmp = self.state_dir / "server.json.tmp"
        tmp.write_text(json.dumps(info))
        tmp.replace(self.state_dir / "server.json")

    # -- state -------------------------------------------------------------------------

    def reset(self, **config: Any) -> None:
        """A fresh org (records, tokens, faults, calls, jobs), with ``config`` overrides."""
        self.state.reset(OrgConfig(**config))

    def configure(self, **changes: Any) -> OrgConfig:
        """Change the org's configuration (``OrgConfig`` fields), keeping its records."""
        return self.state.configure(**changes)

    @property
    def config(self) -> OrgConfig:
        return self.state.org.config

    def set_clock(self, clock: Callable[[], datetime] | None) -> None:
        self.state.org.set_clock(clock)

    def add_contact(self, email: str, **fields: Any) -> str:
        return self.state.org.add_contact(email, **fields)

    def add_lead(self, email: str, converted_to: str | None = None, **fields: Any) -> str:
        return self.state.org.add_lead(email, converted_to=converted_to, **fields)

    def add_account(self, name: str) -> str:
        return self.state.org.add_account(name)

    def delete(self, record_id: str) -> None:
        self.state.org.delete(record_id)

    def tasks(self, *, include_deleted: bool = False) -> list[Record]:
        return self.state.org.tasks(include_deleted=include_deleted)

    def records(self, sobject: str, *, include_deleted: bool = False) -> list[Record]:
        org = self.state.org
        return [org.as_json(sobject, r) for r in org.rows(sobject, include_deleted=include_deleted)]

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def calls(self) -> list[Call]:
        return self.state.calls.all()

    def call_count(
        self, match: str | None = None, *, method: str | None = None, status: int | None = None
    ) -> int:
        return self.state.calls.count(match, method, status)

    def reset_calls(self) -> None:
        self.state.calls.clear()

    @property
    def api_usage(self) -> tuple[int, int]:
        org = self.state.org
        return org.api_used, org.config.api_max

    def set_api_usage(self, used: int, maximum: int | None = None) -> None:
        self.state.org.set_api_usage(used, maximum)

    # -- tokens ------------------------------------------------------------------------

    @property
    def access_token(self) -> str:
        """A valid session for the default user, issued at reset."""
        return self.state.access_token

    @property
    def oauth(self) -> dict[str, str]:
        """The default connected app and user: client_id, client_secret, username, ..."""
        return self.state.oauth_defaults()

    def issue_token(self, username: str | None = None) -> str:
        return self.state.tokens.issue_access_token(username or self.oauth["username"])

    def expire_token(self, token: str | None = None) -> int:
        """Expire one access token, or every one; the API then answers 401."""
        return self.state.tokens.expire(token)

    def issue_refresh_token(self, client_id: str | None = None, username: str | None = None) -> str:
        return self.state.tokens.issue_refresh_token(
            client_id or self.oauth["client_id"], username or self.oauth["username"]
        )

    def register_app(
        self,
        client_id: str,
        client_secret: str,
        *,
        jwt_public_key_pem: bytes | None = None,
        redirect_uris: tuple[str, ...] = (),
    ) -> None:
        self.state.tokens.add_app(
            client_id,
            client_secret,
            jwt_public_key_pem=jwt_public_key_pem,
            redirect_uris=redirect_uris,
        )

    def add_user(
        self, username: str, *, password: str = "correct-horse", security_token: str = "SECTOKEN"
    ) -> None:
        self.state.tokens.add_user(
            username, self.state.org.user_id, password=password, security_token=security_token
        )

    # -- clients -----------------------------------------------------------------------

    def login_session(self) -> requests.Session:
        """A requests.Session that sends login.salesforce.com/test.salesforce.com here.

        Lets simple-salesforce's own login flows (SOAP username/password, JWT
        bearer, OAuth password) run unchanged against the fake.
        """
        session = requests.Session()
        adapter = _LoginHostAdapter(urlsplit(self.instance_url).netloc)
        for host in LOGIN_HOSTS:
            session.mount(f"https://{host}", adapter)
        session.verify = self.ca_bundle
        session.trust_env = False  # else a REQUESTS_CA_BUNDLE in the environment wins over verify
        return session


class _LoginHostAdapter(HTTPAdapter):
    def __init__(self, netloc: str) -> None:
        super().__init__()
        self._netloc = netloc

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        if parts.hostname in LOGIN_HOSTS:
            request.url = urlunsplit(
                ("https", self._netloc, parts.path, parts.query, parts.fragment)
            )
        return super().send(request, *args, **kwargs)


class AdminClient:
    """Talks to a fake in another process through ``/__fake__/``."""

    def __init__(self, instance_url: str, ca_bundle: str) -> None:
        self.instance_url = instance_url
        self.ca_bundle = ca_bundle
        self._session = requests.Session()
        self._session.verify = ca_bundle
        self._session.trust_env = False  # else a REQUESTS_CA_BUNDLE in the environment wins

    def call(self, method: str, route: str, body: Any = None, **params: str) -> Any:
        response = self._session.request(
            method,
            f"{self.instance_url}/__fake__/{route}",
            json=body,
            params=params or None,
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def reset(self, **config: Any) -> None:
        self.call("POST", "reset", config or None)

    def add_contact(self, email: str, **fields: Any) -> str:
        return str(self.call("POST", "contacts", {"email": email, **fields})["id"])

    def add_lead(self, email: str, converted_to: str | None = None, **fields: Any) -> str:
        return str(
            self.call("POST", "leads", {"email": email, "converted_to": converted_to, **fields})[
                "id"
            ]
        )

    def delete(self, record_id: str) -> None:
        self.call("DELETE", f"records/{record_id}")

    def tasks(self) -> list[Record]:
        return list(self.call("GET", "tasks"))

    def add_fault(self, kind: str, count: int | None = 1, **options: Any) -> dict[str, Any]:
        return dict(self.call("POST", "faults", {"kind": kind, "count": count, **options}))

    def fault_rate(self, probability: float, **options: Any) -> None:
        self.call("POST", "faults/rate", {"probability": probability, **options})

    def clear_faults(self) -> None:
        self.call("DELETE", "faults")

    def fired_faults(self) -> list[tuple[str, str, str]]:
        """Every fault that fired so far: (kind, method, path)."""
        return [(str(k), str(m), str(p)) for k, m, p in self.call("GET", "faults/fired")]

    def oauth(self) -> dict[str, str]:
        """The default connected app and user: client_id, client_secret, username, ..."""
        return {str(k): str(v) for k, v in self.call("GET", "oauth").items()}

    def api_usage(self) -> tuple[int, int]:
        usage = self.call("GET", "usage")
        return int(usage["used"]), int(usage["max"])

    def calls(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "calls"))

    def access_token(self) -> str:
        return str(self.call("GET", "token")["access_token"])

    def expire_tokens(self, token: str | None = None) -> int:
        return int(self.call("POST", "tokens/expire", {"token": token})["expired"])

    def configure(self, **changes: Any) -> dict[str, Any]:
        return dict(self.call("PATCH", "config", changes))


class FakeSalesforceProcess:
    """``python -m tests.fakes.salesforce`` as a subprocess, with an ``AdminClient``."""

    def __init__(
        self, state_dir: str | Path, *, port: int = 0, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self.admin: AdminClient | None = None
        self.instance_url = ""
        self.ca_bundle = str(self.state_dir / "ca.pem")

    def start(self, timeout: float = 15.0) -> FakeSalesforceProcess:
        info_path = self.state_dir / "server.json"
        info_path.unlink(missing_ok=True)
        root = Path(__file__).resolve().parents[3]
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.salesforce",
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state_dir),
                *self.extra_args,
            ],
            cwd=root,
        )
        deadline = time.monotonic() + timeout
        while not info_path.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake Salesforce process did not start")
            time.sleep(0.05)
        info = json.loads(info_path.read_text())
        self.instance_url, self.ca_bundle = info["instance_url"], info["ca_bundle"]
        self.port = int(info["port"])
        self.admin = AdminClient(self.instance_url, self.ca_bundle)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> FakeSalesforceProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
