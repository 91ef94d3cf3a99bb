"""Replies that lost their threading headers: matched by the provider's thread, or by subject.

Some clients drop ``In-Reply-To``/``References`` (web forms, some mobile apps,
a gateway that rewrites mail). Such a reply still says what it answers in two
weaker ways, tried in this order after the Message-ID rule
(``worker.sync.inbound``)::

    thread   the provider threaded it with a message we sent from this mailbox:
             Gmail threadId, Graph and EWS conversation id (HeaderSummary.thread_id,
             SentMessage.thread_id, stored at send). The newest such message.
    subject  IMAP only (no provider thread): the normalised subject equals that
             of a message this mailbox sent within SIGHTLINE_SUBJECT_MATCH_DAYS
             to the sender (the prospect, or any To/Cc recipient). The newest.

The subject rule applies only to a message that names no Message-ID at all. One
that names ids, none of them ours, belongs to another conversation (the
prospect's own thread that happens to share a subject such as "Quick
question"); only the provider's thread, built by the provider from those
headers and the subject, may still tie it to ours (a reply to a forwarded copy
that Gmail filed in our thread). The mailbox owner's own messages never reach
here (``handle_inbound`` calls them "own" first).

Both lookups are indexed: ``ix_sent_mailbox_thread`` (mailbox_id, thread_id)
and ``ix_sent_mailbox_sent_at`` (mailbox_id, sent_at); the subject rule reads
only the mailbox's sends in its window naming the sender, and compares subjects
in Python (a prefix in another language is not SQL's to strip).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Text, bindparam, cast, func, or_, select
from sqlalchemy.orm import Session

from core.models import Prospect, SendStatus, SentMessage

# Reply and forward markers, as mail clients write them in many languages:
# Re, Aw (de), Sv (sv/da/no), Vs (fi), Antw (nl), Odp (pl), Rif/R (it), Rép/Réf (fr),
# Res/Enc (pt), Ynt/İlt (tr), Odg (hr), Atb (lv), Fwd/Fw/Wg/Tr/Vb/Vl/Doorst/Pd/Rv,
# Greek ΑΠ/ΣΧΕΤ/ΠΡΘ, Hebrew תגובה, Chinese 回复/回覆/答复/转发/轉寄, Japanese 返信/転送;
# with a count ("Re[2]:", "Re(3):") and an ASCII or full-width colon.
_MARKERS = (
    r"re|aw|sv|vs|antw|odp|rif|r|r[ée]p|r[ée]f|res|enc|ynt|[iİ]lt|odg|atb|"
    r"fwd?|wg|tr|vb|vl|doorst|pd|rv|απ|σχετ|πρθ|תגובה|回复|回覆|答复|转发|轉寄|返信|転送"
)
_PREFIX = re.compile(
    # Possessive: "Antw" then a run of spaces must not be split between the two
    # space runs in every way before the missing colon is noticed (quadratic).
    rf"^[ \t]*+(?:(?:{_MARKERS})[ \t]*+(?:\[\d+\]|\(\d+\))?[ \t]*+[:\uff1a]"
    r"|\[(?:ext|external|extern|externe?|extern[oa])\][ \t]*+:?)[ \t]*+",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
# A subject longer than this is compared by its start: RFC 5322 advises 78, and
# a marker is never this far in.
_MAX_SUBJECT = 1000


def normalize_subject(subject: str | None) -> str:
    """The subject without reply/forward markers, whitespace collapsed, case folded.

    ``"AW: Re[2]: Fwd:  Quick   Question"`` → ``"quick question"``. Linear: each
    round strips one marker from the front and never backtracks over the rest.
    """
    text = _SPACE.sub(" ", (subject or "")[:_MAX_SUBJECT]).strip()
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text.casefold().strip()


def find_by_thread(
    session: Session, mailbox_id: int, thread_ids: Iterable[str]
) -> dict[str, SentMessage]:
    """For each thread id, the newest message this mailbox sent in it."""
    wanted = sorted({t for t in thread_ids if t})
    if not wanted:
        return {}
    found: dict[str, SentMessage] = {}
    rows = session.scalars(
        select(SentMessage)
        .where(
            SentMessage.mailbox_id == mailbox_id,
            SentMessage.thread_id.in_(wanted),
            SentMessage.status == SendStatus.SENT,
        )
        .order_by(SentMessage.sent_at.desc(), SentMessage.id.desc())
    )
    for sent in rows:
        if sent.thread_id is not None:
            found.setdefault(sent.thread_id, sent)
    return found


_THREADS_WITH_SENT = (
    select(SentMessage.thread_id)
    .where(
        SentMessage.mailbox_id == bindparam("mailbox_id"),
        SentMessage.thread_id.in_(bindparam("threads", expanding=True)),
        SentMessage.status == SendStatus.SENT,
    )
    .distinct()
)


def threads_with_sent(session: Session, mailbox_id: int, thread_ids: Iterable[str]) -> set[str]:
    """Which of these threads hold a message this mailbox sent (ids only, no rows loaded).

    What a sync asks of every new message that names no Message-ID: usually
    none, so the answer is kept as cheap as one indexed lookup can be (a
    statement built once, run on the session's connection without the ORM).
    """
    wanted = sorted({t for t in thread_ids if t})
    if not wanted:
        return set()
    rows = session.connection().execute(
        _THREADS_WITH_SENT, {"mailbox_id": mailbox_id, "threads": wanted}
    )
    return {str(thread) for (thread,) in rows}


# The sends of one mailbox in a window that name a sender: the prospect, or the address
# in To/Cc as the address list's JSON spells it ("dana@acme.test", quotes included).
# Built once, so its cache key is computed once, and run without the ORM: a sync asks
# it of every new message that names no Message-ID (IMAP newsletters and the like), and
# the answer is almost always no row (it was a sixth of an IMAP push sync's CPU).
_PROSPECTS_NAMED = select(Prospect.id).where(
    Prospect.team_id == bindparam("team_id"), Prospect.email == bindparam("sender")
)
_SENT_TO_SENDER = (
    select(
        SentMessage.id,
        SentMessage.subject,
        SentMessage.prospect_id,
        SentMessage.to_addrs,
        SentMessage.cc_addrs,
    )
    .where(
        SentMessage.mailbox_id == bindparam("mailbox_id"),
        SentMessage.status == SendStatus.SENT,
        SentMessage.sent_at >= bindparam("since"),
        or_(
            SentMessage.prospect_id.in_(_PROSPECTS_NAMED),
            func.lower(cast(SentMessage.to_addrs, Text)).like(bindparam("quoted"), escape="/"),
            func.lower(cast(SentMessage.cc_addrs, Text)).like(bindparam("quoted"), escape="/"),
        ),
    )
    .order_by(SentMessage.sent_at.desc(), SentMessage.id.desc())
)


def _contains_pattern(text: str) -> str:
    """A LIKE pattern (escape "/") matching any text that contains `text` as it is."""
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def find_by_subject(
    session: Session,
    *,
    team_id: int,
    mailbox_id: int,
    sender: str | None,
    subject: str | None,
    since: datetime,
) -> SentMessage | None:
    """The newest message this mailbox sent to `sender` since `since` with the same subject."""
    sender = (sender or "").strip().lower()
    wanted = normalize_subject(subject)
    if not sender or not wanted:
        return None
    connection = session.connection()
    rows = connection.execute(
        _SENT_TO_SENDER,
        {
            "mailbox_id": mailbox_id,
            "since": since,
            "team_id": team_id,
            "sender": sender,
            "quoted": _contains_pattern(f'"{sender}"'),
        },
    ).all()
    if not rows:
        return None
    prospect_ids = set(connection.scalars(_PROSPECTS_NAMED, {"team_id": team_id, "sender": sender}))
    for sent_id, sent_subject, prospect_id, to_addrs, cc_addrs in rows:
        recipients = {a.lower() for a in [*(to_addrs or []), *(cc_addrs or [])]}
        named = prospect_id in prospect_ids or sender in recipients
        if named and normalize_subject(sent_subject) == wanted:
            return session.get(SentMessage, sent_id)
    return None
