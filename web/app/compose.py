"""Compose and send a one-off email: the form, its checks, and the stored email.

Owns `/emails/new` (the `compose` blueprint; the lists and one email are
`web.app.emails`'s). From (a connected mailbox), To and CC ("Dana Scully
<dana@acme.test>" names a new prospect), subject and a rich-text body (sanitized
with the allow-list of `core.templates`), placeholders filled from the first To
recipient — a missing value stops the send with an error on the field, never a
gap or raw braces — content from the library as tracked links (team plans), plain
files as ordinary MIME attachments (never tracked), tracking on or off for this
email, send now or at a chosen time. The email is stored, then claimed and
delivered by `worker.sequences.oneoff` through the sequence engine's own
hand-over, so tracking, document links and Salesforce logging work the same way;
sending now queues that job by name (`oneoff.request_send`).

Nothing typed is lost: a form with an error comes back with every value, and
files already chosen are kept (in Redis for 30 minutes) and listed, so they need
not be chosen again.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formataddr, getaddresses
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError
from sqlalchemy import select

from core.erasure import ERASED_MESSAGE, erased_addresses
from core.header_text import flatten_header_text, header_text_problem
from core.models import (
    Document,
    DocumentStatus,
    EmailTemplate,
    OneOffAttachment,
    OneOffEmail,
    OneOffStatus,
    Plan,
    Prospect,
    utcnow,
)
from core.redis import get_redis
from core.templates import render, values_for
from web.api.schemas import check_email
from web.app.common import (
    FormErrors,
    app_blueprint,
    parse_local_datetime,
    team,
    team_id,
    user,
)
from web.app.email_templates import team_templates
from web.app.preview import (
    build_preview,
    clean_content,
    person_for,
    placeholder_help,
    sender_for,
    team_mailboxes,
)
from web.app.prospects import upsert_prospect
from web.auth import login_required
from web.db import db
from worker.sequences import oneoff

bp = app_blueprint("compose", __name__)
log = logging.getLogger(__name__)

MAX_RECIPIENTS = 20
# The whole form must fit Flask's 10 MiB request limit; base64 makes a sent file 4/3 larger.
ATTACHMENTS_LIMIT = 8 * 1024 * 1024
KEPT_SECONDS = 1800
KEPT_KEY = "sightline:compose:{team}:{user}:{token}"
MAX_SCHEDULE_DAYS = 365


def _library() -> list[Document]:
    if team().plan != Plan.TEAM:
        return []
    return list(
        db().scalars(
            select(Document)
            .where(
                Document.team_id == team_id(),
                Document.status == DocumentStatus.READY,
                Document.deleted_at.is_(None),
            )
            .order_by(Document.name)
            .limit(200)
        )
    )


def _kept_key(token: str) -> str:
    return KEPT_KEY.format(team=team_id(), user=user().id, token=token)


def _kept_files(tokens: list[str]) -> list[dict[str, Any]]:
    """Files chosen in an earlier try of this form (token, name, type, size, data)."""
    out = []
    for token in dict.fromkeys(tokens):
        if not token.isascii() or len(token) > 64:
            continue
        raw = get_redis().hgetall(_kept_key(token))
        if not raw:
            continue
        meta = json.loads(raw[b"meta"])
        data = raw[b"data"]
        out.append({"token": token, **meta, "data": data if isinstance(data, bytes) else b""})
    return out


def _keep(name: str, content_type: str, data: bytes) -> str:
    token = secrets.token_urlsafe(12)
    key = _kept_key(token)
    meta = json.dumps({"name": name, "type": content_type, "size": len(data)})
    pipe = get_redis().pipeline()
    pipe.hset(key, mapping={"meta": meta, "data": data})
    pipe.expire(key, KEPT_SECONDS)
    pipe.execute()
    return token


def clean_filename(raw: str | None) -> str:
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    # Controls and format characters go, and line/paragraph separators too: the name
    # is written into the attachment's Content-Disposition header.
    name = "".join(
        ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in "\u2028\u2029"
    ).strip()
    return (name or "attachment")[:255]


def _parse_recipients(
    errors: FormErrors, field: str, label: str, raw: str
) -> list[tuple[str, str]]:
    """(display name, address) pairs, in order, without repeats; errors name the field."""
    out: list[tuple[str, str]] = []
    if not raw.strip():
        return out
    pieces = getaddresses([raw.replace(";", ",")])
    for name, address in pieces:
        if not address.strip():
            continue
        try:
            checked = check_email(address).lower()
        except ValueError:
            errors.add(field, f"{label}: “{address}” is not a valid email address.")
            return []
        if (problem := header_text_problem(name)) is not None:
            errors.add(field, f"{label}: the name given for {checked} {problem}.")
            return []
        if checked not in [a for _, a in out]:
            out.append((name.strip(), checked))
    if not out:
        errors.add(field, f"{label}: no email address found in “{raw.strip()}”.")
    return out


def _blocked_addresses(errors: FormErrors, field: str, label: str, addresses: list[str]) -> None:
    if not addresses:
        return
    for address in sorted(erased_addresses(db(), team_id(), addresses)):
        errors.add(field, f"{label}: {address}: {ERASED_MESSAGE}; remove them.")
    for prospect in db().scalars(
        select(Prospect).where(Prospect.team_id == team_id(), Prospect.email.in_(addresses))
    ):
        if prospect.opted_out_at is not None:
            errors.add(
                field,
                f"{label}: {prospect.email} opted out on {prospect.opted_out_at:%Y-%m-%d}; "
                "remove them.",
            )
        elif prospect.undeliverable_at is not None:
            errors.add(
                field, f"{label}: {prospect.email} is undeliverable (a hard bounce); remove them."
            )


def _form_values() -> dict[str, Any]:
    form = request.form
    return {
        "mailbox_id": form.get("mailbox_id", ""),
        "to": form.get("to", ""),
        "cc": form.get("cc", ""),
        "subject": form.get("subject", ""),
        "body_html": form.get("body_html", ""),
        "tracked": bool(form.get("tracked")),
        "documents": form.getlist("documents"),
        "when": form.get("when", "now"),
        "send_at": form.get("send_at", ""),
        "tz_offset": form.get("tz_offset", ""),
        "template_id": form.get("template_id", ""),
    }


def _initial_values() -> dict[str, Any]:
    values: dict[str, Any] = {
        "mailbox_id": "",
        "to": request.args.get("to", ""),
        "cc": "",
        "subject": "",
        "body_html": "",
        "tracked": team().tracking_enabled,
        "documents": [],
        "when": "now",
        "send_at": "",
        "tz_offset": "",
        "template_id": "",
    }
    template_id = request.args.get("template", "")
    if template_id.isdigit():
        template = db().get(EmailTemplate, int(template_id))
        if template is not None and template.team_id == team_id():
            values.update(
                subject=template.subject, body_html=template.body_html, template_id=template_id
            )
    again = request.args.get("again", "")
    if again.isdigit():
        earlier = db().get(OneOffEmail, int(again))
        if earlier is not None and earlier.team_id == team_id():
            values.update(
                mailbox_id=str(earlier.mailbox_id),
                to=", ".join(earlier.to_addrs),
                cc=", ".join(earlier.cc_addrs),
                subject=earlier.subject,
                body_html=earlier.body_html,
                tracked=earlier.tracked,
                documents=[str(d) for d in earlier.document_ids or []],
            )
    return values


def _compose_page(
    values: dict[str, Any],
    errors: FormErrors,
    kept: list[dict[str, Any]],
    status: int = 200,
) -> ResponseReturnValue:
    mailboxes = team_mailboxes()
    mailbox = next((m for m in mailboxes if str(m.id) == str(values["mailbox_id"])), None)
    mailbox = mailbox or (mailboxes[0] if mailboxes else None)
    preview = build_preview(
        str(values["subject"]), str(values["body_html"]), person_for(str(values["to"])), mailbox
    )
    return (
        render_template(
            "app/compose.html",
            values=values,
            errors=errors,
            mailboxes=mailboxes,
            mailbox_options=[(m.id, m.email) for m in mailboxes],
            chosen_mailbox=mailbox,
            preview=preview,
            templates=team_templates(),
            library=_library(),
            team_plan=team().plan == Plan.TEAM,
            team_tracking=team().tracking_enabled,
            kept=kept,
            placeholders=placeholder_help(),
            attachments_limit_mb=ATTACHMENTS_LIMIT // (1024 * 1024),
        ),
        status,
    )


@bp.get("/emails/new")
@login_required
def compose() -> ResponseReturnValue:
    return _compose_page(_initial_values(), FormErrors(), [])


def _send_time(errors: FormErrors, values: dict[str, Any], now: datetime) -> datetime:
    if values["when"] != "later":
        return now
    try:
        send_at = parse_local_datetime(str(values["send_at"]), str(values["tz_offset"]))
    except ValueError:
        errors.add("send_at", "Send at: choose a date and time.")
        return now
    if send_at <= now + timedelta(seconds=30):
        errors.add("send_at", "Send at: choose a time in the future (or send it now).")
    elif send_at > now + timedelta(days=MAX_SCHEDULE_DAYS):
        errors.add("send_at", f"Send at: at most {MAX_SCHEDULE_DAYS} days ahead.")
    return send_at


@bp.post("/emails/new")
@login_required
def send() -> ResponseReturnValue:
    values = _form_values()
    errors = FormErrors()
    now = utcnow()
    # Files first: whatever happens next, they are kept for the next try.
    kept = _kept_files(request.form.getlist("kept"))
    for upload in request.files.getlist("attachments"):
        if not upload or not upload.filename:
            continue
        data = upload.read()
        name = clean_filename(upload.filename)
        content_type = (
            upload.mimetype
            if upload.mimetype and upload.mimetype != "application/octet-stream"
            else (mimetypes.guess_type(name)[0] or "application/octet-stream")
        )
        if not data:
            errors.add("attachments", f"Attachments: {name} is empty.")
            continue
        kept.append(
            {
                "token": _keep(name, content_type, data),
                "name": name,
                "type": content_type,
                "size": len(data),
                "data": data,
            }
        )
    checked = check_compose(values, kept, errors, now)
    if checked is None or request.form.get("action") == "preview":
        return _compose_page(values, errors, kept, 422 if errors else 200)
    email = create_email(values, checked, kept, now)
    for file in kept:
        get_redis().delete(_kept_key(str(file["token"])))
    if checked.send_at > now:
        flash(f"Scheduled for {checked.send_at:%Y-%m-%d %H:%M} UTC.", "ok")
    # Sent now: no flash, the email's page says what is true (sending, then sent or failed).
    return redirect(url_for("emails.detail", email_id=email.id))


@dataclass(frozen=True)
class Checked:
    """A composed email that passed every check: what `create_email` stores."""

    mailbox_id: int
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    subject: str
    body: str
    documents: list[str]
    send_at: datetime


def check_compose(
    values: dict[str, Any], kept: list[dict[str, Any]], errors: FormErrors, now: datetime
) -> Checked | None:
    """Check a composed email (the form's values, files kept) as the page and the API do.

    Problems go to `errors`, each on its field; None if there were any. The
    signed-in user's team (`web.app.common`, a token's user for the API) owns it.
    """
    total = sum(int(f["size"]) for f in kept)
    if total > ATTACHMENTS_LIMIT:
        errors.add(
            "attachments",
            f"Attachments: {total / 1048576:.1f} MB in all; at most "
            f"{ATTACHMENTS_LIMIT // 1048576} MB. Add large files from the content library instead.",
        )

    mailbox = next((m for m in team_mailboxes() if str(m.id) == values["mailbox_id"]), None)
    if mailbox is None:
        errors.add("mailbox_id", "From: choose one of your team's connected mailboxes.")
    to = _parse_recipients(errors, "to", "To", str(values["to"]))
    if not to and not errors.get("to"):
        errors.add("to", "To: add at least one recipient.")
    cc = [
        pair
        for pair in _parse_recipients(errors, "cc", "Cc", str(values["cc"]))
        if pair[1] not in [a for _, a in to]
    ]
    if len(to) + len(cc) > MAX_RECIPIENTS:
        errors.add("to", f"To: at most {MAX_RECIPIENTS} recipients in all (To and Cc).")
    _blocked_addresses(errors, "to", "To", [a for _, a in to])
    _blocked_addresses(errors, "cc", "Cc", [a for _, a in cc])
    subject = str(values["subject"]).strip()
    body = clean_content(errors, subject, str(values["body_html"]))
    library = {str(d.id): d for d in _library()}
    documents = [d for d in dict.fromkeys(values["documents"]) if d]
    if any(d not in library for d in documents):
        errors.add("documents", "Content: choose documents from your library that are ready.")
    elif documents and not (values["tracked"] and team().tracking_enabled):
        errors.add(
            "documents",
            "Content: library documents go out as tracked links; turn tracking on for this "
            "email, or attach the file instead.",
        )
    send_at = _send_time(errors, values, now)
    first = person_for(formataddr(to[0])) if to else None
    preview = build_preview(subject, body, first, mailbox)
    checkable = first is not None and not errors.get("to")
    if checkable and not errors.get("subject") and not errors.get("body_html") and preview.missing:
        who = first.email if first else "the first recipient"
        for name in preview.missing:
            field = "subject" if f"{name} missing" in preview.subject else "body_html"
            label = "Subject" if field == "subject" else "Body"
            errors.add(
                field,
                f"{label}: {{{{{name}}}}} has no value for {who}. Give it a fallback, e.g. "
                f"{{{{{name}|there}}}}, or fill it in on their prospect page first.",
            )
    values["body_html"] = body if not errors.get("body_html") else values["body_html"]
    if errors:
        return None
    assert mailbox is not None
    return Checked(mailbox.id, to, cc, subject, body, documents, send_at)


def create_email(
    values: dict[str, Any], checked: Checked, kept: list[dict[str, Any]], now: datetime
) -> OneOffEmail:
    """Store a checked email with its files and, when it is due, ask for it to be sent."""
    mailbox_id, to, cc, subject, body = (
        checked.mailbox_id,
        checked.to,
        checked.cc,
        checked.subject,
        checked.body,
    )
    documents, send_at = checked.documents, checked.send_at
    session = db()
    prospects = [upsert_prospect(session, team_id(), a, n or None, None) for n, a in to]
    mailbox = next(m for m in team_mailboxes() if m.id == mailbox_id)
    sender_email, sender_name, signature = sender_for(mailbox)
    filled = values_for(
        prospects[0],
        sender_email=sender_email,
        sender_name=sender_name,
        sender_signature=signature,
        team_id=team_id(),
    )
    template_id = int(values["template_id"]) if str(values["template_id"]).isdigit() else None
    if template_id is not None:
        template = session.get(EmailTemplate, template_id)
        template_id = (
            template.id if template is not None and template.team_id == team_id() else None
        )
    email = OneOffEmail(
        team_id=team_id(),
        user_id=user().id,
        mailbox_id=mailbox_id,
        prospect_id=prospects[0].id,
        template_id=template_id,
        to_addrs=[a for _, a in to],
        cc_addrs=[a for _, a in cc],
        # The subject was checked as typed; a filled-in value (a stored name) may not be.
        subject=flatten_header_text(render(subject, filled).text),
        body_html=render(body, filled, html_mode=True).text,
        # The team's setting is the default the form starts from; the choice made is kept.
        tracked=bool(values["tracked"]),
        document_ids=[int(d) for d in documents],
        status=OneOffStatus.SCHEDULED,
        send_at=send_at,
        created_at=now,
    )
    session.add(email)
    session.flush()
    for file in kept:
        session.add(
            OneOffAttachment(
                email_id=email.id,
                filename=str(file["name"]),
                content_type=str(file["type"]),
                size_bytes=int(file["size"]),
                data=file["data"],
            )
        )
    session.commit()
    log.info(
        "one_off_created email_id=%s team_id=%s recipients=%s scheduled=%s",
        email.id,
        email.team_id,
        len(to) + len(cc),
        send_at > now,
    )
    if send_at <= now:
        try:
            oneoff.request_send(email.id)
        except (RedisError, OSError) as exc:
            # Stored and due: the next cron tick queues it.
            log.warning("one_off_enqueue_failed email_id=%s error=%s", email.id, type(exc).__name__)
    return email
