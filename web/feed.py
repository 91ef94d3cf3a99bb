"""The Live Feed: what happened to the team's emails, newest first, live.

Owns the feed's items (one per event: sent, open, click, reply, auto-reply,
bounce, complaint, and a recipient opening, paging through or downloading a
tracked document: "Dana Scully opened pricing.pdf — now on page 4 of 12"),
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

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.models import Enrollment, Event, Prospect, SentMessage, Sequence, TrackingHit
from web.auth import current_user, login_required, login_required_json, protect
from web.db import db

bp = Blueprint("feed", __name__)
protect(bp)

# Recorded by `web.documents.visits` for a person's visits only; their data names the document.
DOCUMENT_KINDS = ("document_view", "document_page", "document_download")
FEED_KINDS = (
    "sent",
    "open",
    "click",
    "reply",
    "auto_reply",
    "bounce",
    "complaint",
    *DOCUMENT_KINDS,
)
PAGE_SIZE = 50
MAX_LIMIT = 200

_LABELS = {
    "sent": "Sent",
    "click": "Clicked",
    "reply": "Replied",
    "auto_reply": "Auto-replied",
    "bounce": "Bounced",
    "complaint": "Marked as spam",
    "document_view": "Opened a document",
    "document_page": "Reading a document",
    "document_download": "Downloaded a document",
}
# What the filter's checkboxes say; a kind not named here shows as its words.
KIND_NAMES = {
    "auto_reply": "auto-reply",
    "document_view": "document opened",
    "document_page": "document page",
    "document_download": "document download",
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


def _label(kind: str, data: dict[str, Any]) -> str:
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
    """What a document event says in the feed, e.g. "Dana opened pricing.pdf — now on page 4".

    Plain text: the page and the stream escape it (names and file names are user input).
    """
    name = document["name"]
    if kind == "document_download":
        return f"{who} downloaded {name}"
    page, pages = document.get("page"), document.get("pages")
    if kind == "document_page" and page:
        of = f" of {pages}" if pages else ""
        return f"{who} opened {name} — now on page {page}{of}"
    return f"{who} opened {name}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _query(team_id: int | None, feed_filter: FeedFilter) -> Select[*tuple[Any, ...]]:
    query: Select[*tuple[Any, ...]] = (
        select(
            Event,
            Prospect.email,
            Prospect.name,
            SentMessage.subject,
            Sequence.id,
            Sequence.name,
        )
        .outerjoin(Prospect, Prospect.id == Event.prospect_id)
        .outerjoin(SentMessage, SentMessage.id == Event.sent_message_id)
        .outerjoin(Enrollment, Enrollment.id == Event.enrollment_id)
        .outerjoin(Sequence, Sequence.id == Enrollment.sequence_id)
    )
    if team_id is not None:
        query = query.where(Event.team_id == team_id)
    if feed_filter.kinds is not None:
        query = query.where(Event.kind.in_(sorted(feed_filter.kinds)))
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
) -> list[dict[str, Any]]:
    """Feed items with ids after `after_id` (and before `before_id`).

    `team_id=None` is for the live stream's shared poller only, which hands each
    item to its own team's subscribers.
    """
    query = _query(team_id, feed_filter or FeedFilter()).where(Event.id > after_id)
    if before_id is not None:
        query = query.where(Event.id < before_id)
    query = query.order_by(Event.id.desc() if newest_first else Event.id).limit(limit)
    items = []
    for event, email, name, subject, sequence_id, sequence_name in session.execute(query):
        data = dict(event.data or {})
        document = _document(event.kind, data)
        who = name or email or data.get("recipient") or "Someone"
        items.append(
            {
                "id": event.id,
                "team_id": event.team_id,
                "kind": event.kind,
                "label": _label(event.kind, data),
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
                "text": document_sentence(event.kind, who, document) if document else None,
            }
        )
    return items


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
    return render_template(
        "feed.html",
        items=items,
        kinds=FEED_KINDS,
        kind_names=KIND_NAMES,
        sequences=team_sequences(db(), user.team_id),
        feed_filter=feed_filter,
        stream_url=f"{url_for('feed.page')}/stream?{stream_query}",
    )


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
