"""The chaos run's own ledger, and the state it owes the org, derived from that alone.

The harness plays every party but Sightline: the sellers' API client, the
prospects, their mail servers, their browsers. What it records here is what
those parties saw, never what Sightline wrote down about itself:

    prospects    who was enrolled (the API's answers), with the Contact or Lead
                 the harness created for each in the org
    deliveries   every message the SMTP server accepted from a seller, as the
                 prospect received it (the server's log, then the prospect's
                 Dovecot INBOX): Message-ID, subject, step, pixel and link
    answers      every reply, out-of-office, bounce and delay notice injected,
                 and the delivery it answers
    hits         every pixel and click request, and what came back: acknowledged
                 (200 / 302), shed (`X-Sightline-Hit: shed`), refused, or no answer

From these alone it derives what the run must end with (`expected_tasks`,
`expected_engagement`): a Task per delivered step, reply and bounce on the
prospect's Contact or Lead; each sent email's open and click counters from
the acknowledged hits. Checking the product against its own tables would
pass whatever the product forgot consistently.

Engagement is made computable by the load's shape: a delivered email gets
opens only or clicks only (its `role`), and every hit comes later than the
product's scanner window after delivery, as a person's would. Events are
counted once per 10-minute bucket (`worker.events`), so a hit whose request
spanned a bucket boundary may count in either: the expectation is a range.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from worker.matching.msgid import normalize_msgid

BUCKET_SECONDS = 600  # worker.events: OPEN_BUCKET_SECONDS, CLICK_BUCKET_SECONDS
_PIXEL = re.compile(r"/o/([A-Za-z0-9_.\-]+)\.gif")
_LINK = re.compile(r"/c/([A-Za-z0-9_.\-]+)")
CLICK_SHARE = 5  # one delivered email in five gets clicks instead of opens


@dataclass
class Prospect:
    email: str
    sequence: int  # index into the run's sequences
    outcome: str  # reply, auto_reply, bounce, delayed, none
    who_id: str  # the Contact or Lead the harness created in the org
    enrollment_id: int | None = None


@dataclass(frozen=True)
class Delivery:
    """One message the SMTP server accepted from a seller, as its recipient got it."""

    message_id: str  # normalised (lower-case, no brackets)
    raw_message_id: str  # as written in the header
    seller: str
    prospect: str
    at: float  # wall clock, when the SMTP server logged it
    subject: str
    step: int  # 1, or 2: the follow-up, which answers step 1 (In-Reply-To)
    raw: bytes
    open_path: str | None
    click_path: str | None

    @property
    def role(self) -> str:
        """ "click" or "open": which kind of hit this email gets (see the module docstring)."""
        return "click" if zlib.crc32(self.message_id.encode()) % CLICK_SHARE == 0 else "open"


@dataclass(frozen=True)
class Answer:
    rfc_id: str  # the answer's own Message-ID, normalised
    outcome: str
    prospect: Prospect
    answers: Delivery  # the step-1 delivery it answers
    subject: str
    at: float


@dataclass
class Hit:
    marker: str
    kind: str  # open, click
    delivery: str  # the delivery's message id
    started: float = 0.0
    status: int | None = None
    error: str | None = None
    finished: float = 0.0
    shed: bool = False

    @property
    def acknowledged(self) -> bool:
        return (self.kind == "open" and self.status == 200) or (
            self.kind == "click" and self.status == 302
        )

    @property
    def fate_unknown(self) -> bool:
        """Sent, and no answer came back: the product may or may not have kept it."""
        return self.status is None


@dataclass(frozen=True)
class Range:
    low: int
    high: int

    def holds(self, value: int) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass
class Ledger:
    prospects: list[Prospect] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prospect(self, email: str) -> Prospect | None:
        return next((p for p in self.prospects if p.email == email), None)

    def delivered(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def steps_of(self, email: str) -> dict[int, list[Delivery]]:
        found: dict[int, list[Delivery]] = defaultdict(list)
        for delivery in self.delivered():
            if delivery.prospect == email:
                found[delivery.step].append(delivery)
        return found

    # -- what the org must hold -----------------------------------------------------

    def expected_tasks(self) -> Counter[tuple[str, str]]:
        """(WhoId, Subject) of every Task owed: one per delivered step, reply and bounce.

        A step delivered twice (a duplicate send) still owes one Task: the
        duplicate is counted once, under sends.
        """
        owed: Counter[tuple[str, str]] = Counter()
        for prospect in self.prospects:
            for step, copies in self.steps_of(prospect.email).items():
                del step
                owed[(prospect.who_id, f"Email: {copies[0].subject}")] = 1
        for answer in self.answers.values():
            who = answer.prospect.who_id
            if answer.outcome == "reply":
                owed[(who, f"Reply: {answer.subject}")] = 1
            elif answer.outcome == "bounce":
                owed[(who, f"Email bounced: {answer.answers.subject}")] = 1
        return owed

    def expected_engagement(self) -> dict[str, tuple[Range, Range]]:
        """Delivery message id → (opens, clicks) its Task must count, from the hits alone.

        Only acknowledged hits must count; a hit that got no answer at all may
        have been kept, so it widens the upper bound. A refused hit (503) was
        promised not kept.
        """
        by_delivery: dict[str, list[Hit]] = defaultdict(list)
        with self.lock:
            for hit in self.hits:
                by_delivery[hit.delivery].append(hit)
        expected: dict[str, tuple[Range, Range]] = {}
        for delivery in self.delivered():
            hits = by_delivery.get(delivery.message_id, [])
            opens = _buckets([h for h in hits if h.kind == "open"])
            clicks = _buckets([h for h in hits if h.kind == "click"])
            if clicks.high:
                # A click on an email with no counted open records an inferred open.
                inferred = Range(min(1, clicks.low), 1)
                opens = Range(max(opens.low, inferred.low), opens.high + 1)
            expected[delivery.message_id] = (opens, clicks)
        return expected


def _bucket(at: float) -> int:
    return int(at) // BUCKET_SECONDS


def _buckets(hits: list[Hit]) -> Range:
    """How many distinct 10-minute buckets these hits' events fall in: at least, at most."""
    certain: set[int] = set()
    either: list[set[int]] = []
    possible: set[int] = set()
    for hit in hits:
        if not (hit.acknowledged or hit.fate_unknown) or hit.shed:
            continue
        spans = {_bucket(hit.started), _bucket(hit.finished or time.time())}
        possible |= spans
        if not hit.acknowledged:
            continue
        if len(spans) == 1:
            certain |= spans
        else:
            either.append(spans)
    low = len(certain) + (1 if not certain and either else 0)
    return Range(low, len(possible))


