"""Previews: a subject and body filled in with a real prospect's data, gaps shown.

`build_preview` is what every form with a body shows (templates, sequence
steps, compose): the body sanitized exactly as it will be saved, placeholders
filled from the chosen prospect and sender, and every missing value or unknown
placeholder marked and listed (`core.templates`, preview mode). The result is
shown in a sandboxed ``<iframe srcdoc>`` (no scripts, its own origin), never
inline in the page. `POST /preview` answers the same as JSON for the editor's
live preview.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import getaddresses

from flask import jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from core.header_text import header_text_problem
from core.models import Mailbox, MailboxStatus, Prospect, User
from core.templates import (
    PLACEHOLDERS,
    plain_to_html,
    render,
    sanitize_html,
    unknown_placeholders,
    values_for,
)
from web.app.common import FormErrors, app_blueprint, team_id, user
from web.auth import login_required_json
from web.db import db

bp = app_blueprint("preview", __name__)

PREVIEW_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    "line-height:1.45;margin:12px;color:#1d2733}"
    "mark.missing-value{background:#fde2e1;color:#8a1c14;font-weight:600;"
    "padding:0 2px;border-radius:2px}"
)


@dataclass(frozen=True)
class Preview:
    subject: str
    body_html: str  # the sanitized body, placeholders filled, gaps marked
    missing: tuple[str, ...]
    unknown: tuple[str, ...]
    prospect: Prospect | None
    sender_email: str | None

    @property
    def document(self) -> str:
        """The srcdoc of the preview iframe (escaped by Jinja into the attribute)."""
        return (
            '<!doctype html><html><head><meta charset="utf-8">'
            f"<style>{PREVIEW_STYLE}</style></head><body>{self.body_html}</body></html>"
        )

    @property
    def problems(self) -> list[str]:
        """Sentences for the writer: what would stop this from being sent, and why."""
        who = self.prospect.email if self.prospect else "this prospect"
        out = [
            f"{{{{{name}}}}} has no value for {who}: give it a fallback, e.g. "
            f"{{{{{name}|there}}}}, or fill it in on the prospect."
            for name in self.missing
        ]
        out.extend(f"{u} is not a placeholder we know." for u in self.unknown)
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "document": self.document,
            "missing": list(self.missing),
            "unknown": list(self.unknown),
            "problems": self.problems,
            "prospect": self.prospect.email if self.prospect else None,
        }


def sender_for(mailbox: Mailbox | None) -> tuple[str | None, str | None, str | None]:
    """(address, owner's name, owner's signature) of the mailbox an email would be sent from."""
    if mailbox is None:
        return None, user().name, user().signature
    owner = db().get(User, mailbox.user_id) if mailbox.user_id else None
    return mailbox.email, owner.name if owner else None, owner.signature if owner else None


def team_mailboxes(*, active_only: bool = True) -> list[Mailbox]:
    query = select(Mailbox).where(Mailbox.team_id == team_id()).order_by(Mailbox.email)
    if active_only:
        query = query.where(Mailbox.status == MailboxStatus.ACTIVE)
    return list(db().scalars(query))


def build_preview(
    subject: str, body_html: str, prospect: Prospect | None, mailbox: Mailbox | None
) -> Preview:
    sender_email, sender_name, signature = sender_for(mailbox)
    values = values_for(
        prospect,
        sender_email=sender_email,
        sender_name=sender_name,
        sender_signature=signature,
        team_id=team_id(),
    )
    rendered_subject = render(subject, values, preview=True)
    body = render(sanitize_html(body_html), values, html_mode=True, preview=True)
    missing = tuple(dict.fromkeys(rendered_subject.missing + body.missing))
    unknown = tuple(dict.fromkeys(rendered_subject.unknown + body.unknown))
    return Preview(rendered_subject.text, body.text, missing, unknown, prospect, sender_email)


def find_prospect(raw: str | None) -> Prospect | None:
    """The team's prospect by id or email address, or None."""
    value = (raw or "").strip()
    if not value:
        return None
    query = select(Prospect).where(Prospect.team_id == team_id())
    if value.isdigit():
        query = query.where(Prospect.id == int(value))
    else:
        query = query.where(Prospect.email == value.lower())
    return db().scalar(query)


