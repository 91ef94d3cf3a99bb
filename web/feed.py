"""The Live Feed: what happened to the team's emails, newest first, live.

Owns the feed's items (one per event: sent, open, click, reply, auto-reply,
bounce, complaint, a tracked document downloaded, and one per reading visit of
a tracked document, updated in place as the reader goes: "Dana Scully is reading
pricing.pdf — page 4 of 12, 2 min", later "Dana Scully read pricing.pdf — 7 of 12
pages, 5 min"),
the page `/feed`, the JSON endpoint `/feed/items` that returns the same items,
and `/feed/messages/<id>/hits`: every hit on one email counted by label (own
devices, proxies, scanners and bots included). The live part (server-sent
events at `/feed/stream`) is served by the ASGI front door (`web.tracking.live`)
from the same `feed_items` query, so it carries the same words.

Must never: return another team's items (every query here is filtered by the
signed-in user's team; the stream filters by team before it sends), or show a
`self` hit as reader activity (those never become events).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.models import (
    DocumentVisit,
    Enrollment,
    Event,
    Prospect,
    SentMessage,
    Sequence,
    TrackingHit,
    utcnow,
)
from web.auth import current_user, login_required, login_required_json, protect
from web.db import db
from web.first_run import checklist, salesforce_connectable
from web.salesforce_connect import start_flow

bp = Blueprint("feed", __name__)
protect(bp)

# Recorded by `web.documents.visits` for a person's visits only; their data names the document.
# A visit is one item, its document_view event's; its document_page events (kept for
# timelines and the API) are folded into it, never items of their own.
DOCUMENT_KINDS = ("document_view", "document_download")
FOLDED_KINDS = ("document_page",)
FEED_KINDS = (
    "sent",
    "open",
    "click",
    "reply",
    "auto_reply",
    "bounce",
    "complaint",
    *DOCUMENT_KINDS,
    "sending_paused",  # the bounce guard paused a mailbox or sequence (its words in data.text)
)
# A visit with no beacon for this long is over (the viewer reports every 10 s while read).
READING_SECONDS = 30
PAGE_SIZE = 50
MAX_LIMIT = 200

_LABELS = {
    "sent": "Sent",
    "click": "Clicked",
    "reply": "Replied",
    "auto_reply": "Auto-replied",
    "bounce": "Bounced",
    "complaint": "Marked as spam",
    "document_view": "Read a document",
    "document_download": "Downloaded a document",
    "sending_paused": "Sending paused",
}
# What the filter's checkboxes say; a kind not named here shows as its words.
KIND_NAMES = {
    "auto_reply": "auto-reply",
    "document_view": "document reading",
    "document_download": "document download",
    "sending_paused": "sending paused",
}


class FeedArgumentError(ValueError):
    """A bad filter; `field` names the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class FeedFilter:
    kinds: frozenset[str] | None = None
    sequence_id: int | None = None

    def matches(self, item: dict[str, Any]) -> bool:
        if self.kinds is not None and item["kind"] not in self.kinds:
            return False
        sequence = item.get("sequence") or {}
        return self.sequence_id is None or sequence.get("id") == self.sequence_id

    def query_string(self) -> str:
        parts = [f"kind={k}" for k in sorted(self.kinds or ())]
        if self.sequence_id is not None:
            parts.append(f"sequence_id={self.sequence_id}")
        return "&".join(parts)


