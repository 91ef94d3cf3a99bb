"""API v1: the team's email templates.

    GET    /templates?after_id=&limit=   oldest first
    POST   /templates {name, subject, body_html}
    GET    /templates/{id}
    PATCH  /templates/{id} {name?, subject?, body_html?}
    DELETE /templates/{id}                 emails and steps written from it keep their text

Checked exactly as the template form checks (`web.app.email_templates.check_template`:
a name, a subject, a body, only known placeholders) and saved by the same
`save_template`; a refusal names the field with the form's sentence.
"""

from __future__ import annotations

from datetime import datetime

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import Field
from sqlalchemy import select

from core.models import EmailTemplate
from web.api.common import PAGE_DEFAULT, PAGE_MAX, ApiError, id_page, int_arg, parse_body
from web.api.operations import Query, operation
from web.api.routes import owned
from web.api.schemas import Request, Response
from web.app.email_templates import check_template, save_template
from web.app.preview import BODY_LIMIT, SUBJECT_LIMIT
from web.db import db


class TemplateCreate(Request):
    name: str = Field(max_length=1000)
    subject: str = Field(max_length=SUBJECT_LIMIT, description="placeholders allowed")
    body_html: str = Field(max_length=BODY_LIMIT, description="HTML or plain text; sanitised")


class TemplateUpdate(Request):
    name: str | None = Field(default=None, max_length=1000)
    subject: str | None = Field(default=None, max_length=SUBJECT_LIMIT)
    body_html: str | None = Field(default=None, max_length=BODY_LIMIT)


class TemplateOut(Response):
    id: int
    name: str
    subject: str
    body_html: str
    created_at: datetime | None
    updated_at: datetime | None


class TemplateList(Response):
    templates: list[TemplateOut]
    next_after_id: int | None = Field(description="pass as ?after_id= for the next page")


def _checked(template: EmailTemplate | None, name: str, subject: str, body: str) -> EmailTemplate:
    name, body, errors = check_template(name, subject, body)
    if errors:
        fields = dict(errors.items())
        summary = "; ".join(fields.values())
        raise ApiError(422, "invalid_request", summary, fields)
    saved = save_template(template, g.team_id, g.user.id, name, subject, body)
    db().commit()
    return saved


def _out(template: EmailTemplate) -> dict[str, object]:
    return TemplateOut.model_validate(template).model_dump(mode="json")


@operation(
    "GET",
    "/templates",
    summary="The team's email templates, oldest first",
    response=TemplateList,
    query=[Query("after_id", minimum=0), Query("limit", maximum=PAGE_MAX)],
)
def list_templates() -> ResponseReturnValue:
    after_id = int_arg("after_id", default=0, minimum=0) or 0
    limit = int_arg("limit", default=PAGE_DEFAULT, maximum=PAGE_MAX) or PAGE_DEFAULT
    query = select(EmailTemplate).where(EmailTemplate.team_id == g.team_id)
    rows, next_after_id = id_page(query, EmailTemplate.id, after_id, limit)
    return TemplateList(
        templates=[TemplateOut.model_validate(t) for t in rows],
        next_after_id=next_after_id,
    ).model_dump(mode="json")


@operation(
    "POST",
    "/templates",
    summary="Create an email template",
    body=TemplateCreate,
    response=TemplateOut,
    status=201,
    response_description="Created",
    errors={422: "Invalid field (named in error.fields): empty, too long, unknown placeholder"},
)
def create_template() -> ResponseReturnValue:
    body = parse_body(TemplateCreate)
    return _out(_checked(None, body.name, body.subject.strip(), body.body_html)), 201


@operation("GET", "/templates/<int:template_id>", summary="An email template", response=TemplateOut)
def get_template(template_id: int) -> ResponseReturnValue:
    return _out(owned(EmailTemplate, template_id, "template"))


@operation(
    "PATCH",
    "/templates/<int:template_id>",
    summary="Change an email template (what was written from it keeps its text)",
    body=TemplateUpdate,
    response=TemplateOut,
    errors={422: "Invalid field (named in error.fields): empty, too long, unknown placeholder"},
)
def update_template(template_id: int) -> ResponseReturnValue:
    template = owned(EmailTemplate, template_id, "template")
    body = parse_body(TemplateUpdate)
    name = body.name if body.name is not None else template.name
    subject = body.subject.strip() if body.subject is not None else template.subject
    html = body.body_html if body.body_html is not None else template.body_html
    return _out(_checked(template, name, subject, html))


@operation(
    "DELETE",
    "/templates/<int:template_id>",
    summary="Delete an email template (emails and steps written from it keep their text)",
    status=204,
    response_description="Deleted",
)
def delete_template(template_id: int) -> ResponseReturnValue:
    template = owned(EmailTemplate, template_id, "template")
    db().delete(template)
    db().commit()
    return "", 204
