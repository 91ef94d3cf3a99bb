"""Refused, or failed for now: what real servers answer to a login we cannot complete.

`login_failure_is_temporary` decides whether the mailbox waits for a person
("needs reconnect") or is simply tried again later. The answers below are servers'
own words, as imapclient's LoginError holds an IMAP one (the repr of the bytes after
"NO") or as smtplib's SMTPAuthenticationError holds an SMTP one (code apart).
"""

from __future__ import annotations

import pytest

from worker.sync.imap_connect import login_failure_is_temporary, server_words

IMAP_ANSWERS = [
    # Dovecot 2.3, both seen here: a wrong password; passdb down (`dovecot_tempfail`).
    ("b'[AUTHENTICATIONFAILED] Authentication failed.'", False),
    ("b'[UNAVAILABLE] Temporary authentication failure. [vm:2026-12-06 19:21:59]'", True),
    # Dovecot's internal failure (2.3 says it in a BYE and hangs up, which open_imap
    # reports as a broken-off conversation: transient either way).
    ("[UNAVAILABLE] Internal login failure. Refer to server log for more information.", True),
    # Gmail
    ("[AUTHENTICATIONFAILED] Invalid credentials (Failure)", False),
    ("[ALERT] Too many simultaneous connections. (Failure)", True),
    (
        "[ALERT] Please log in via your web browser: "
        "https://support.google.com/mail/accounts/answer/78754 (Failure)",
        False,
    ),
    (
        "[ALERT] Application-specific password required: "
        "https://support.google.com/accounts/answer/185833 (Failure)",
        False,
    ),
    # Yahoo
    ("[AUTHENTICATIONFAILED] LOGIN Invalid credentials", False),
    ("[UNAVAILABLE] LOGIN failure. Server error--please try again after some time.", True),
    # Exchange / Microsoft 365, Courier, Cyrus
    ("LOGIN failed.", False),
    ("Login failed.", False),
    ("[AUTHENTICATIONFAILED] Authentication failed", False),
    # RFC 5530's other codes
    ("[AUTHORIZATIONFAILED] No such authorization-ID", False),
    ("[EXPIRED] That password isn't valid any more", False),
    ("[CONTACTADMIN] Contact your administrator", False),
    ("[PRIVACYREQUIRED] Connection offers no privacy", False),
    ("[INUSE] Mailbox in use", True),
    ("[SERVERBUG] Internal login failure. Refer to server log for more information.", True),
    ("[UNAVAILABLE] User's backend down for maintenance", True),
    # A refusal code decides, whatever the words after it.
    ("[AUTHENTICATIONFAILED] Authentication failed, try again", False),
    # "try again" alone may follow a wrong password: retrying could lock the account.
    ("Login failed, please try again", False),
    ("Too many connections, try again later", True),
    # Gmail's per-account limit resets by itself.
    ("[ALERT] Account exceeded command or bandwidth limits. (Failure)", True),
    ("", False),
]

SMTP_ANSWERS = [
    (535, "5.7.8 Authentication credentials invalid", False),  # aiosmtpd, Postfix
    (
        535,
        "5.7.8 Username and Password not accepted. Learn more at\n"
        "5.7.8 https://support.google.com/mail/?p=BadCredentials",
        False,
    ),
    (535, "5.7.3 Authentication unsuccessful", False),  # Exchange
    (534, "5.7.9 Application-specific password required.", False),  # Gmail
    (454, "4.7.0 Temporary authentication failure", True),  # Postfix, SASL backend down
    (454, "4.7.0 Too many login attempts, please try again later.", True),  # Gmail
    (421, "4.7.0 Try again later, closing connection. (AUTH)", True),  # Gmail
    # The reply code is the server's verdict (RFC 5321): 5yz stays a refusal.
    (535, "5.7.0 Error: authentication failed, please try again", False),
]


@pytest.mark.parametrize(("said", "temporary"), IMAP_ANSWERS)
def test_imap_answers(said: str, temporary: bool) -> None:
    assert login_failure_is_temporary(said) is temporary
    assert login_failure_is_temporary(said.encode()) is temporary


@pytest.mark.parametrize(("code", "said", "temporary"), SMTP_ANSWERS)
def test_smtp_answers(code: int, said: str, temporary: bool) -> None:
    assert login_failure_is_temporary(said.encode(), code) is temporary


def test_a_response_code_counts_only_where_imap_puts_it() -> None:
    # A code opens the text (RFC 3501 resp-text); the same word later is just a word.
    assert login_failure_is_temporary("Login failed [UNAVAILABLE]") is False
    assert login_failure_is_temporary("[unavailable] lower case is still the code") is True


def test_the_words_shown_keep_the_servers_answer_without_the_password() -> None:
    words = server_words(b"[UNAVAILABLE] no login for hunter2 now\r\n", "hunter2")
    assert words == ": [UNAVAILABLE] no login for [password] now"