def _int(args: Any, name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FeedArgumentError(name, "expected a whole number") from None
    if value < minimum:
        raise FeedArgumentError(name, f"must be at least {minimum}")
    return value


def parse_filter(args: Any) -> FeedFilter:
    """The filter in query arguments (`kind` repeated or comma-separated, `sequence_id`)."""
    kinds: set[str] = set()
    for raw in args.getlist("kind") if hasattr(args, "getlist") else args.get("kind", []):
        kinds.update(k.strip() for k in str(raw).split(",") if k.strip())
    unknown = sorted(kinds - set(FEED_KINDS))
    if unknown:
        raise FeedArgumentError(
            "kind", f"unknown kind {unknown[0]!r} (one of {', '.join(FEED_KINDS)})"
        )
    return FeedFilter(
        kinds=frozenset(kinds) or None, sequence_id=_int(args, "sequence_id", None, minimum=1)
    )


def _label(kind: str, data: dict[str, Any], document: dict[str, Any] | None = None) -> str:
    if kind == "document_view" and document and (document.get("visit") or {}).get("reading"):
        return "Reading a document"
    if kind != "open":
        return _LABELS.get(kind, kind.replace("_", " ").capitalize())
    if data.get("inferred"):
        return "Opened (seen from a click)"
    if data.get("probable"):
        return "Probably opened (Apple Mail prefetch)"
    if data.get("hit_class") == "google_proxy":
        return "Opened (Gmail, device unknown)"
    return "Opened"


def _document(kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
    if kind not in DOCUMENT_KINDS:
        return None
    return {
        "id": data.get("document_id"),
        "name": data.get("document") or "a document",
        "page": data.get("page"),
        "pages": data.get("pages"),
    }


def document_sentence(kind: str, who: str, document: dict[str, Any]) -> str:
    """What a document item says in the feed, e.g. "Dana is reading pricing.pdf — page 4
    of 12, 2 min" (a visit still going), "Dana read pricing.pdf — 7 of 12 pages, 5 min".

    Plain text: the page and the stream escape it (names and file names are user input).
    """
    name = document["name"]
    if kind == "document_download":
        return f"{who} downloaded {name}"
    visit = document.get("visit")
    if not visit:
        return f"{who} opened {name}"
    pages, took = document.get("pages"), _minutes(visit["seconds"])
    if visit["reading"]:
        of = f" of {pages}" if pages else ""
        return f"{who} is reading {name} — page {visit['page']}{of}, {took}"
    read = visit["pages_read"]
    of = f"{read} of {pages} pages" if pages else f"{read} page{'s' if read != 1 else ''}"
    return f"{who} read {name} — {of}, {took}"


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return "under a minute"
    return f"{int(seconds // 60 + (1 if seconds % 60 >= 30 else 0))} min"


def _visit(row: tuple[Any, ...], now: datetime) -> dict[str, Any] | None:
    """A reading visit's state from its row (current page, pages read, time, still going?)."""
    page, pages_read, total_ms, last_seen_at, ended_at = row
    if last_seen_at is None:
        return None
    reading = ended_at is None and (now - last_seen_at).total_seconds() < READING_SECONDS
    return {
        "page": int(page or 1),
        "pages_read": int(pages_read or 0),
        "seconds": round(int(total_ms or 0) / 1000),
        "reading": reading,
        "last_seen_at": _iso(last_seen_at),
        # Until when "is reading" holds without another beacon: the page turns it into
        # "read" by itself then (a tab closed without a last word).
        "reading_until": _iso(last_seen_at + timedelta(seconds=READING_SECONDS))
        if reading
        else None,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _query(team_id: int | None, feed_filter: FeedFilter) -> Select[*tuple[Any, ...]]:
    query: Select[*tuple[Any, ...]] = (
        select(
            Event,
            Prospect.email,
            Prospect.name,
            SentMessage.subject,
            SentMessage.origin,
            Sequence.id,
            Sequence.name,
            DocumentVisit.current_page,
            DocumentVisit.pages_seen,
            DocumentVisit.total_ms,
            DocumentVisit.last_seen_at,
            DocumentVisit.ended_at,
        )
        .outerjoin(Prospect, Prospect.id == Event.prospect_id)
        .outerjoin(SentMessage, SentMessage.id == Event.sent_message_id)
        .outerjoin(Enrollment, Enrollment.id == Event.enrollment_id)
        .outerjoin(Sequence, Sequence.id == Enrollment.sequence_id)
        .outerjoin(DocumentVisit, DocumentVisit.event_id == Event.id)
    )
    if team_id is not None:
        query = query.where(Event.team_id == team_id)
    if feed_filter.kinds is not None:
        query = query.where(Event.kind.in_(sorted(feed_filter.kinds)))
    else:
        query = query.where(Event.kind.not_in(FOLDED_KINDS))
    if feed_filter.sequence_id is not None:
        query = query.where(Enrollment.sequence_id == feed_filter.sequence_id)
    return query


def feed_items(
    session: Session,
    *,
    team_id: int | None,
    feed_filter: FeedFilter | None = None,
    after_id: int = 0,
    before_id: int | None = None,
    limit: int = PAGE_SIZE,
    newest_first: bool = True,
    ids: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """Feed items with ids after `after_id` (and before `before_id`), or exactly `ids`.

    `team_id=None` is for the live stream's shared poller only, which hands each
    item to its own team's subscribers.
    """
    query = _query(team_id, feed_filter or FeedFilter()).where(Event.id > after_id)
    if before_id is not None:
        query = query.where(Event.id < before_id)
    if ids is not None:
        query = query.where(Event.id.in_(sorted(ids)))
    query = query.order_by(Event.id.desc() if newest_first else Event.id).limit(limit)
    items = []
    now = utcnow()
    for row in session.execute(query):
        event, email, name, subject, origin, sequence_id, sequence_name, *visit_row = row
        data = dict(event.data or {})
        document = _document(event.kind, data)
        if document is not None and event.kind == "document_view":
            document["visit"] = _visit(tuple(visit_row), now)
        # Mail sent from Gmail or Outlook to several people: its activity is the draft's.
        # data["recipient"]: an address where one was recorded; a position (a number)
        # in the mail is never shown as a name.
        recipient = data.get("recipient")
        address = recipient if isinstance(recipient, str) and "@" in recipient else None
        anyone = "A recipient" if origin else "Someone"
        who = name or email or address or anyone
        label = _label(event.kind, data, document)
        items.append(
            {
                "id": event.id,
                "team_id": event.team_id,
                "kind": event.kind,
                "label": label,
                "occurred_at": _iso(event.occurred_at),
                "prospect": {"email": email, "name": name} if email else None,
                "subject": subject or data.get("subject"),
                "sequence": {"id": sequence_id, "name": sequence_name} if sequence_id else None,
                "sent_message_id": event.sent_message_id,
                "hit_class": data.get("hit_class"),
                "probable": bool(data.get("probable")),
                "inferred": bool(data.get("inferred")),
                "url": data.get("url"),
                "from": data.get("from"),
                "document": document,
                "origin": origin,
                "text": _from_client(
                    origin,
                    document_sentence(event.kind, who, document)
                    if document
                    else data.get("text") or (origin and client_sentence(event.kind, who, label)),
                ),
                **_settles(event.kind, who, document, origin),
            }
        )
    return items


# Mail sent from the mail client itself, carrying an add-on's link or pixel.
ORIGIN_NAMES = {"gmail": "Gmail", "outlook": "Outlook"}


def client_sentence(kind: str, who: str, label: str) -> str:
    """An item's sentence when the feed would otherwise show the label and the name apart
    (mail sent from Gmail or Outlook says where it came from, so it needs one)."""
    if kind == "sent":
        return f"Sent to {who}"
    if kind == "open":
        return f"{who} opened the email" if label == "Opened" else f"{who}: {label.lower()}"
    if kind == "click":
        return f"{who} clicked a link"
    if kind == "reply":
        return f"{who} replied"
    return f"{who}: {label.lower()}"


def _from_client(origin: str | None, text: str | None) -> str | None:
    """`text` with "— sent from Gmail" (or Outlook) for mail sent from the mail client."""
    if not origin or not text:
        return text
    return f"{text} — sent from {ORIGIN_NAMES.get(origin, origin)}"


def _settles(
    kind: str, who: str, document: dict[str, Any] | None, origin: str | None = None
) -> dict[str, Any]:
    """For a visit still being read: when it counts as over with no further beacon, and
    what it says then, so the page can turn "is reading" into "read" by itself."""
    visit = (document or {}).get("visit")
    if document is None or not visit or not visit["reading"]:
        return {"reading_until": None, "settled_text": None}
    settled = {**document, "visit": {**visit, "reading": False}}
    return {
        "reading_until": visit["reading_until"],
        "settled_text": _from_client(origin, document_sentence(kind, who, settled)),
    }


def team_sequences(session: Session, team_id: int) -> list[tuple[int, str]]:
    rows = session.execute(
        select(Sequence.id, Sequence.name)
        .where(Sequence.team_id == team_id)
        .order_by(Sequence.name)
    )
    return [(int(i), str(n)) for i, n in rows]


@bp.get("/")
def index() -> ResponseReturnValue:
    # The web app's home: the feed, or the sign-in page.
    return redirect(url_for("feed.page") if current_user() else url_for("auth.signin"))


@bp.get("/feed")
@login_required
def page() -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    try:
        feed_filter = parse_filter(request.args)
    except FeedArgumentError as exc:
        abort(400, description=str(exc))
    items = feed_items(db(), team_id=user.team_id, feed_filter=feed_filter)
    newest = max((i["id"] for i in items), default=0)
    stream_query = "&".join(p for p in (feed_filter.query_string(), f"after={newest}") if p)
    # A new team's empty feed shows what to do first (not a filtered feed that is empty).
    first_steps = (
        checklist(db(), user.team_id)
        if not items and feed_filter == FeedFilter() and not _has_items(user.team_id)
        else None
    )
    return render_template(
        "feed.html",
        first_steps=first_steps,
        salesforce_connectable=salesforce_connectable(),
        message=request.args.get("message"),
        items=items,
        kinds=FEED_KINDS,
        kind_names=KIND_NAMES,
        sequences=team_sequences(db(), user.team_id),
        feed_filter=feed_filter,
        stream_url=f"{url_for('feed.page')}/stream?{stream_query}",
    )


def _has_items(team_id: int) -> bool:
    """Anything ever in the team's feed (a page of items may be empty for other reasons)."""
    found = db().scalar(
        select(Event.id).where(Event.team_id == team_id, Event.kind.in_(FEED_KINDS)).limit(1)
    )
    return found is not None


@bp.post("/feed/connect-salesforce")
@login_required
def connect_salesforce() -> ResponseReturnValue:
    """The checklist's "Connect Salesforce": the same OAuth flow the API starts."""
    user = current_user()
    assert user is not None
    try:
        url = start_flow(user.team_id, user.id, None)
    except ValueError as exc:  # worker.salesforce.connections.ConnectError, a ValueError
        return redirect(url_for("feed.page", message=f"Salesforce could not be connected: {exc}."))
    return redirect(url, code=303)


@bp.get("/feed/items")
@login_required_json
def items_json() -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    try:
        feed_filter = parse_filter(request.args)
        after_id = _int(request.args, "after_id", 0) or 0
        before_id = _int(request.args, "before_id", None, minimum=1)
        limit = min(_int(request.args, "limit", PAGE_SIZE, minimum=1) or PAGE_SIZE, MAX_LIMIT)
    except FeedArgumentError as exc:
        error = {"code": "invalid_request", "message": str(exc), "fields": {exc.field: exc.message}}
        response = jsonify({"error": error})
        response.status_code = 422
        return response
    items = feed_items(
        db(),
        team_id=user.team_id,
        feed_filter=feed_filter,
        after_id=after_id,
        before_id=before_id,
        limit=limit + 1,
    )
    more = len(items) > limit
    items = items[:limit]
    for item in items:
        item.pop("team_id")
    return jsonify({"items": items, "next_before_id": items[-1]["id"] if more and items else None})


@bp.get("/feed/messages/<int(max=9223372036854775807):sent_message_id>/hits")  # a 64-bit id
@login_required_json
def message_hits(sent_message_id: int) -> ResponseReturnValue:
    """Every hit on one sent email, counted by label: what the feed leaves out is here."""
    user = current_user()
    assert user is not None
    sent = db().get(SentMessage, sent_message_id)
    if sent is None or sent.team_id != user.team_id:
        response = jsonify(
            {"error": {"code": "not_found", "message": f"message {sent_message_id} not found"}}
        )
        response.status_code = 404
        return response
    rows = db().execute(
        select(TrackingHit.kind, TrackingHit.hit_class, func.count())
        .where(TrackingHit.sent_message_id == sent.id)
        .group_by(TrackingHit.kind, TrackingHit.hit_class)
    )
    counts: dict[str, dict[str, int]] = {"open": {}, "click": {}}
    for kind, hit_class, count in rows:
        counts.setdefault(str(kind), {})[str(hit_class)] = int(count)
    return jsonify({"sent_message_id": sent.id, "subject": sent.subject, "hits": counts})
