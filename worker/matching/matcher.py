"""From candidate Message-IDs to the messages we sent: one indexed lookup.

Also decides, from headers alone, whether a message that names none of our ids
is still worth fetching whole: a bounce or complaint carries the original
Message-ID inside its body, not in its headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import SentMessage
from worker.sync.base import HeaderSummary

# Stay well under every engine's limit on bound parameters.
_LOOKUP_CHUNK = 500

_REPORT_SENDERS = re.compile(
    r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon|bounce[s]?)@", re.IGNORECASE
)
_REPORT_SUBJECTS = re.compile(
    r"undeliver|delivery (status|failure|has failed|notification)|returned mail|failure notice|"
    r"mail delivery (failed|failure|system)|non[- ]?remis|unzustellbar|nicht zugestellt|"
    r"no se pudo entregar|non consegnat|niet afgeleverd|abuse report|complaint",
    re.IGNORECASE,
)


def find_sent_messages(
    session: Session, team_id: int, message_ids: Iterable[str]
) -> dict[str, SentMessage]:
    """The team's sent messages whose Message-ID is among `message_ids`."""
    wanted = list(dict.fromkeys(message_ids))
    found: dict[str, SentMessage] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        for sent in session.scalars(
            select(SentMessage).where(
                SentMessage.message_id.in_(chunk), SentMessage.team_id == team_id
            )
        ):
            found[sent.message_id] = sent
    return found


def may_be_report(summary: HeaderSummary) -> bool:
    """True when the headers suggest a bounce, complaint or auto-reply.

    Such messages often name our Message-ID only inside their body (bounces,
    complaints) or not at all (some auto-replies), so they are fetched whole.
    """
    headers = summary.headers
    content_type = headers.get("content-type", "").lower()
    if "multipart/report" in content_type:
        return True
    # A null reverse-path is what RFC 3464 reports and RFC 3834 auto-replies use.
    if "return-path" in headers and headers["return-path"].strip() in ("<>", ""):
        return True
    if summary.from_addr and _REPORT_SENDERS.match(summary.from_addr):
        return True
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and auto != "no":
        return True
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return True
    if is_unsubscribe_mail(summary):
        return True
    return bool(summary.subject and _REPORT_SUBJECTS.search(summary.subject))


def is_unsubscribe_mail(summary: HeaderSummary) -> bool:
    """True for what a mail client sends to List-Unsubscribe's mailto: the subject
    ``unsubscribe`` (ours, `worker.sequences.messages`), often with no threading headers."""
    return (summary.subject or "").strip().lower() == "unsubscribe"