# -- reading what the SMTP server delivered ---------------------------------------------


def html_of(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload: Any = part.get_payload(decode=True)
            charset = part.get_content_charset() or "utf-8"
            return bytes(payload).decode(charset, errors="replace")
    return ""


def read_delivery(raw: bytes, seller: str, prospect: str, at: float, message_id: str) -> Delivery:
    parsed = message_from_bytes(raw)
    html = html_of(parsed)
    pixel = _PIXEL.search(html)
    link = _LINK.search(html)
    return Delivery(
        message_id=normalize_msgid(message_id) or message_id,
        raw_message_id=message_id,
        seller=seller,
        prospect=prospect,
        at=at,
        subject=str(parsed.get("Subject", "")),
        step=2 if parsed.get("In-Reply-To") else 1,
        raw=raw,
        open_path=f"/o/{pixel.group(1)}.gif" if pixel else None,
        click_path=f"/c/{link.group(1)}" if link else None,
    )


class DeliveryWatcher:
    """Follows the SMTP server's log; each new message from a seller is read back from
    its recipient's INBOX (the server delivers before it logs) into the ledger."""

    def __init__(self, ledger: Ledger, smtp: Any, dovecot: Any, sellers: set[str]) -> None:
        self.ledger = ledger
        self.smtp = smtp
        self.dovecot = dovecot
        self.sellers = sellers
        self.seen = 0
        self.problems: list[str] = []
        self.polling = threading.Lock()

    def poll(self) -> int:
        """Read what was delivered since the last poll. Returns how many were new."""
        with self.polling:
            return self._poll()

    def _poll(self) -> int:
        entries = self.smtp.sent_log()
        new = entries[self.seen :]
        added = 0
        for entry in new:
            self.seen += 1
            if entry.mail_from not in self.sellers or not entry.message_id:
                continue
            for rcpt in entry.rcpt_tos:
                raw = self._find(rcpt, entry.message_id)
                if raw is None:
                    self.problems.append(f"{entry.message_id} logged but not in {rcpt}'s INBOX")
                    continue
                delivery = read_delivery(raw, entry.mail_from, rcpt, entry.time, entry.message_id)
                with self.ledger.lock:
                    self.ledger.deliveries.append(delivery)
                added += 1
        return added

    def _find(self, rcpt: str, message_id: str) -> bytes | None:
        wanted = normalize_msgid(message_id)
        for raw in self.dovecot.messages(rcpt):
            if normalize_msgid(str(message_from_bytes(raw).get("Message-ID", ""))) == wanted:
                return bytes(raw)
        return None

    def follow(self, stop: threading.Event, every: float = 0.3) -> None:
        while not stop.is_set():
            self.poll()
            stop.wait(every)
