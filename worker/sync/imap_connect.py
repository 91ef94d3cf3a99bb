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
    the server refused the login            "IMAP server refused the login for <user>: <words>"
                                            (`needs_reconnect`: a person must act)
    the login failed for now, on its side   "IMAP server had a temporary problem logging
                                            in <user>: <words>" (`LoginUnavailableError`,
                                            transient: the sync is retried later, the IDLE
                                            watch backs off and tries again)

<words> are the server's, cut short, password blanked (`server_words`). Bytes a
far side sent are shown only in the last two cases: a tagged IMAP `NO` or a
numbered SMTP reply from a server the policy let us reach. An SSH banner, an
HTTP body or any other service's answer never reaches the user.

Refused or for now (`login_failure_is_temporary`): a server also answers NO to
LOGIN when its own authentication backend is down (Dovecot: "[UNAVAILABLE]
Temporary authentication failure"), and smtplib raises SMTPAuthenticationError
for any answer to AUTH but 235, 454 included. Taking those for a wrong password
would stop the mailbox until a person typed the same password again, so:

    SMTP reply code 4yz (454 4.7.0, 421)                       for now
    SMTP reply code 5yz (535 5.7.8 ...) or anything else       refused
    IMAP response code [AUTHENTICATIONFAILED] [AUTHORIZATIONFAILED]
        [EXPIRED] [CONTACTADMIN] [PRIVACYREQUIRED] (RFC 5530)  refused
    IMAP response code [UNAVAILABLE] [INUSE] [SERVERBUG]       for now
    otherwise, words that say so: "temporar", "try again later/after/in",
        "too many simultaneous connections", "server error",
        Gmail's "exceeded command or bandwidth limits"          for now
    anything else ("NO LOGIN failed.")                         refused, as before

SMTP's reply code is the server's own verdict (RFC 5321: 4yz transient, 5yz
permanent), so its words are not read. Plain substring checks: nothing here
backtracks, whatever a server sends.
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

# RFC 5530 response codes in a NO to LOGIN: a person must act, or it passes by itself.
REFUSAL_CODES = frozenset(
    {"AUTHENTICATIONFAILED", "AUTHORIZATIONFAILED", "EXPIRED", "CONTACTADMIN", "PRIVACYREQUIRED"}
)
TEMPORARY_CODES = frozenset({"UNAVAILABLE", "INUSE", "SERVERBUG"})
# Words of servers whose own trouble it is: Dovecot "Temporary authentication failure",
# Yahoo "Server error--please try again after some time", Gmail "[ALERT] Too many
# simultaneous connections". Lower case; matched anywhere in the answer.
# "try again" alone is not enough: "Login failed, please try again" may mean a wrong
# password, and retrying one every few minutes can lock the account.
TEMPORARY_WORDS = (
    "temporar",
    "try again later",
    "try again after",
    "try again in ",
    "too many simultaneous connections",
    "server error",
    "exceeded command or bandwidth limits",  # Gmail: resets by itself
)


class LoginUnavailableError(ProviderError):
    """The server could not log us in for now, and said so: retry later, nothing to re-enter.

    Transient (neither `permanent` nor `needs_reconnect`); a subclass only so that a
    person connecting the mailbox is told to try again rather than to check the password.
    """


def _said(said: object) -> str:
    """A server's answer as one line of printable text."""
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    if len(text) > 2 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        text = text[2:-1]  # imapclient's LoginError holds the repr of the server's bytes
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())


def server_words(said: object, password: object) -> str:
    """What a server said when it refused a login, as ": <words>" (or "" if nothing).

    Only for well-formed protocol answers (a tagged NO, a numbered SMTP reply).
    Cut short, printable characters only, and the password blanked out should a
    server ever echo it.
    """
    text = _said(said)[:MAX_WORDS]
    if isinstance(password, str) and password:
        text = text.replace(password, "[password]")
    return f": {text}" if text else ""


def login_failure_is_temporary(said: object, smtp_code: int | None = None) -> bool:
    """Whether a server's NO to LOGIN (or its reply to SMTP AUTH) says "not now" rather
    than "not you": the module docstring's table.

    Args:
        said: the server's words (bytes, or text as imapclient's LoginError holds them).
        smtp_code: the SMTP reply code; when given it alone decides.
    """
    if smtp_code is not None:
        return 400 <= smtp_code < 500
    text = _said(said)
    code = _response_code(text)
    if code in REFUSAL_CODES:
        return False
    if code in TEMPORARY_CODES:
        return True
    lowered = text.lower()
    return any(words in lowered for words in TEMPORARY_WORDS)


def _response_code(text: str) -> str:
    """The response code opening an IMAP answer ("UNAVAILABLE" of "[UNAVAILABLE] ..."), or ""."""
    if not text.startswith("["):
        return ""
    end = text.find("]")
    return text[1:end].split(" ", 1)[0].upper() if end > 0 else ""


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
            when the server refused the login, a `LoginUnavailableError` when it could
            not log us in for now.
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
        raise _login_failed("IMAP", server, exc, server_words(exc, server.get("password"))) from exc
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


def _login_failed(
    purpose: str,
    server: Mapping[str, Any],
    said: object,
    words: str,
    smtp_code: int | None = None,
) -> ProviderError:
    """The error for a login the server turned down: refused, or failed for now."""
    # "IMAP server ..." / "SMTP server ...": callers tell the two apart by the prefix.
    user = server.get("username")
    if login_failure_is_temporary(said, smtp_code):
        return LoginUnavailableError(
            f"{purpose} server had a temporary problem logging in {user}{words}"
        )
    return ProviderError(
        f"{purpose} server refused the login for {user}{words}", needs_reconnect=True
    )


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
            server refused the login, a `LoginUnavailableError` when it answered 4yz.
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
            raise _login_failed("SMTP", server, exc.smtp_error, words, exc.smtp_code) from exc
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
