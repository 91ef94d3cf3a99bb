"""Inviting someone to a team: the link, its email, resending, revoking, accepting.

    invite ──▶ pending ──accept (a name and a password)──▶ accepted: a new member, signed in
                 │ ├──revoke──▶ revoked
                 │ └──time───▶ expired        (SIGHTLINE_INVITATION_DAYS, 7 by default)
                 └──resend: a new link and a new expiry; the old link stops working

The link is `PUBLIC_BASE_URL/join/<token>`: 32 random bytes, of which only the
SHA-256 is stored (`invitations.token_hash`), so the link exists only in the
email, or on the admin's page once when no SMTP server is configured (or the
server refused): the invitation is saved either way, and the admin copies the
link. Accepting is one conditional UPDATE (`accepted_at IS NULL`, not revoked,
not expired): a link used twice at once makes one account.

Whose address may be invited: anyone without a Sightline account, and someone
this team removed (accepting brings their account back, with the new name,
password and role). An address with an account, in this team or another,
is refused with a sentence that says so (one address belongs to one team).

Must never: store or log the token or the link, accept a link of a revoked or
expired invitation, or let one team see or change another's invitations (404).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from config import get_settings
from core.models import Invitation, Role, Team, User
from core.operator_mail import OperatorMailError, send_operator_mail
from core.passwords import password_problem
from web.api.schemas import check_email
from worker.members import MemberError, display_name

log = logging.getLogger(__name__)

NAME_MAX_LENGTH = 200
JOIN_PATH = "/join/"


@dataclass(frozen=True)
class Delivery:
    """How the link reached (or must reach) the invitee.

    `link` is set only when nobody was mailed: the admin copies it. `error` says
    why the email did not go out when a server is configured but failed.
    """

    invitation: Invitation
    emailed: bool
    link: str | None
    error: str | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_for(token: str) -> str:
    return f"{get_settings().public_base_url.rstrip('/')}{JOIN_PATH}{token}"


def _valid_for() -> timedelta:
    return timedelta(days=get_settings().team_mail.invitation_days)


def invitations(session: Session, team_id: int) -> list[Invitation]:
    """The team's invitations not yet accepted (pending, expired or revoked), newest first."""
    return list(
        session.scalars(
            select(Invitation)
            .where(Invitation.team_id == team_id, Invitation.accepted_at.is_(None))
            .order_by(Invitation.sent_at.desc(), Invitation.id.desc())
        )
    )


def owned_invitation(session: Session, team_id: int, invitation_id: int) -> Invitation:
    found = session.get(Invitation, invitation_id)
    if found is None or found.team_id != team_id:
        raise MemberError(404, "not_found", "no such invitation in your team")
    return found


def _account_problem(session: Session, team_id: int, email: str) -> str | None:
    user = session.scalar(select(User).where(User.email == email))
    if user is None or (user.team_id == team_id and user.removed_at is not None):
        return None
    if user.team_id == team_id:
        return f"{email} is already a member of your team."
    return (
        f"{email} already has a Sightline account, in another team: one address "
        "belongs to one team. Invite another address, or ask them to leave that team first."
    )


def invite(
    session: Session, team_id: int, email: str, role: str, *, by: User, now: datetime
) -> Delivery:
    """Invite `email` to the team as `role`; mail the link or hand it back. Commits.

    Raises:
        MemberError: a bad address or role (422), an address with an account or
            a pending invitation already (409).
    """
    try:
        email = check_email(email.strip()).lower()
    except ValueError as exc:
        raise MemberError(422, "invalid_request", f"email: {exc}", "email") from None
    if role not in (Role.ADMIN, Role.MEMBER):
        raise MemberError(422, "invalid_request", "role: expected admin or member", "role")
    problem = _account_problem(session, team_id, email)
    if problem is not None:
        raise MemberError(409, "account_exists", problem, "email")
    existing = session.scalar(
        select(Invitation).where(Invitation.team_id == team_id, Invitation.email == email)
    )
    if existing is not None and existing.state(now) == "pending":
        raise MemberError(
            409,
            "already_invited",
            f"{email} was already invited on {existing.sent_at:%Y-%m-%d}: resend that "
            "invitation to send a new link.",
            "email",
        )
    token = secrets.token_urlsafe(32)
    if existing is None:
        existing = Invitation(team_id=team_id, email=email, created_at=now)
        session.add(existing)
    existing.role = role
    existing.invited_by_id = by.id
    _arm(existing, token, now)
    session.commit()
    log.info(
        "invitation_created team_id=%s invitation_id=%s by_user_id=%s",
        team_id,
        existing.id,
        by.id,
    )
    return _deliver(session, existing, token, by)


def resend(
    session: Session, team_id: int, invitation_id: int, *, by: User, now: datetime
) -> Delivery:
    """A new link and expiry for a not yet accepted invitation (revoked ones too). Commits.

    Raises:
        MemberError: no such invitation (404), already accepted, or the address
            has an account now (409).
    """
    invitation = owned_invitation(session, team_id, invitation_id)
    if invitation.accepted_at is not None:
        raise MemberError(409, "already_accepted", f"{invitation.email} already joined the team.")
    problem = _account_problem(session, team_id, invitation.email)
    if problem is not None:
        raise MemberError(409, "account_exists", problem)
    token = secrets.token_urlsafe(32)
    _arm(invitation, token, now)
    session.commit()
    log.info(
        "invitation_resent team_id=%s invitation_id=%s by_user_id=%s",
        team_id,
        invitation.id,
        by.id,
    )
    return _deliver(session, invitation, token, by)


