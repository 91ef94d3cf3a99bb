"""Mail Sightline sends as itself, through the operator's SMTP server (SIGHTLINE_SMTP_URL).

Only invitations to join a team so far. Not a mailbox of a team: sequence and
one-off mail goes out through each sender's own mailbox (worker.sequences).

`send_operator_mail` raises `OperatorMailError` with a sentence the page can
show ("the mail server refused the recipient …"); the caller keeps its work
(an invitation is saved whether or not its email went out) and shows the link
instead. The SMTP password never reaches a log line or an error message.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from config import get_settings
from config.settings.team_mail import OperatorSmtp

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 20


class OperatorMailError(Exception):
    """The operator's SMTP server is not configured, unreachable, or refused the message."""


def configured() -> bool:
    return get_settings().team_mail.smtp is not None


def _connect(smtp: OperatorSmtp) -> smtplib.SMTP:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if smtp.security == "tls":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=TIMEOUT_SECONDS, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=TIMEOUT_SECONDS)
    try:
        if smtp.security == "starttls":
            client.starttls(context=context)
        if smtp.username and smtp.password:
            client.login(smtp.username, smtp.password)
    except BaseException:
        client.close()
        raise
    return client


def send_operator_mail(to: str, subject: str, text: str) -> str:
    """Send a plain-text message to `to`; return its Message-ID.

    Raises:
        OperatorMailError: no SMTP configured, or the server could not be reached
            or refused the message (the message says which, without the password).
    """
    settings = get_settings().team_mail
    if settings.smtp is None or settings.mail_from is None:
        raise OperatorMailError("no mail server is configured (SIGHTLINE_SMTP_URL)")
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: nobody's out-of-office answers it
    message.set_content(text)
    try:
        with _connect(settings.smtp) as client:
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        reply = next(iter(exc.recipients.values()), (0, b""))
        detail = reply[1].decode("utf-8", "replace") if isinstance(reply[1], bytes) else ""
        raise OperatorMailError(f"the mail server refused {to}: {reply[0]} {detail}") from None
    except smtplib.SMTPAuthenticationError:
        raise OperatorMailError(
            "the mail server refused Sightline's login (check SIGHTLINE_SMTP_URL)"
        ) from None
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        detail = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        raise OperatorMailError(
            f"the mail server refused the message: {exc.smtp_code} {detail}"
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise OperatorMailError(
            f"the mail server {settings.smtp.host}:{settings.smtp.port} could not be reached "
            f"({type(exc).__name__})"
        ) from None
    log.info("operator_mail_sent message_id=%s", message["Message-ID"])
    return str(message["Message-ID"])
