"""What a person may change about their own account: the Account page and the API share it.

Name and signature (`{{sender_name}}`, `{{signature}}`), the password, their
devices and their API tokens. Every function takes the signed-in user and
touches only that user's rows: another person's device or token is `NotYoursError`,
whatever team it is in (the API answers 404, the page 404).

Saving a name or a signature resumes the enrolments that waited only for it
(`worker.sequences.missing_values.resume_for_sender`), in the same transaction.
Forgetting a device revokes it (its cookie stops marking hits as the team's
own, `worker.events`) and clears the addresses it signed in from, which would
otherwise mark hits from there as the team's own for the sign-in window.

Tokens and the password rule are the CLI's (`core.tokens`, `core.passwords`):
one way to make, name and revoke a token; one rule for a password.

Must never: log or return a password, a hash or a token other than the one just
made; let a password change through without the current password.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from core.header_text import header_text_problem
from core.models import ApiToken, Device, SignIn, User, utcnow
from core.passwords import password_problem  # the CLI's rule, one rule for every password
from core.templates import SIGNATURE_LIMIT, clean_signature
from core.tokens import TOKEN_NAME_LIMIT, add_api_token, revoke_api_token
from web import signin_limit
from worker.sequences.missing_values import resume_for_sender

log = logging.getLogger(__name__)

NAME_LIMIT = 200  # users.name


class NotYoursError(Exception):
    """Not one of this user's rows (or no such row): 404 on the page and in the API."""


class InvalidError(ValueError):
    """A value that cannot be saved; `fields` maps each field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


@dataclass(frozen=True)
class ProfileSaved:
    resumed: int  # enrolments that had waited for this sender's values


def check_name(name: str) -> str | None:
    """The name as stored (spaces collapsed; None when empty), or raise InvalidError."""
    name = " ".join(name.split())
    if len(name) > NAME_LIMIT:
        raise InvalidError({"name": f"at most {NAME_LIMIT} characters"})
    if (problem := header_text_problem(name)) is not None:
        raise InvalidError({"name": problem})
    return name or None


def check_signature(signature: str) -> str | None:
    """The signature as stored (allow-listed HTML; None when empty), or raise InvalidError."""
    if len(signature) > SIGNATURE_LIMIT:
        raise InvalidError({"signature": f"at most {SIGNATURE_LIMIT:,} characters"})
    return clean_signature(signature) or None


def save_profile(
    session: Session, user: User, *, name: str | None = None, signature: str | None = None
) -> ProfileSaved:
    """Set what is given (None leaves it as it is); resume what waited for it."""
    fields: dict[str, str] = {}
    new_name, new_signature = user.name, user.signature
    try:
        if name is not None:
            new_name = check_name(name)
    except InvalidError as exc:
        fields.update(exc.fields)
    try:
        if signature is not None:
            new_signature = check_signature(signature)
    except InvalidError as exc:
        fields.update(exc.fields)
    if fields:
        raise InvalidError(fields)
    user.name, user.signature = new_name, new_signature
    session.flush()
    resumed = resume_for_sender(session, user.id, utcnow())
    log.info("account_profile_saved user_id=%s resumed=%s", user.id, resumed)
    return ProfileSaved(resumed)


class TooManyAttemptsError(Exception):
    """The current password was wrong too often: the sign-in limit's counters are full."""

    def __init__(self, wait: int) -> None:
        super().__init__(f"too many wrong passwords; try again in {wait} s")
        self.wait = wait


def change_password(
    user: User, current: str, new: str, confirm: str | None = None, *, ip: str | None = None
) -> None:
    """Set a new password once the current one is given; InvalidError names the field.

    Guessing the current password here counts as guessing it at /signin (the same
    counters, web.signin_limit): a stolen session or token cannot try passwords
    faster than the sign-in page allows. TooManyAttemptsError when they are full.
    """
    if (wait := signin_limit.retry_after(user.email, ip)) is not None:
        raise TooManyAttemptsError(wait)
    if not user.password_hash or not check_password_hash(user.password_hash, current):
        signin_limit.record_failure(user.email, ip)
        raise InvalidError({"current_password": "that is not your current password"})
    signin_limit.record_success(user.email, ip)
    if (problem := password_problem(new, user.email)) is not None:
        raise InvalidError({"new_password": f"the password {problem}"})
    if confirm is not None and confirm != new:
        raise InvalidError({"confirm_password": "does not match the new password"})
    user.password_hash = generate_password_hash(new)
    log.info("account_password_changed user_id=%s", user.id)


# -- devices -----------------------------------------------------------------------------


def devices(session: Session, user: User) -> list[Device]:
    """The browsers this user signed in from and has not forgotten, latest seen first."""
    return list(
        session.scalars(
            select(Device)
            .where(Device.user_id == user.id, Device.revoked_at.is_(None))
            .order_by(Device.last_seen_at.desc(), Device.id.desc())
        )
    )


def forget_device(session: Session, user: User, device_id: int) -> Device:
    """Stop counting this browser as the team's own: opens from it count as a reader's."""
    device = session.get(Device, device_id)
    if device is None or device.user_id != user.id or device.revoked_at is not None:
        raise NotYoursError
    device.revoked_at = utcnow()
    session.execute(update(SignIn).where(SignIn.device_id == device.id).values(ip=None))
    log.info("account_device_forgotten user_id=%s device_id=%s", user.id, device.id)
    return device


# -- API tokens --------------------------------------------------------------------------


def tokens(session: Session, user: User) -> list[ApiToken]:
    """The user's tokens that still work, newest first."""
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id.desc())
        )
    )


def check_token_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidError({"name": "name the token (what uses it: “CI”, “laptop”)"})
    if len(name) > TOKEN_NAME_LIMIT:
        raise InvalidError({"name": f"at most {TOKEN_NAME_LIMIT} characters"})
    if (problem := header_text_problem(name)) is not None:
        raise InvalidError({"name": problem})
    return name


def create_token(session: Session, user: User, name: str) -> tuple[str, ApiToken]:
    """(the token, shown once; its row). Only its digest and prefix are kept."""
    token, row = add_api_token(session, user.id, check_token_name(name))
    log.info("account_token_created user_id=%s token_id=%s", user.id, row.id)
    return token, row


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    """Revoke one of the user's tokens: the API refuses it from the next request on."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id or row.revoked_at is not None:
        raise NotYoursError
    revoke_api_token(row)
    log.info("account_token_revoked user_id=%s token_id=%s", user.id, row.id)
    return row
