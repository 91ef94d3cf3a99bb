"""The content library pages: upload, progress, settings, charts, recipients' links;
rename, replace and delete (`web.documents.manage`, shared with the API)."""

from __future__ import annotations

from datetime import UTC, datetime, time

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from werkzeug.exceptions import RequestEntityTooLarge

from config import get_settings
from core.models import (
    Document,
    DocumentLink,
    DocumentPage,
    DocumentPageView,
    DocumentVisit,
    MessageDocument,
    Team,
    User,
    utcnow,
)
from web.auth import current_user, login_required, protect
from web.db import db
from web.documents import manage
from web.documents.charts import duration, seconds_per_page_svg
from web.documents.common import (
    PLAN_MESSAGE,
    PROCESSING,
    UploadError,
    counted,
    create_document,
    document_download_note,
    enqueue_processing,
    has_plan,
    link_state,
    megabytes,
    recipients,
    seconds_per_page,
    seconds_per_page_by_link,
    team_document,
    visit_summary,
)
from web.documents.viewer import send_page_image

bp = Blueprint("library", __name__)
protect(bp)

ACCEPT = ".pdf,.doc,.docx,.ppt,.pptx,.odt,.odp"


@bp.app_template_filter("duration")
def _duration(seconds: float) -> str:
    return duration(seconds)


@bp.app_template_filter("filesize")
def _filesize(size: int) -> str:
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KB"
    return megabytes(size)


def _user() -> User:
    user = current_user()
    assert user is not None
    return user


def _team_or_none() -> Team | None:
    """The user's team if it has the feature (else None: show the explanation)."""
    team = db().get_one(Team, _user().team_id)
    return team if has_plan(team) else None


def _plan_page() -> ResponseReturnValue:
    return render_template("documents/plan.html", message=PLAN_MESSAGE), 403


def _document_or_404(document_id: int) -> Document:
    document = team_document(db(), _user().team_id, document_id)
    if document is None:
        abort(404)
    return document


def _library(error: str | None = None, status: int = 200) -> ResponseReturnValue:
    user = _user()
    documents = (
        db()
        .scalars(
            select(Document)
            .where(Document.team_id == user.team_id, Document.deleted_at.is_(None))
            .order_by(Document.created_at.desc(), Document.id.desc())
            .limit(200)
        )
        .all()
    )
    summaries = {d.id: visit_summary(db(), d.id) for d in documents}
    return (
        render_template(
            "documents/library.html",
            documents=documents,
            summaries=summaries,
            processing=PROCESSING,
            error=error,
            accept=ACCEPT,
            max_size=megabytes(get_settings().documents.max_bytes),
            max_pages=get_settings().documents.max_pages,
        ),
        status,
    )


@bp.get("/documents")
@login_required
def index() -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    return _library()


@bp.post("/documents")
@login_required
def upload() -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    request.max_content_length = get_settings().documents.max_bytes + 1024 * 1024
    try:
        upload_file = request.files.get("file")
    except RequestEntityTooLarge:
        limit = megabytes(get_settings().documents.max_bytes)
        return _library(f"That file is larger than {limit}, the most Sightline takes.", 413)
    if upload_file is None or not upload_file.filename:
        return _library("Choose a file to upload.", 422)
    try:
        document = create_document(db(), _user(), upload_file.stream, upload_file.filename)
    except UploadError as exc:
        return _library(str(exc), exc.status)
    db().commit()
    enqueue_processing(document.id)
    return redirect(url_for("library.detail", document_id=document.id), 303)


