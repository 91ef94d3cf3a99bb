"""A team's people: who is in it, changing a role, removing someone (and what that stops).

The rules, the same from the members page and the API:

- A team always keeps an admin: the last one can be neither demoted nor
  removed (nor remove themselves). Two admins demoting each other at once
  cannot both win: each change locks the team's row first (PostgreSQL;
  SQLite runs one writer at a time).
- Removing someone keeps their row (`users.removed_at`), so everything that
  names them stays readable, and in one transaction: revokes their API tokens
  (their sessions end at the next request, `web.auth.current_user`); disables
  each mailbox of theirs with the reason; pauses every live enrolment of a
  sequence sending from those mailboxes with the reason "paused: <name> was
  removed from the team" (active ones, and paused ones that would otherwise
  resume by themselves); cancels the emails they scheduled from those mailboxes
  (the same conditional UPDATE as the Cancel button: one already claimed goes
  out). After the commit each mailbox's disconnect job stops its push and wipes
  its tokens (`worker.sync.push.disconnect_job`), as a person disconnecting it
  would, and the listener lets go of its watches.

Must never: leave a team without an admin, touch another team's rows, or
delete anything a removed person made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config import queues
from core.models import (
    ApiToken,
    Enrollment,
    EnrollmentState,
    Mailbox,
    MailboxStatus,
    OneOffEmail,
    OneOffStatus,
    Role,
    Sequence,
    SignIn,
    Team,
    User,
)
from worker.listener import announce_mailbox_change
from worker.queueing import enqueue
from worker.sequences.enrolling import transition_many
from worker.sync.push import DISCONNECT_JOB

log = logging.getLogger(__name__)


class MemberError(Exception):
    """A change to the team's people that the rules refuse; `code` and `status` for the API."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Member:
    user: User
    last_sign_in_at: datetime | None


@dataclass(frozen=True)
class Removal:
    """What removing someone stopped: shown on the page, answered by the API."""

    user_id: int
    mailboxes_disconnected: list[int]
    enrollments_paused: int
    emails_cancelled: int
    tokens_revoked: int


def display_name(user: User) -> str:
    return user.name or user.email


def members(session: Session, team_id: int) -> list[Member]:
    """The team's people (not removed), admins first, then by name and email."""
    last = (
        select(SignIn.user_id, func.max(SignIn.at).label("at"))
        .where(SignIn.team_id == team_id)
        .group_by(SignIn.user_id)
        .subquery()
    )
    rows = session.execute(
        select(User, last.c.at)
        .outerjoin(last, last.c.user_id == User.id)
        .where(User.team_id == team_id, User.removed_at.is_(None))
        .order_by(User.role != Role.ADMIN, User.name, User.email)
    ).all()
    return [Member(user, at) for user, at in rows]


def member(session: Session, team_id: int, user_id: int) -> User:
    """One person of the team. Raises MemberError 404 for anyone else (another team's too)."""
    found = session.get(User, user_id)
    if found is None or found.team_id != team_id or found.removed_at is not None:
        raise MemberError(404, "not_found", "no such member in your team")
    return found


def _lock_team(session: Session, team_id: int) -> None:
    session.execute(select(Team.id).where(Team.id == team_id).with_for_update())


def _other_admins(session: Session, user: User) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(User)
        .where(
            User.team_id == user.team_id,
            User.role == Role.ADMIN,
            User.removed_at.is_(None),
            User.id != user.id,
        )
    )
    return int(count or 0)


def _keep_an_admin(session: Session, user: User, doing: str) -> None:
    if user.role == Role.ADMIN and _other_admins(session, user) == 0:
        raise MemberError(
            409,
            "last_admin",
            f"{display_name(user)} is the team's only admin and cannot {doing}: "
            "make someone else an admin first.",
        )


def change_role(session: Session, team_id: int, user_id: int, role: str, *, by: User) -> User:
    """Make a member an admin or an admin a member. Commits.

    Raises:
        MemberError: not a role (422), no such member (404), or the last admin (409).
    """
    _lock_team(session, team_id)
    user = member(session, team_id, user_id)  # first: another team's id is a 404, whatever else
    if role not in (Role.ADMIN, Role.MEMBER):
        raise MemberError(422, "invalid_request", "role: expected admin or member", "role")
    if user.role == role:
        return user
    if role == Role.MEMBER:
        _keep_an_admin(session, user, "become a member")
    user.role = role
    session.commit()
    log.info(
        "member_role_changed team_id=%s user_id=%s role=%s by_user_id=%s",
        team_id,
        user.id,
        role,
        by.id,
    )
    return user


def remove(session: Session, team_id: int, user_id: int, *, by: User, now: datetime) -> Removal:
    """Remove someone from the team and stop what ran in their name. Commits.

    Raises:
        MemberError: no such member (404), or the last admin (409).
    """
    _lock_team(session, team_id)
    user = member(session, team_id, user_id)
    _keep_an_admin(session, user, "leave the team")
    name = display_name(user)
    user.removed_at = now
    tokens = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    mailboxes = list(
        session.scalars(
            select(Mailbox).where(Mailbox.team_id == team_id, Mailbox.user_id == user.id)
        )
    )
    disconnected = []
    for mailbox in mailboxes:
        if mailbox.status != MailboxStatus.DISABLED:
            mailbox.status = MailboxStatus.DISABLED
            mailbox.status_reason = f"disconnected: {name} was removed from the team"
            disconnected.append(mailbox.id)
    mailbox_ids = [m.id for m in mailboxes]
    paused = _pause_enrollments(session, team_id, mailbox_ids, name, now)
    cancelled = _cancel_scheduled(session, team_id, mailbox_ids, now)
    session.commit()
    for mailbox_id in disconnected:
        enqueue(queues.DEFAULT, DISCONNECT_JOB, mailbox_id)
    if disconnected:
        announce_mailbox_change()
    log.info(
        "member_removed team_id=%s user_id=%s by_user_id=%s mailboxes=%s enrollments_paused=%s "
        "emails_cancelled=%s",
        team_id,
        user.id,
        by.id,
        len(disconnected),
        paused,
        cancelled,
    )
    revoked = int(tokens.rowcount)  # type: ignore[attr-defined]
    return Removal(user.id, disconnected, paused, cancelled, revoked)


def _cancel_scheduled(session: Session, team_id: int, mailbox_ids: list[int], now: datetime) -> int:
    if not mailbox_ids:
        return 0
    done = session.execute(
        update(OneOffEmail)
        .where(
            OneOffEmail.team_id == team_id,
            OneOffEmail.mailbox_id.in_(mailbox_ids),
            OneOffEmail.status == OneOffStatus.SCHEDULED,
        )
        .values(status=OneOffStatus.CANCELLED, cancelled_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def _pause_enrollments(
    session: Session, team_id: int, mailbox_ids: list[int], name: str, now: datetime
) -> int:
    if not mailbox_ids:
        return 0
    live: frozenset[str] = frozenset({EnrollmentState.ACTIVE, EnrollmentState.PAUSED})
    ids = session.scalars(
        select(Enrollment.id)
        .join(Sequence, Sequence.id == Enrollment.sequence_id)
        .where(
            Enrollment.team_id == team_id,
            Sequence.mailbox_id.in_(mailbox_ids),
            Enrollment.state.in_(list(live)),
        )
        .order_by(Enrollment.id)
    ).all()
    return transition_many(
        session,
        list(ids),
        EnrollmentState.PAUSED,
        f"paused: {name} was removed from the team",
        from_states=live,
        now=now,
        resume_at=None,
    )