def revoke(
    session: Session, team_id: int, invitation_id: int, *, by: User, now: datetime
) -> Invitation:
    """Its link stops working at once. Revoking twice is harmless. Commits.

    Raises:
        MemberError: no such invitation (404), or already accepted (409).
    """
    invitation = owned_invitation(session, team_id, invitation_id)
    if invitation.accepted_at is not None:
        raise MemberError(
            409,
            "already_accepted",
            f"{invitation.email} already joined the team: remove them from the members instead.",
        )
    if invitation.revoked_at is None:
        invitation.revoked_at = now
        session.commit()
        log.info(
            "invitation_revoked team_id=%s invitation_id=%s by_user_id=%s",
            team_id,
            invitation.id,
            by.id,
        )
    return invitation


def _arm(invitation: Invitation, token: str, now: datetime) -> None:
    invitation.token_hash = token_hash(token)
    invitation.sent_at = now
    invitation.expires_at = now + _valid_for()
    invitation.revoked_at = None
    invitation.accepted_at = None
    invitation.accepted_user_id = None


def _deliver(session: Session, invitation: Invitation, token: str, by: User) -> Delivery:
    link = link_for(token)
    if not get_settings().team_mail.smtp:
        return Delivery(invitation, emailed=False, link=link, error=None)
    team = session.get_one(Team, invitation.team_id)
    days = get_settings().team_mail.invitation_days
    text = (
        f"{display_name(by)} ({by.email}) invites you to join the team {team.name} "
        "on Sightline, where you will send and follow up your sales emails.\n\n"
        f"Open this link to choose your name and password:\n\n{link}\n\n"
        f"The link works for {days} day{'s' if days != 1 else ''}, once. "
        "If you did not expect this, ignore this email: nothing happens unless you open it.\n"
    )
    try:
        # One line whatever the team's name holds: a line break cannot end the header.
        subject = " ".join(f"Join {team.name} on Sightline".split())
        send_operator_mail(invitation.email, subject, text)
    except OperatorMailError as exc:
        log.warning("invitation_mail_failed invitation_id=%s error=%s", invitation.id, exc)
        return Delivery(invitation, emailed=False, link=link, error=str(exc))
    return Delivery(invitation, emailed=True, link=None, error=None)


# -- accepting (the public page) ---------------------------------------------------------


class InvitationUnusableError(Exception):
    """The link cannot be used; the message is the page's one sentence."""


def by_token(session: Session, token: str, now: datetime) -> Invitation:
    """The pending invitation a link names.

    Raises:
        InvitationUnusableError: unknown, used, revoked or expired (the message says which).
    """
    found = session.scalar(select(Invitation).where(Invitation.token_hash == token_hash(token)))
    if found is None:
        raise InvitationUnusableError(
            "This invitation link is not valid: it may have been replaced by a newer one. "
            "Ask the person who invited you to send it again."
        )
    state = found.state(now)
    if state == "accepted":
        raise InvitationUnusableError(
            "This invitation was already used. Sign in with the email and password chosen then."
        )
    if state == "revoked":
        raise InvitationUnusableError(
            "This invitation was withdrawn. Ask an admin of the team if you should still join."
        )
    if state == "expired":
        raise InvitationUnusableError(
            f"This invitation expired on {found.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Ask the person who invited you to send it again."
        )
    return found


def accept_problems(invitation: Invitation, name: str, password: str, again: str) -> dict[str, str]:
    """Field → what is wrong with what the invitee typed; empty when all is well."""
    problems: dict[str, str] = {}
    if not name.strip():
        problems["name"] = "Enter your name: it signs your emails ({{sender_name}})."
    elif len(name.strip()) > NAME_MAX_LENGTH:
        problems["name"] = f"Your name can be at most {NAME_MAX_LENGTH} characters."
    problem = password_problem(password, invitation.email)
    if problem is not None:
        problems["password"] = f"The password {problem}."
    elif password != again:
        problems["password_again"] = "The two passwords differ: type the same one twice."  # noqa: S105
    return problems


def accept(session: Session, token: str, name: str, password: str, now: datetime) -> User:
    """Make (or bring back) the invitee's account and use the invitation up. Commits.

    The caller checked `accept_problems` first.

    Raises:
        InvitationUnusableError: the link stopped working meanwhile, or the address has
            an account now.
    """
    invitation = by_token(session, token, now)
    problem = _account_problem(session, invitation.team_id, invitation.email)
    if problem is not None:
        raise InvitationUnusableError(problem)
    claimed = session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation.id,
            Invitation.token_hash == token_hash(token),
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
        .values(accepted_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()  # another request used the link first
        raise InvitationUnusableError(
            "This invitation was already used. Sign in with the email and password chosen then."
        )
    user = session.scalar(select(User).where(User.email == invitation.email))
    if user is None:
        user = User(team_id=invitation.team_id, email=invitation.email, created_at=now)
        session.add(user)
    user.name = name.strip()
    user.password_hash = generate_password_hash(password)
    user.role = invitation.role
    user.removed_at = None
    session.flush()
    session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id)
        .values(accepted_user_id=user.id)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    log.info(
        "invitation_accepted team_id=%s invitation_id=%s user_id=%s",
        invitation.team_id,
        invitation.id,
        user.id,
    )
    return user