@bp.get("/documents/<int:document_id>/status")
@login_required
def status(document_id: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        return jsonify({"error": {"code": "plan_required", "message": PLAN_MESSAGE}}), 403
    document = _document_or_404(document_id)
    return jsonify(
        {
            "id": document.id,
            "status": document.status,
            "progress": document.progress,
            "error": document.error,
            "page_count": document.page_count,
        }
    )


@bp.get("/documents/<int:document_id>")
@login_required
def detail(document_id: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    document = _document_or_404(document_id)
    pages = (
        db()
        .scalars(
            select(DocumentPage)
            .where(DocumentPage.document_id == document.id)
            .order_by(DocumentPage.number)
        )
        .all()
    )
    values = seconds_per_page(db(), document)
    summary = visit_summary(db(), document.id)
    rows = recipients(db(), document)
    per_link = seconds_per_page_by_link(db(), document)
    charts = {
        row.link.id: seconds_per_page_svg(
            per_link.get(row.link.id, []), f"Seconds per page for {row.name or row.email}"
        )
        for row in rows
        if row.summary.visits
    }
    return render_template(
        "documents/detail.html",
        document=document,
        download_note=document_download_note(document),
        pages=pages,
        summary=summary,
        chart=seconds_per_page_svg(values, f"Seconds spent on each page of {document.name}")
        if document.page_count
        else None,
        values=values,
        rows=rows,
        charts=charts,
        processing=PROCESSING,
        in_steps=db().scalar(
            select(func.count())
            .select_from(MessageDocument)
            .where(MessageDocument.document_id == document.id, MessageDocument.step_id.is_not(None))
        ),
    )


@bp.get("/documents/<int:document_id>/recipients/<int:link_id>")
@login_required
def recipient(document_id: int, link_id: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    document = _document_or_404(document_id)
    row = next((r for r in recipients(db(), document) if r.link.id == link_id), None)
    if row is None:
        abort(404)
    visits = (
        db()
        .scalars(
            select(DocumentVisit)
            .where(DocumentVisit.link_id == link_id)
            .order_by(DocumentVisit.started_at.desc())
            .limit(200)
        )
        .all()
    )
    per_visit: dict[int, dict[int, float]] = {}
    for visit_id, page, ms in db().execute(
        select(DocumentPageView.visit_id, DocumentPageView.page, DocumentPageView.ms).where(
            DocumentPageView.visit_id.in_([v.id for v in visits] or [0])
        )
    ):
        per_visit.setdefault(int(visit_id), {})[int(page)] = round(int(ms) / 1000, 1)
    values = seconds_per_page(db(), document, link_id)
    return render_template(
        "documents/recipient.html",
        document=document,
        row=row,
        visits=visits,
        per_visit=per_visit,
        counted_ids={
            int(i)
            for i in db().scalars(
                select(DocumentVisit.id).where(DocumentVisit.link_id == link_id, counted())
            )
        },
        chart=seconds_per_page_svg(values, f"Seconds per page for {row.name or row.email}"),
        values=values,
    )


def _form_bool(name: str) -> bool:
    return request.form.get(name) in ("on", "1", "true", "yes")


@bp.post("/documents/<int:document_id>/settings")
@login_required
def settings(document_id: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    document = _document_or_404(document_id)
    raw_days = (request.form.get("expires_after_days") or "").strip()
    if raw_days:
        if not raw_days.isdigit() or not 1 <= int(raw_days) <= 3650:
            flash("Link expiry: enter a number of days from 1 to 3650, or leave it empty.", "error")
            return redirect(url_for("library.detail", document_id=document.id), 303)
        document.expires_after_days = int(raw_days)
    else:
        document.expires_after_days = None
    document.allow_download = _form_bool("allow_download")
    document.updated_at = utcnow()
    db().commit()
    flash("Saved. New links use these settings.", "ok")
    return redirect(url_for("library.detail", document_id=document.id), 303)


@bp.post("/documents/links/<int:link_id>")
@login_required
def update_link(link_id: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    link = db().get(DocumentLink, link_id)
    if link is None or link.team_id != _user().team_id:
        abort(404)
    action = request.form.get("action")
    if action == "revoke":
        link.revoked_at = link.revoked_at or utcnow()
    elif action == "restore":
        link.revoked_at = None
    elif action == "save":
        link.allow_download = _form_bool("allow_download")
        raw = (request.form.get("expires_on") or "").strip()
        if raw:
            try:
                day = datetime.strptime(raw, "%Y-%m-%d").date()
            except ValueError:
                flash("Expiry date: use the form YYYY-MM-DD.", "error")
                return redirect(url_for("library.detail", document_id=link.document_id), 303)
            link.expires_at = datetime.combine(day, time(23, 59, 59), tzinfo=UTC)
        else:
            link.expires_at = None
    else:
        abort(400, description="Unknown action.")
    db().commit()
    flash(f"Link {link_state(link)}.", "ok")
    return redirect(url_for("library.detail", document_id=link.document_id), 303)


@bp.post("/documents/<int:document_id>/rename")
@login_required
def rename_document(document_id: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    document = _document_or_404(document_id)
    try:
        manage.rename(document, request.form.get("name") or "")
    except manage.ManageError as exc:
        flash(str(exc), "error")
        return redirect(url_for("library.detail", document_id=document.id), 303)
    db().commit()
    flash(f"Renamed: recipients now see “{document.name}”.", "ok")
    return redirect(url_for("library.detail", document_id=document.id), 303)


@bp.post("/documents/<int:document_id>/replace")
@login_required
def replace_document(document_id: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        return _plan_page()
    document = _document_or_404(document_id)
    request.max_content_length = get_settings().documents.max_bytes + 1024 * 1024
    back = redirect(url_for("library.detail", document_id=document.id), 303)
    try:
        upload_file = request.files.get("file")
    except RequestEntityTooLarge:
        limit = megabytes(get_settings().documents.max_bytes)
        flash(f"That file is larger than {limit}, the most Sightline takes.", "error")
        return back
    if upload_file is None or not upload_file.filename:
        flash("Choose the new file to replace it with.", "error")
        return back
    try:
        manage.replace(db(), document, upload_file.stream, upload_file.filename)
    except (UploadError, manage.ManageError) as exc:
        flash(str(exc), "error")
        return back
    db().commit()
    enqueue_processing(document.id)
    flash(
        f"Replaced: version {document.version} is being prepared. The links already sent "
        "keep working and show it once it is ready.",
        "ok",
    )
    return back


@bp.route("/documents/<int:document_id>/delete", methods=["GET", "POST"])
@login_required
def delete_document(document_id: int) -> ResponseReturnValue:
    """GET asks the team to confirm (what recipients will see); POST deletes."""
    if _team_or_none() is None:
        return _plan_page()
    document = _document_or_404(document_id)
    if request.method == "GET":
        return render_template(
            "documents/delete.html",
            document=document,
            links=len(recipients(db(), document)),
            in_steps=manage.steps_using(db(), document),
        )
    try:
        manage.remove(db(), document)
    except manage.ManageError as exc:
        flash(str(exc), "error")
        return redirect(url_for("library.detail", document_id=document.id), 303)
    db().commit()
    flash(f"Deleted {document.name}. Its links now say it was removed.", "ok")
    return redirect(url_for("library.index"), 303)


@bp.get("/documents/<int:document_id>/p<int:number>-<int:width>.jpg")
@login_required
def preview_image(document_id: int, number: int, width: int) -> ResponseReturnValue:
    if _team_or_none() is None:
        abort(403)
    return send_page_image(_document_or_404(document_id), number, width)
