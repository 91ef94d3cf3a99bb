"""The public viewer: ``/d/<token>``, its page images, beacons and downloads.

Every route starts from the signed link token (no database read for a forged
one) and then the link row: revoked, expired, deleted or not-yet-ready links
get a clear page with the right status (410, 404, 200 "being prepared"), never
an error. Responses are `no-store` (the page) or private (images), send no
referrer, ask not to be indexed, and allow nothing from another origin.
On a team's tracking host (`core.tracking_domains`), only that team's links
open: another team's token there is "not valid", as a forged one is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import (
    Blueprint,
    Response,
    jsonify,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from core.documents.storage import BlobNotFoundError, get_blob_store
from core.documents.tokens import LinkRef, read_link_token, read_visit_token, visit_token
from core.models import (
    Document,
    DocumentLink,
    DocumentPage,
    DocumentStatus,
    DocumentVisit,
    SentMessage,
)
from core.tracking_domains import team_of
from web.db import db
from web.documents import visits
from web.documents.common import download_file, link_state

bp = Blueprint("viewer", __name__)
log = logging.getLogger(__name__)

IMAGE_WIDTHS = (1600, 800, 200)
BEACON_MAX_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


@dataclass(frozen=True)
class Refusal:
    """Why a link cannot be shown, as a page a recipient understands."""

    title: str
    message: str
    status: int
    refresh: int | None = None

    def page(self) -> ResponseReturnValue:
        html = render_template(
            "documents/unavailable.html",
            title=self.title,
            message=self.message,
            refresh=self.refresh,
        )
        return html, self.status


@dataclass(frozen=True)
class Resolved:
    ref: LinkRef
    link: DocumentLink
    document: Document


def _unavailable(title: str, message: str, status: int, refresh: int | None = None) -> Refusal:
    return Refusal(title, message, status, refresh)


def _not_valid() -> Refusal:
    return _unavailable(
        "Link not valid",
        "This link is not valid. It may have been copied incompletely: open it again from "
        "the email.",
        404,
    )


def _on_its_host(link: DocumentLink) -> bool:
    """False when the request came to another team's tracking host."""
    host_team = team_of(db(), request.host)
    return host_team is None or host_team == link.team_id


def _resolve(token: str) -> Resolved | Refusal:
    """The link and document, or the page to show instead."""
    ref = read_link_token(token)
    if ref is None:
        return _not_valid()
    link = db().get(DocumentLink, ref.link_id)
    if (
        link is None
        or link.document_id != ref.document_id
        or link.sent_message_id != ref.sent_message_id
        or link.recipient != ref.recipient
        or not _on_its_host(link)
    ):
        return _not_valid()
    document = db().get_one(Document, link.document_id)
    state = link_state(link)
    if document.deleted_at is not None:
        return _unavailable(
            "Document removed",
            f"This document was removed: the sender deleted {document.name} from their "
            "library, so this link no longer opens it. If you still need it, reply to their "
            "email and ask for it.",
            410,
        )
    if state == "revoked":
        return _unavailable(
            "No longer shared",
            f"The sender has stopped sharing {document.name}. If you still need it, reply to "
            "their email and ask for it.",
            410,
        )
    if state == "expired":
        assert link.expires_at is not None
        return _unavailable(
            "Link expired",
            f"This link to {document.name} expired on {link.expires_at:%d %B %Y}. If you "
            "still need it, reply to the sender's email and ask for a new link.",
            410,
        )
    if document.status == DocumentStatus.FAILED:
        return _unavailable(
            "Not available",
            f"{document.name} cannot be shown. Reply to the sender's email and ask for it.",
            404,
        )
    if document.status != DocumentStatus.READY:
        return _unavailable(
            "Almost ready",
            f"{document.name} is being prepared. This page will refresh in a few seconds.",
            200,
            refresh=5,
        )
    return Resolved(ref, link, document)


@bp.route("/d/<token>", methods=["GET"])
def view(token: str) -> ResponseReturnValue:
    resolved = _resolve(token)
    if isinstance(resolved, Refusal):
        return resolved.page()
    link, document = resolved.link, resolved.document
    visit = None
    if visits.tracking_on(db(), link):
        visit = visits.start_visit(db(), link, db().get_one(SentMessage, link.sent_message_id))
        db().commit()
    own_device = visits.device_of_team(db(), link.team_id) is not None
    visit_value = visit_token(visit.id, link.id) if visit is not None else ""
    pages = (
        db()
        .scalars(
            select(DocumentPage)
            .where(DocumentPage.document_id == document.id)
            .order_by(DocumentPage.number)
        )
        .all()
    )

    def image(number: int, width: int) -> str:
        # The version in the URL: a replaced file's pages are never served from a cache.
        return url_for(
            "viewer.page_image", token=token, number=number, width=width, v=document.version
        )

    return render_template(
        "documents/viewer.html",
        document=document,
        pages=pages,
        image=image,
        own_device=own_device,
        allow_download=link.allow_download and download_file(document) is not None,
        scrubbed=bool(document.active_content),
        download_url=url_for("viewer.download", token=token, v=visit_value or None),
        beacon_url=url_for("viewer.beacon", token=token),
        visit=visit_value,
    )


