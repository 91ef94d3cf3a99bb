"""Handing a message to an SMTP server (an IMAP mailbox's sending half), and what its
answers mean for us: a quota (worker.sync.quota), a refusal that will not change
(5xx: permanent), or one worth another try.

The connection is opened by `worker.sync.imap_connect` (through the outbound
policy) and closed here, whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib

from worker.sync.base import OutgoingMessage, ProviderError
from worker.sync.quota import smtp_quota

log = logging.getLogger(__name__)


def _text(said: bytes | str) -> str:
    return said.decode("utf-8", "replace") if isinstance(said, bytes) else said


def send_mail(smtp: smtplib.SMTP, message: OutgoingMessage, raw: bytes) -> None:
    """Send `raw` to the message's To and Cc over `smtp`, then QUIT.

    Raises:
        QuotaError: the server says the sender's quota is spent (RCPT or DATA).
        ProviderError: permanent when every recipient, or the message, was refused
            with a 5xx; else transient.
    """
    recipients = [*message.to, *message.cc]
    try:
        refused = smtp.sendmail(message.from_addr, recipients, raw)
    except smtplib.SMTPRecipientsRefused as exc:
        # Gmail answers its daily quota at RCPT too: that is about us, not them.
        for code, said in exc.recipients.values():
            quota = smtp_quota(code, _text(said))
            if quota is not None:
                raise quota from exc
        raise ProviderError(
            f"every recipient was refused: {sorted(exc.recipients)}", permanent=True
        ) from exc
    except smtplib.SMTPResponseException as exc:
        quota = smtp_quota(exc.smtp_code, _text(exc.smtp_error))
        if quota is not None:
            raise quota from exc
        permanent = 500 <= exc.smtp_code < 600
        raise ProviderError(
            f"SMTP server answered {exc.smtp_code} {exc.smtp_error!r}", permanent=permanent
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise ProviderError(f"SMTP send failed: {exc}") from exc
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
    if refused:
        log.warning(
            "smtp_partial_refusal message_id=%s refused=%s", message.message_id, sorted(refused)
        )
