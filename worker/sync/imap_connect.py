"""Opening IMAP and SMTP connections to a team's servers, under the outbound policy.

`open_imap` and `open_smtp` are the only way `worker.sync.imap` reaches a
mail server: connect (through `core.outbound`: the host is resolved once,
every address checked, the socket opened to a checked address while TLS keeps
the host name for SNI and the certificate), secure, log in. Every connection
passes the policy again (sync, IDLE, send, verify): a stored host is checked
when it is used, not only when it was saved.

What a failure says (it is shown to the user and stored on the mailbox):

    cause                                   message
    address refused by the policy           "<host>: this address is not allowed (...)"
    TCP/TLS failure                         our words: refused, no answer, TLS failed ...
    no IMAP greeting / no SMTP reply code   "the server at <host>:<port> did not speak IMAP"
    the server broke off mid-conversation   "... broke off the IMAP conversation"
    a well-formed refusal of the login      the server's words, cut short, password blanked

Bytes a far side sent are shown only in the last case: a tagged IMAP `NO` or a
numbered SMTP reply from a server the policy let us reach. An SSH banner, an
HTTP body or any other service's answer never reaches the user.
"""

from __future__ import annotations

import contextlib
import imaplib
import smtplib
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import imapclient
from imapclient import imap4, tls
from imapclient.exceptions import IMAPClientError, LoginError

from core.outbound import Destination, OutboundError, describe_os_error, open_socket, resolve
from worker.sync.base import ProviderError

MAX_WORDS = 200


def server_words(said: object, password: object) -> str:
    """What a server said when it refused a login, as ": <words>" (or "" if nothing).

    Only for well-formed protocol answers (a tagged NO, a numbered SMTP reply).
    Cut short, printable characters only, and the password blanked out should a
    server ever echo it.
    """
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    if len(text) > 2 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        text = text[2:-1]  # imapclient's LoginError holds the repr of the server's bytes
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())[:MAX_WORDS]
    if isinstance(password, str) and password:
        text = text.replace(password, "[password]")
    return f": {text}" if text else ""


def _refused(exc: OutboundError, purpose: str) -> ProviderError:
    # "SMTP server ..." / "IMAP server ...": callers tell the two apart by the prefix.
    return ProviderError(f"{purpose} server {exc}", permanent=exc.permanent)


# -- IMAP ----------------------------------------------------------------------------