@bp.get("/d/<token>/p<int:number>-<int:width>.jpg")
def page_image(token: str, number: int, width: int) -> ResponseReturnValue:
    resolved = _resolve(token)
    if isinstance(resolved, Refusal):
        return Response(status=resolved.status if resolved.status != 200 else 404)
    return send_page_image(resolved.document, number, width)


def send_page_image(document: Document, number: int, width: int) -> ResponseReturnValue:
    if width not in IMAGE_WIDTHS or not 1 <= number <= (document.page_count or 0):
        return Response(status=404)
    try:
        chunks = get_blob_store().iter_chunks(document.id, f"p{number}-{width}.jpg")
    except BlobNotFoundError:
        log.error("document_image_missing document_id=%s page=%s", document.id, number)
        return Response(status=404)
    response = Response(stream_with_context(chunks), mimetype="image/jpeg")
    # A version's pages never change once rendered (its URLs carry ?v=<version>); a
    # revoked link stops new fetches, not the cache.
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


def _error(status: int, message: str) -> ResponseReturnValue:
    response = jsonify({"error": {"code": "invalid_request", "message": message}})
    response.status_code = status
    return response


@bp.post("/d/<token>/beacon")
def beacon(token: str) -> ResponseReturnValue:
    request.max_content_length = BEACON_MAX_BYTES
    ref = read_link_token(token)
    if ref is None:
        return _error(404, "link not valid")
    try:
        body: Any = json.loads(request.get_data(cache=False) or b"null")
    except ValueError:
        return _error(400, "the body is not valid JSON")
    visit_ref = read_visit_token(str(body.get("visit", ""))) if isinstance(body, dict) else None
    if visit_ref is None or visit_ref.link_id != ref.link_id:
        return _error(422, "visit: not a visit of this link")
    visit = db().get(DocumentVisit, visit_ref.visit_id)
    link = db().get(DocumentLink, ref.link_id)
    if visit is None or link is None or visit.link_id != link.id or not _on_its_host(link):
        return _error(404, "no such visit")
    document = db().get_one(Document, link.document_id)
    if document.deleted_at is not None or link_state(link) != "active":
        # The link stopped working while the page was open: stop counting.
        return _error(410, "this link no longer works")
    if visit.document_version != document.version:
        # Replaced while the page was open: these page numbers are the old file's.
        return _error(409, "the document was replaced: reload the page to read the new one")
    if not visits.tracking_on(db(), link):
        return Response(status=204)  # tracking was switched off while the page was open
    try:
        report = visits.BeaconReport.parse(body, document.page_count or 0)
    except visits.ReportError as exc:
        return _error(422, str(exc))
    item_id = visits.record_report(db(), visit.id, report, document)
    db().commit()
    if item_id is not None:
        visits.nudge_feed(item_id)
    return Response(status=204)


def _content_disposition(name: str) -> str:
    fallback = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


@bp.get("/d/<token>/download")
def download(token: str) -> ResponseReturnValue:
    resolved = _resolve(token)
    if isinstance(resolved, Refusal):
        return resolved.page()
    link, document = resolved.link, resolved.document
    if not link.allow_download:
        return _unavailable(
            "Download not offered",
            f"The sender has not made {document.name} available for download. You can "
            "still read it online.",
            403,
        ).page()
    offered = download_file(document)
    if offered is None:
        return _no_download_copy(document).page()
    if visits.tracking_on(db(), link):
        visit_ref = read_visit_token(request.args.get("v", ""))
        visit = db().get(DocumentVisit, visit_ref.visit_id) if visit_ref else None
        if visit is None or visit.link_id != link.id:
            # Downloaded without opening the viewer first (or the visit token was lost).
            sent = db().get_one(SentMessage, link.sent_message_id)
            visit = visits.start_visit(db(), link, sent)
        made = visits.record_download(db(), visit, link, document)
        db().commit()
        if made:
            visits.nudge_feed()
    try:
        chunks = get_blob_store().iter_chunks(document.id, offered.blob)
    except BlobNotFoundError:
        log.error("document_download_missing document_id=%s blob=%s", document.id, offered.blob)
        return _unavailable("Not available", f"{document.name} cannot be downloaded.", 404).page()
    response = Response(stream_with_context(chunks), mimetype=offered.content_type)
    response.headers["Content-Disposition"] = _content_disposition(offered.file_name)
    if offered.size is not None:
        response.headers["Content-Length"] = str(offered.size)
    log.info("document_download link_id=%s blob=%s", link.id, offered.blob)
    return response


def _no_download_copy(document: Document) -> Refusal:
    """Downloads are allowed but there is no copy to offer: still being checked, or none."""
    if document.active_content is None:
        return _unavailable(
            "Download being prepared",
            f"The download of {document.name} is being prepared. This page will refresh in "
            "a minute; you can read it online meanwhile.",
            503,
            refresh=60,
        )
    return _unavailable(
        "Download not offered",
        f"{document.name} cannot be offered for download: it holds content that could run "
        "on your computer, which could not be removed. You can still read it online.",
        403,
    )