def person_for(recipients: str) -> Prospect | None:
    """The first address in a To field as a prospect: the team's, or a new one (not saved).

    A new address takes its name from the field ("Dana Scully <dana@acme.test>").
    """
    addresses = [(n, a) for n, a in getaddresses([recipients]) if a]
    if not addresses:
        return None
    name, address = addresses[0]
    found = find_prospect(address)
    if found is not None:
        return found
    return Prospect(team_id=team_id(), email=address.strip().lower(), name=name.strip() or None)


def recent_prospects(limit: int = 50) -> list[Prospect]:
    return list(
        db().scalars(
            select(Prospect)
            .where(Prospect.team_id == team_id())
            .order_by(Prospect.id.desc())
            .limit(limit)
        )
    )


def owned_mailbox(raw: str | None) -> Mailbox | None:
    try:
        mailbox_id = int(raw or "")
    except ValueError:
        return None
    found = db().get(Mailbox, mailbox_id)
    return found if found is not None and found.team_id == team_id() else None


@bp.post("/preview")
@login_required_json
def preview_json() -> ResponseReturnValue:
    """The live preview of a form's subject and body (fields as the form posts them)."""
    form = request.form
    mailbox = owned_mailbox(form.get("mailbox_id"))
    if mailbox is None:
        mailboxes = team_mailboxes()
        mailbox = mailboxes[0] if mailboxes else None
    prospect = find_prospect(form.get("preview_prospect"))
    if prospect is None and form.get("to"):
        prospect = person_for(form.get("to", ""))
    body = form.get("body_html") or ""
    if len(body) > BODY_LIMIT or len(form.get("subject") or "") > SUBJECT_LIMIT:
        error = {"code": "too_large", "message": f"body_html: at most {BODY_LIMIT:,} characters"}
        return jsonify({"error": error}), 413
    result = build_preview(form.get("subject") or "", plain_to_html(body), prospect, mailbox)
    return jsonify(result.as_json())


def placeholder_help() -> list[tuple[str, str]]:
    return list(PLACEHOLDERS.items())


SUBJECT_LIMIT = 998
BODY_LIMIT = 200_000


def clean_content(
    errors: FormErrors, subject: str, body: str, *, subject_required: bool = True
) -> str:
    """Check a subject and body as written; return the body as it will be saved.

    Errors name the field: too long, empty, or a `{{…}}` that is not a placeholder.
    """
    if subject_required and not subject:
        errors.add("subject", "Subject: write a subject.")
    elif len(subject) > SUBJECT_LIMIT:
        errors.add(
            "subject", f"Subject: at most {SUBJECT_LIMIT} characters ({len(subject)} given)."
        )
    elif (problem := header_text_problem(subject)) is not None:
        errors.add("subject", f"Subject: {problem}.")
    else:
        unknown = unknown_placeholders(subject)
        if unknown:
            errors.add("subject", _unknown_message("Subject", unknown))
    if len(body) > BODY_LIMIT:
        errors.add("body_html", f"Body: at most {BODY_LIMIT:,} characters ({len(body):,} given).")
        return body
    cleaned = sanitize_html(plain_to_html(body))
    if not re.sub(r"<[^>]*>|&nbsp;|\s", "", cleaned) and "<img" not in cleaned:
        errors.add("body_html", "Body: write the email.")
        return cleaned
    unknown = unknown_placeholders(cleaned, html_mode=True)
    if unknown:
        errors.add("body_html", _unknown_message("Body", unknown))
    return cleaned


def _unknown_message(field: str, unknown: list[str]) -> str:
    known = ", ".join(f"{{{{{name}}}}}" for name in PLACEHOLDERS)
    return f"{field}: {', '.join(unknown)} is not a placeholder. Use one of {known}."
