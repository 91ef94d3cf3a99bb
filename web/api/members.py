"""API v1: the team's people and invitations (admins only, like the members page).

    GET    /members                               who is in the team, with role and last sign-in
    PATCH  /members/{user_id} {role}              make an admin or a member
    DELETE /members/{user_id}                     remove: mailboxes disconnected, enrolments paused
    GET    /invitations                           not accepted yet: pending, expired, revoked
    POST   /invitations {email, role}             invite: 201; `link` set when it was not emailed
    POST   /invitations/{invitation_id}/resend    a new link and expiry (the old link stops working)
    POST   /invitations/{invitation_id}/revoke    the link stops working

Accepting an invitation is the public page its link opens (/join/<token>): the
invitee chooses a name and a password there, which an API token cannot do
for them. The rules are `worker.members`' and `web.invitations`', the same as
the page's; a member's token gets 403 `admin_only`, naming the team's admins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, field_validator

from core.models import Invitation, utcnow
from web.api.common import ApiError, parse_body
from web.api.operations import operation
from web.api.schemas import Request, check_email
from web.db import db
from web.invitations import Delivery, invitations, invite, resend, revoke
from web.roles import ADMIN_ONLY_ERROR as ADMIN_ONLY
from web.roles import admin_required
from worker import members as team_members
from worker.members import MemberError


class MemberOut(BaseModel):
    id: int
    email: str
    name: str | None
    role: Literal["admin", "member"]
    joined_at: datetime
    last_sign_in_at: datetime | None = Field(description="null: never signed in to the web app")


class MemberList(BaseModel):
    members: list[MemberOut]


class MemberUpdate(Request):
    role: Literal["admin", "member"]


class RemovalOut(BaseModel):
    user_id: int
    mailboxes_disconnected: list[int]
    enrollments_paused: int
    emails_cancelled: int = Field(description="emails they scheduled, not yet claimed")
    tokens_revoked: int


class InvitationCreate(Request):
    email: str = Field(max_length=320)
    role: Literal["admin", "member"] = "member"

    _email = field_validator("email")(check_email)


class InvitationOut(BaseModel):
    id: int
    email: str
    role: Literal["admin", "member"]
    state: Literal["pending", "accepted", "revoked", "expired"]
    sent_at: datetime
    expires_at: datetime
    invited_by_id: int | None


class InvitationSent(InvitationOut):
    emailed: bool = Field(description="true: the link went out by email (SIGHTLINE_SMTP_URL)")
    link: str | None = Field(
        description="the link to send the invitee yourself, when it was not emailed; "
        "shown only in this answer (only its hash is kept)"
    )
    email_error: str | None = Field(description="why the email failed, when a server is set")


class InvitationList(BaseModel):
    invitations: list[InvitationOut]


def _refused(exc: MemberError) -> ApiError:
    fields = {exc.field: exc.message} if exc.field else None
    return ApiError(exc.status, exc.code, exc.message, fields)


def _invitation_out(invitation: Invitation, now: datetime) -> InvitationOut:
    return InvitationOut(
        id=invitation.id,
        email=invitation.email,
        role=invitation.role,
        state=invitation.state(now),
        sent_at=invitation.sent_at,
        expires_at=invitation.expires_at,
        invited_by_id=invitation.invited_by_id,
    )


def _sent(delivery: Delivery, now: datetime) -> InvitationSent:
    base = _invitation_out(delivery.invitation, now).model_dump()
    return InvitationSent(
        **base, emailed=delivery.emailed, link=delivery.link, email_error=delivery.error
    )


@operation(
    "GET",
    "/members",
    summary="List the team's members",
    response=MemberList,
    errors={403: ADMIN_ONLY},
)
@admin_required
def list_members() -> ResponseReturnValue:
    people = team_members.members(db(), g.team_id)
    body = MemberList(
        members=[
            MemberOut(
                id=m.user.id,
                email=m.user.email,
                name=m.user.name,
                role=m.user.role,
                joined_at=m.user.created_at,
                last_sign_in_at=m.last_sign_in_at,
            )
            for m in people
        ]
    )
    return body.model_dump(mode="json")


@operation(
    "PATCH",
    "/members/<int:user_id>",
    summary="Change a member's role",
    body=MemberUpdate,
    response=MemberOut,
    errors={403: ADMIN_ONLY, 409: "The team's only admin cannot become a member (`last_admin`)"},
)
@admin_required
def update_member(user_id: int) -> ResponseReturnValue:
    try:
        team_members.member(db(), g.team_id, user_id)  # another team's id: 404 before the body
        body = parse_body(MemberUpdate)
        changed = team_members.change_role(db(), g.team_id, user_id, body.role, by=g.user)
    except MemberError as exc:
        raise _refused(exc) from None
    people = {m.user.id: m for m in team_members.members(db(), g.team_id)}
    found = people[changed.id]
    return MemberOut(
        id=changed.id,
        email=changed.email,
        name=changed.name,
        role=changed.role,
        joined_at=changed.created_at,
        last_sign_in_at=found.last_sign_in_at,
    ).model_dump(mode="json")


@operation(
    "DELETE",
    "/members/<int:user_id>",
    summary="Remove someone from the team",
    description="Their API tokens are revoked and their sessions end; each mailbox of "
    "theirs is disconnected; every live enrolment of a sequence sending from one is "
    'paused with the reason "paused: <name> was removed from the team"; the emails they '
    "scheduled from one are cancelled. Nothing they made is deleted.",
    response=RemovalOut,
    errors={403: ADMIN_ONLY, 409: "The team's only admin cannot leave (`last_admin`)"},
)
@admin_required
def remove_member(user_id: int) -> ResponseReturnValue:
    try:
        removal = team_members.remove(db(), g.team_id, user_id, by=g.user, now=utcnow())
    except MemberError as exc:
        raise _refused(exc) from None
    return RemovalOut(
        user_id=removal.user_id,
        mailboxes_disconnected=removal.mailboxes_disconnected,
        enrollments_paused=removal.enrollments_paused,
        emails_cancelled=removal.emails_cancelled,
        tokens_revoked=removal.tokens_revoked,
    ).model_dump(mode="json")


@operation(
    "GET",
    "/invitations",
    summary="List invitations not accepted yet",
    response=InvitationList,
    errors={403: ADMIN_ONLY},
)
@admin_required
def list_invitations() -> ResponseReturnValue:
    now = utcnow()
    found = invitations(db(), g.team_id)
    return InvitationList(invitations=[_invitation_out(i, now) for i in found]).model_dump(
        mode="json"
    )


@operation(
    "POST",
    "/invitations",
    summary="Invite someone to the team by email",
    description="The link is emailed through the operator's SMTP server when one is "
    "configured; otherwise (or when it fails) the answer carries it, once.",
    body=InvitationCreate,
    response=InvitationSent,
    status=201,
    errors={
        403: ADMIN_ONLY,
        409: "The address has an account (`account_exists`) or a pending invitation "
        "(`already_invited`)",
    },
)
@admin_required
def create_invitation_api() -> ResponseReturnValue:
    body = parse_body(InvitationCreate)
    now = utcnow()
    try:
        delivery = invite(db(), g.team_id, body.email, body.role, by=g.user, now=now)
    except MemberError as exc:
        raise _refused(exc) from None
    return _sent(delivery, now).model_dump(mode="json"), 201


@operation(
    "POST",
    "/invitations/<int:invitation_id>/resend",
    summary="Send an invitation again, with a new link",
    response=InvitationSent,
    errors={
        403: ADMIN_ONLY,
        409: "Already accepted, or the address has an account now",
    },
)
@admin_required
def resend_invitation_api(invitation_id: int) -> ResponseReturnValue:
    now = utcnow()
    try:
        delivery = resend(db(), g.team_id, invitation_id, by=g.user, now=now)
    except MemberError as exc:
        raise _refused(exc) from None
    return _sent(delivery, now).model_dump(mode="json")


@operation(
    "POST",
    "/invitations/<int:invitation_id>/revoke",
    summary="Revoke an invitation: its link stops working",
    response=InvitationOut,
    errors={403: ADMIN_ONLY, 409: "Already accepted"},
)
@admin_required
def revoke_invitation_api(invitation_id: int) -> ResponseReturnValue:
    now = utcnow()
    try:
        invitation = revoke(db(), g.team_id, invitation_id, by=g.user, now=now)
    except MemberError as exc:
        raise _refused(exc) from None
    return _invitation_out(invitation, now).model_dump(mode="json")
