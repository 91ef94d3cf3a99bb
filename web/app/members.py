"""The team's people: ``/team/members`` (admins only) and the public ``/join/<token>``.

The members page lists who is in the team (name, email, role, joined, last
sign-in), invites by email, resends and revokes invitations, changes roles
and removes people; the rules and what a removal stops are
`worker.members`', the invitations `web.invitations`'. When no SMTP server
is configured (or it refused), the page shows the invitation link once, to
copy: it is never stored, so it cannot be shown again (resend makes a new one).

``/join/<token>`` is what an invitation links to: anyone holding the link
chooses a name and a password and is signed in as the new member. A link
that was used, revoked, replaced or has expired gets a plain page saying so.

Must never: show a link after the answer that made it, or let a member change
the team's people (`web.roles.admin_required` on every route but /join).
"""

from __future__ import annotations

import logging

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from config import get_settings
from core.models import Role, Team, User, utcnow
from web.app.common import FormErrors, app_blueprint, form_str, team, user
from web.auth import login_required, sign_in
from web.db import db
from web.invitations import (
    Delivery,
    InvitationUnusableError,
    accept,
    accept_problems,
    by_token,
    invitations,
    invite,
    resend,
    revoke,
)
from web.roles import admin_required
from worker import members as team_members
from worker.members import MemberError

bp = app_blueprint("members", __name__)
log = logging.getLogger(__name__)

ROLE_CHOICES = [(Role.MEMBER.value, "Member"), (Role.ADMIN.value, "Admin")]


def _page(
    errors: FormErrors | None = None,
    values: dict[str, str] | None = None,
    delivery: Delivery | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    now = utcnow()
    page = render_template(
        "app/members.html",
        section="members",
        team=team(),
        me=user(),
        people=team_members.members(db(), team().id),
        invitations=invitations(db(), team().id),
        now=now,
        errors=errors or FormErrors(),
        values=values or {"email": "", "role": Role.MEMBER.value},
        delivery=delivery,
        role_choices=ROLE_CHOICES,
        smtp_configured=get_settings().team_mail.smtp is not None,
        invitation_days=get_settings().team_mail.invitation_days,
    )
    return page, status


def _refused(exc: MemberError, values: dict[str, str] | None = None) -> ResponseReturnValue:
    if exc.status == 404:  # another team's id answers exactly like one that does not exist
        abort(404)
    if exc.field is not None and values is not None:
        errors = FormErrors()
        errors.add(exc.field, exc.message)
        return _page(errors, values, status=exc.status)
    flash(exc.message, "error")
    return redirect(url_for("members.index"))


@bp.get("/team/members")
@login_required
@admin_required
def index() -> ResponseReturnValue:
    return _page()


@bp.post("/team/members/invitations")
@login_required
@admin_required
def create_invitation() -> ResponseReturnValue:
    values = {"email": form_str("email", limit=320), "role": form_str("role") or Role.MEMBER}
    try:
        delivery = invite(db(), team().id, values["email"], values["role"], by=user(), now=utcnow())
    except MemberError as exc:
        return _refused(exc, values)
    if delivery.emailed:
        flash(f"Invitation sent to {delivery.invitation.email}.", "success")
        return redirect(url_for("members.index"))
    # The link exists only in this answer: shown now, never stored (no redirect).
    return _page(delivery=delivery, status=201)


@bp.post("/team/members/invitations/<int:invitation_id>/resend")
@login_required
@admin_required
def resend_invitation(invitation_id: int) -> ResponseReturnValue:
    try:
        delivery = resend(db(), team().id, invitation_id, by=user(), now=utcnow())
    except MemberError as exc:
        return _refused(exc)
    if delivery.emailed:
        flash(f"A new invitation link was sent to {delivery.invitation.email}.", "success")
        return redirect(url_for("members.index"))
    return _page(delivery=delivery)


@bp.post("/team/members/invitations/<int:invitation_id>/revoke")
@login_required
@admin_required
def revoke_invitation(invitation_id: int) -> ResponseReturnValue:
    try:
        invitation = revoke(db(), team().id, invitation_id, by=user(), now=utcnow())
    except MemberError as exc:
        return _refused(exc)
    flash(f"The invitation of {invitation.email} was revoked: its link no longer works.", "success")
    return redirect(url_for("members.index"))


@bp.post("/team/members/<int:user_id>/role")
@login_required
@admin_required
def change_role(user_id: int) -> ResponseReturnValue:
    try:
        changed = team_members.change_role(db(), team().id, user_id, form_str("role"), by=user())
    except MemberError as exc:
        return _refused(exc)
    now_is = "an admin" if changed.is_admin else "a member"
    flash(f"{team_members.display_name(changed)} is now {now_is}.", "success")
    if changed.id == user().id and not changed.is_admin:
        return redirect(url_for("feed.page"))
    return redirect(url_for("members.index"))


@bp.post("/team/members/<int:user_id>/remove")
@login_required
@admin_required
def remove(user_id: int) -> ResponseReturnValue:
    me = user()
    try:
        removal = team_members.remove(db(), team().id, user_id, by=me, now=utcnow())
    except MemberError as exc:
        return _refused(exc)
    if removal.user_id == me.id:
        return redirect(url_for("auth.signin"))
    removed = db().get_one(User, removal.user_id)
    flash(
        f"{team_members.display_name(removed)} was removed from the team: "
        f"{len(removal.mailboxes_disconnected)} mailbox(es) disconnected, "
        f"{removal.enrollments_paused} enrolment(s) paused, "
        f"{removal.emails_cancelled} scheduled email(s) cancelled.",
        "success",
    )
    return redirect(url_for("members.index"))


# -- the public page an invitation links to ----------------------------------------------


@bp.route("/join/<token>", methods=["GET", "POST"])
def join(token: str) -> ResponseReturnValue:
    now = utcnow()
    try:
        invitation = by_token(db(), token, now)
    except InvitationUnusableError as exc:
        return _unusable(str(exc))
    errors = FormErrors()
    name = ""
    if request.method == "POST":
        name = form_str("name", limit=300)
        password = request.form.get("password") or ""
        again = request.form.get("password_again") or ""
        for field_name, message in accept_problems(invitation, name, password, again).items():
            errors.add(field_name, message)
        if not errors:
            try:
                joined = accept(db(), token, name, password, now)
            except InvitationUnusableError as exc:
                return _unusable(str(exc))
            return sign_in(joined)
    inviter = db().get(User, invitation.invited_by_id) if invitation.invited_by_id else None
    page = render_template(
        "app/join.html",
        invitation=invitation,
        team_name=db().get_one(Team, invitation.team_id).name,
        inviter=inviter,
        errors=errors,
        name=name,
        token=token,
    )
    return page, 422 if errors else 200


def _unusable(sentence: str) -> ResponseReturnValue:
    page = render_template(
        "error.html", status=410, title="This invitation cannot be used", advice=sentence
    )
    return page, 410
