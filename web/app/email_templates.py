"""Email templates: a saved subject and body with placeholders, shared by the team.

Owns `/templates`: the list, creating, editing (with a preview filled in from a
real prospect, gaps shown), deleting. A template is a starting point: using it in
an email or a sequence step copies its subject and body, so editing a template
later never changes what was already written from it.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from core.models import EmailTemplate, utcnow
from web.app.common import FormErrors, app_blueprint, form_str, keyset_page, owned, team_id, user
from web.app.preview import (
    build_preview,
    clean_content,
    find_prospect,
    placeholder_help,
    recent_prospects,
    team_mailboxes,
)
from web.auth import login_required
from web.db import db

bp = app_blueprint("templates", __name__)

NAME_LIMIT = 200


@bp.get("/templates")
@login_required
def index() -> ResponseReturnValue:
    page = keyset_page(
        select(EmailTemplate).where(EmailTemplate.team_id == team_id()), EmailTemplate.id
    )
    return render_template("app/templates.html", page=page)


def _form_page(
    template: EmailTemplate | None, errors: FormErrors, status: int = 200
) -> ResponseReturnValue:
    if request.method == "POST":
        values = {
            "name": form_str("name"),
            "subject": form_str("subject"),
            "body_html": request.form.get("body_html", ""),
        }
    elif template is not None:
        values = {
            "name": template.name,
            "subject": template.subject,
            "body_html": template.body_html,
        }
    else:
        values = {"name": "", "subject": "", "body_html": ""}
    chosen = request.values.get("preview_prospect", "")
    prospects = recent_prospects()
    prospect = find_prospect(chosen) or (prospects[0] if prospects else None)
    mailboxes = team_mailboxes()
    preview = build_preview(
        values["subject"], values["body_html"], prospect, mailboxes[0] if mailboxes else None
    )
    return (
        render_template(
            "app/template_form.html",
            template=template,
            values=values,
            errors=errors,
            preview=preview,
            prospects=prospects,
            chosen=chosen or (prospect.email if prospect else ""),
            placeholders=placeholder_help(),
        ),
        status,
    )


def check_template(name: str, subject: str, body: str) -> tuple[str, str, FormErrors]:
    """The name (spaces folded) and body as they will be saved, and what is wrong with them.

    What the template form and the API (web/api/templates.py) both check.
    """
    errors = FormErrors()
    name = " ".join(name.split())
    if not name:
        errors.add("name", "Name: give the template a name.")
    elif len(name) > NAME_LIMIT:
        errors.add("name", f"Name: at most {NAME_LIMIT} characters ({len(name)} given).")
    return name, clean_content(errors, subject, body), errors


def save_template(
    template: EmailTemplate | None, team: int, user_id: int, name: str, subject: str, body: str
) -> EmailTemplate:
    """Create (`template` None) or overwrite a template with checked values; the caller commits."""
    now = utcnow()
    if template is None:
        template = EmailTemplate(
            team_id=team, user_id=user_id, created_at=now, name=name, subject="", body_html=""
        )
        db().add(template)
    template.name, template.subject, template.body_html, template.updated_at = (
        name,
        subject,
        body,
        now,
    )
    db().flush()
    return template


def _save(template: EmailTemplate | None) -> ResponseReturnValue:
    subject = form_str("subject")
    name, body, errors = check_template(
        form_str("name"), subject, request.form.get("body_html", "")
    )
    if request.form.get("action") == "preview" or errors:
        return _form_page(template, errors, 422 if errors else 200)
    template = save_template(template, team_id(), user().id, name, subject, body)
    db().commit()
    flash(f"Saved template “{template.name}”.", "ok")
    return redirect(url_for("templates.edit", template_id=template.id))


@bp.route("/templates/new", methods=["GET", "POST"])
@login_required
def new() -> ResponseReturnValue:
    if request.method == "POST":
        return _save(None)
    return _form_page(None, FormErrors())


@bp.route("/templates/<int:template_id>", methods=["GET", "POST"])
@login_required
def edit(template_id: int) -> ResponseReturnValue:
    template = owned(EmailTemplate, template_id)
    if request.method == "POST":
        return _save(template)
    return _form_page(template, FormErrors())


@bp.post("/templates/<int:template_id>/delete")
@login_required
def delete(template_id: int) -> ResponseReturnValue:
    template = owned(EmailTemplate, template_id)
    name = template.name
    db().delete(template)
    db().commit()
    flash(f"Deleted template “{name}”. Emails and steps written from it keep their text.", "ok")
    return redirect(url_for("templates.index"))


def team_templates(limit: int = 200) -> list[EmailTemplate]:
    """The team's templates by name, for "start from a template" pickers."""
    return list(
        db().scalars(
            select(EmailTemplate)
            .where(EmailTemplate.team_id == team_id())
            .order_by(EmailTemplate.name)
            .limit(limit)
        )
    )