class _PinnedIMAP4(imap4.IMAP4WithTimeout):  # type: ignore[misc]
    """imaplib over a socket to the checked address (plain, or STARTTLS later)."""

    def __init__(self, destination: Destination, timeout: float | None) -> None:
        self._destination = destination
        super().__init__(destination.host, destination.port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return open_socket(self._destination, timeout if timeout is not None else self._timeout)


class _PinnedIMAP4TLS(tls.IMAP4_TLS):  # type: ignore[misc]
    """imaplib over TLS to the checked address; SNI and the certificate name the host."""

    def __init__(
        self, destination: Destination, ssl_context: ssl.SSLContext, timeout: float | None
    ) -> None:
        self._destination = destination
        super().__init__(destination.host, destination.port, ssl_context, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = open_socket(self._destination, timeout if timeout is not None else self._timeout)
        try:
            wrapped: socket.socket = tls.wrap_socket(sock, self.ssl_context, self._destination.host)
            return wrapped
        except BaseException:
            sock.close()
            raise


class PinnedIMAPClient(imapclient.IMAPClient):  # type: ignore[misc]
    """IMAPClient connected to a `Destination` (a checked address), never re-resolving."""

    def __init__(
        self,
        destination: Destination,
        *,
        use_tls: bool,
        ssl_context: ssl.SSLContext | None,
        timeout: float,
    ) -> None:
        self._destination = destination
        super().__init__(
            destination.host,
            port=destination.port,
            ssl=use_tls,
            ssl_context=ssl_context,
            timeout=timeout,
        )

    def _create_IMAP4(self) -> imaplib.IMAP4:  # noqa: N802 - imapclient's name
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            context = self.ssl_context or tls.create_default_context()
            return _PinnedIMAP4TLS(self._destination, context, connect_timeout)
        return _PinnedIMAP4(self._destination, connect_timeout)


def open_imap(
    server: Mapping[str, Any], *, timeout: float, ssl_context: Callable[[], ssl.SSLContext]
) -> imapclient.IMAPClient:
    """Connect, secure and log in to a team's IMAP server; the client, logged in.

    Raises:
        ProviderError: see the module docstring for what it says; `needs_reconnect`
            when the server refused the login.
    """
    host, security = str(server.get("host") or ""), server.get("security", "tls")
    try:
        destination = resolve(host, _port(server), purpose="IMAP")
    except OutboundError as exc:
        raise _refused(exc, "IMAP") from None
    where = destination.label
    try:
        client = PinnedIMAPClient(
            destination,
            use_tls=security == "tls",
            ssl_context=ssl_context() if security == "tls" else None,
            timeout=timeout,
        )
    except OSError as exc:
        raise ProviderError(
            f"IMAP connection to {host} failed: {describe_os_error(exc, timeout)}"
        ) from exc
    except IMAPClientError as exc:  # no greeting, or not an IMAP one: say so, not what it was
        raise ProviderError(
            f"IMAP connection to {host} failed: the server at {where} did not speak IMAP"
        ) from exc
    try:
        if security == "starttls":
            client.starttls(ssl_context())
        client.login(server.get("username"), server.get("password"))
        # Most servers list their capabilities in the answer to LOGIN, but
        # imaplib forgets it at the next SELECT/EXAMINE and imapclient then asks
        # again (CAPABILITY: ~450 bytes from Dovecot, a fifth of a push sync's
        # traffic). Reading them now keeps the LOGIN answer; a server that sent
        # none is asked here instead of later.
        client.capabilities()
    except LoginError as exc:
        if isinstance(exc.__context__, imaplib.IMAP4.abort):  # cut off, not a refusal
            _drop(client)
            raise ProviderError(
                f"IMAP connection to {host} failed: the server at {where} broke off the "
                "IMAP conversation"
            ) from exc
        _drop(client)
        raise ProviderError(
            f"IMAP server refused the login for {server.get('username')}"
            f"{server_words(exc, server.get('password'))}",
            needs_reconnect=True,
        ) from exc
    except OSError as exc:
        _drop(client)
        raise ProviderError(
            f"IMAP connection to {host} failed: {describe_os_error(exc, timeout)}"
        ) from exc
    except IMAPClientError as exc:
        _drop(client)
        if isinstance(exc, imaplib.IMAP4.abort):
            reason = f"the server at {where} broke off the IMAP conversation"
        elif security == "starttls" and "STARTTLS" in str(exc).upper():
            reason = f"the server at {where} does not offer STARTTLS"
        else:
            reason = f"the IMAP server at {where} answered with an error before the login"
        raise ProviderError(f"IMAP connection to {host} failed: {reason}") from exc
    return client


def _drop(client: imapclient.IMAPClient) -> None:
    with contextlib.suppress(Exception):  # the connection may be half-open: best effort
        client.shutdown()


def _port(server: Mapping[str, Any]) -> int:
    try:
        return int(server.get("port") or 0)
    except (TypeError, ValueError):
        return 0


# -- SMTP ----------------------------------------------------------------------------


class PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP connected to a checked address; STARTTLS names the host."""

    def __init__(self, destination: Destination, *, local_hostname: str, timeout: float) -> None:
        self._destination = destination
        super().__init__(
            destination.host, destination.port, local_hostname=local_hostname, timeout=timeout
        )

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return open_socket(self._destination, timeout)


class PinnedSMTPSSL(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL connected to a checked address; SNI and the certificate name the host."""

    def __init__(
        self,
        destination: Destination,
        *,
        local_hostname: str,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        self._destination = destination
        super().__init__(
            destination.host,
            destination.port,
            local_hostname=local_hostname,
            timeout=timeout,
            context=context,
        )

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = open_socket(self._destination, timeout)
        try:
            return self.context.wrap_socket(sock, server_hostname=self._destination.host)
        except BaseException:
            sock.close()
            raise


def open_smtp(
    server: Mapping[str, Any],
    *,
    helo: str,
    timeout: float,
    ssl_context: Callable[[], ssl.SSLContext],
) -> smtplib.SMTP:
    """Connect, secure and log in to a team's SMTP server; the connection, logged in.

    Raises:
        ProviderError: see the module docstring; `needs_reconnect` when the
            server refused the login.
    """
    host, security = str(server.get("host") or ""), server.get("security", "starttls")
    try:
        destination = resolve(host, _port(server), purpose="SMTP")
    except OutboundError as exc:
        raise _refused(exc, "SMTP") from None
    where = destination.label
    smtp: smtplib.SMTP | None = None
    try:
        if security == "tls":
            smtp = PinnedSMTPSSL(
                destination, local_hostname=helo, timeout=timeout, context=ssl_context()
            )
        else:
            smtp = PinnedSMTP(destination, local_hostname=helo, timeout=timeout)
            if security == "starttls":
                smtp.starttls(context=ssl_context())
        smtp.login(server.get("username") or "", server.get("password") or "")
    except smtplib.SMTPResponseException as exc:
        _quit(smtp)
        if not 200 <= exc.smtp_code <= 599:  # no reply code: not an SMTP server
            raise ProviderError(
                f"SMTP connection to {host} failed: the server at {where} did not speak SMTP"
            ) from exc
        words = server_words(exc.smtp_error, server.get("password"))
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            raise ProviderError(
                f"SMTP server refused the login for {server.get('username')}{words}",
                needs_reconnect=True,
            ) from exc
        raise ProviderError(
            f"SMTP connection to {host} failed: the server answered {exc.smtp_code}{words}"
        ) from exc
    except smtplib.SMTPServerDisconnected as exc:
        _quit(smtp)
        raise ProviderError(
            f"SMTP connection to {host} failed: the server at {where} closed the connection "
            "(is it an SMTP server, with this security setting?)"
        ) from exc
    except smtplib.SMTPException as exc:  # smtplib's own words: no extension, no method
        _quit(smtp)
        raise ProviderError(f"SMTP connection to {host} failed: {exc}") from exc
    except OSError as exc:
        _quit(smtp)
        raise ProviderError(
            f"SMTP connection to {host} failed: {describe_os_error(exc, timeout)}"
        ) from exc
    return smtp


def _quit(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.close()
