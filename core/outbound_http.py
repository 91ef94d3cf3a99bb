"""HTTP(S) to a destination a user chose, under the one outbound policy (`core.outbound`).

`PinnedHTTPAdapter` is a requests transport adapter. Mounted on a session, it

- checks every request's URL before anything is sent (scheme, a plain host,
  no userinfo, and an optional `permit` rule of the caller: "Salesforce hosts
  only"), redirects included, since requests sends each hop through it;
- opens every new connection through `core.outbound.resolve` + `open_socket`:
  the name is resolved once, every address checked, and the socket connected
  to a checked address. TLS still uses the name (SNI, certificate check) and
  the Host header is the URL's, so nothing about HTTPS changes but *where*;
- ignores proxy settings from the environment: a proxy would resolve the name
  itself, beyond our check.

A refusal is `core.outbound.OutboundError` raised out of `Session.request`
(it is not an OSError, so neither urllib3 nor requests retries or rewraps it).
Connections kept alive in the pool were checked when they were opened; a new
connection is checked again, so a changed allow-list or DNS answer applies.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, ClassVar

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.ssl_ import create_urllib3_context

from core.outbound import OutboundError, describe_os_error, open_socket, resolve, split_url
from core.outbound_deadline import adopt

# A caller's extra rule: (scheme, host, port) → None to go on, or a sentence saying why not.
Permit = Callable[[str, str, int], str | None]


class _PinnedConnectionMixin:
    """urllib3's `_new_conn`, but to the address `core.outbound` checked for this host."""

    purpose: ClassVar[str] = "HTTP"
    host: str
    port: int
    timeout: Any
    socket_options: Any

    def _new_conn(self) -> Any:
        destination = resolve(self.host, int(self.port), purpose=self.purpose)
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        try:
            return open_socket(destination, timeout, self.socket_options)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {destination.label} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(
                self,  # type: ignore[arg-type]
                f"Failed to connect to {destination.label}: {describe_os_error(exc, timeout)}",
            ) from exc


@lru_cache(maxsize=8)
def _trust_context(ca_certs: str | None, ca_cert_dir: str | None) -> ssl.SSLContext:
    """One verifying TLS context per trust store, shared by every connection that trusts it.

    Left to itself urllib3 builds a context per connection and loads the CA
    bundle into it: 18 ms of CPU and 700 KiB held for as long as the connection
    lives, on every EWS sync (a new connection each) and every stream the
    listener holds (10,000 of them). The bundle is read once per process.
    """
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.load_verify_locations(cafile=ca_certs, capath=ca_cert_dir)
    return context


class _PinnedTLSConnection(_PinnedConnectionMixin, HTTPSConnection):
    """A pinned TLS connection whose trust store is the shared `_trust_context`."""

    def connect(self) -> None:
        plain = self.ssl_context is None and not self.cert_file and not self.ca_cert_data
        if plain and (self.ca_certs or self.ca_cert_dir):
            self.ssl_context = _trust_context(self.ca_certs, self.ca_cert_dir)
            self.ca_certs = self.ca_cert_dir = None  # else loaded into it again
        super().connect()


class _AdoptingPool(HTTPConnectionPool):
    """A pool whose connection taken up again joins the running sync's deadline
    (core.outbound_deadline); a new one joins when `open_socket` makes it."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        sock = getattr(conn, "sock", None)
        if isinstance(sock, socket.socket):
            adopt(sock)
        return conn


@lru_cache(maxsize=32)
def _pool_classes(purpose: str) -> dict[str, type[HTTPConnectionPool]]:
    """Pool classes whose connections are pinned, one pair per purpose (it names the log line)."""
    attrs = {"purpose": purpose}
    plain = type("PinnedHTTPConnection", (_PinnedConnectionMixin, HTTPConnection), attrs)
    tls = type("PinnedHTTPSConnection", (_PinnedTLSConnection,), attrs)
    return {
        "http": type(
            "PinnedHTTPPool", (_AdoptingPool, HTTPConnectionPool), {"ConnectionCls": plain}
        ),
        "https": type(
            "PinnedHTTPSPool", (_AdoptingPool, HTTPSConnectionPool), {"ConnectionCls": tls}
        ),
    }


class PinnedHTTPAdapter(HTTPAdapter):
    """A transport adapter for user-chosen destinations (see the module docstring).

    Args:
        purpose: names the connection in errors and logs ("Exchange", "Salesforce").
        permit: an extra rule on (scheme, host, port), e.g. Salesforce hosts only.
        schemes: the URL schemes allowed.
        **kwargs: HTTPAdapter's (pool sizes, retries).
    """

    default_purpose: ClassVar[str] = "HTTP"

    def __init__(
        self,
        *args: Any,
        purpose: str | None = None,
        permit: Permit | None = None,
        schemes: tuple[str, ...] = ("https", "http"),
        **kwargs: Any,
    ) -> None:
        self.purpose = purpose or self.default_purpose
        self.permit = permit
        self.schemes = schemes
        super().__init__(*args, **kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        purpose = getattr(self, "purpose", self.default_purpose)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(purpose)

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        scheme, host, port = split_url(str(request.url or ""), schemes=self.schemes)
        if self.permit is not None:
            why = self.permit(scheme, host, port)
            if why is not None:
                raise OutboundError(why)
        # No proxy: it would resolve the name beyond our check.
        return super().send(request, stream, timeout, verify, cert, proxies={})
