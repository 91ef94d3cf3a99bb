"""Operator commands run as `flask --app web …`: users, API tokens, key rotation.

    users create EMAIL --team T [--name N]   a user, their team if new, and an API token
                                             (a new team's first user is its admin)
    users list [--team T]                    who has an account, their role; never a hash or a token
    users set-password EMAIL                 a new password for signing in to the web app
    tokens list [--user EMAIL]               API tokens by id and visible prefix
    tokens create EMAIL                      another API token for a user
    tokens revoke TOKEN                      by id, visible prefix or the whole token
    rotate-credentials                       re-encrypt under the newest encryption key
    jobs failed|requeue|delete               failed background jobs (web/jobs_cli.py)

A password is asked for twice at a hidden prompt; scripts pipe it with
`--password-stdin` (one line). A new API token is printed once, alone on the
last line of standard output, so `TOKEN=$(flask --app web tokens create …)` works;
only its SHA-256 and its visible prefix are kept.

Must never: print or log a password or a stored hash, or print a token other
than the one just made.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from core.crypto import CredentialsError, rotate
from core.db import session_scope
from core.models import (
    ApiToken,
    Mailbox,
    Plan,
    Role,
    SalesforceConnection,
    SignIn,
    Team,
    User,
)
from core.passwords import password_problem
from core.tokens import (
    API_TOKEN_PREFIX,
    DISPLAY_PREFIX_LENGTH,
    add_api_token,
    display_prefix,
    hash_api_token,
    revoke_api_token,
)
from web.addons.gmail.deployment import gmail_addon
from web.api.schemas import check_email
from web.jobs_cli import jobs

users = AppGroup("users", help="Manage users: create, list, set a password.")
tokens = AppGroup("tokens", help="Manage API tokens: list, create, revoke.")

PROMPT_TRIES = 3
NAME_MAX_LENGTH = 200  # users.name and teams.name


def read_password(email: str, given: str | None, from_stdin: bool) -> str:
    """The password from --password, one line of stdin, or the hidden prompt (asked twice)."""
    if given is not None and from_stdin:
        raise click.UsageError("give --password or --password-stdin, not both")
    if from_stdin:
        line = sys.stdin.readline()
        return _acceptable(line.rstrip("\r\n"), email, "--password-stdin")
    if given is not None:
        return _acceptable(given, email, "--password")
    for _ in range(PROMPT_TRIES):
        try:
            password: str = click.prompt(
                "Password", hide_input=True, confirmation_prompt=True, err=True
            )
        except click.Abort:
            raise click.ClickException(
                "no password given: type it at the prompt, or pipe it with --password-stdin"
            ) from None
        problem = password_problem(password, email)
        if problem is None:
            return password
        click.echo(f"Error: the password {problem}. Try another.", err=True)
    raise click.ClickException(f"no acceptable password in {PROMPT_TRIES} tries")


def _acceptable(password: str, email: str, hint: str) -> str:
    problem = password_problem(password, email)
    if problem is not None:
        raise click.BadParameter(f"the password {problem}", param_hint=hint)
    return password


def _email_argument(value: str) -> str:
    try:
        return check_email(value).lower()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None


def _text_option(value: str, hint: str) -> str:
    value = value.strip()
    if not value:
        raise click.BadParameter("must not be empty", param_hint=hint)
    if len(value) > NAME_MAX_LENGTH:
        raise click.BadParameter(f"must be at most {NAME_MAX_LENGTH} characters", param_hint=hint)
    return value


def _user(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == _email_argument(email)))
    if user is None:
        raise click.ClickException(f"no user has the email {email.strip()}")
    return user


def _add_token(session: Session, user: User) -> tuple[str, ApiToken]:
    return add_api_token(session, user.id)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@users.command("create")
@click.argument("email")
@click.option("--team", "team_name", required=True, help="Team name; created if new.")
@click.option("--name", default=None, help="Display name ({{sender_name}} in emails).")
@click.option(
    "--password",
    default=None,
    help="Password for the web app. Prefer the prompt or --password-stdin: "
    "a password on the command line stays in shell history.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option(
    "--no-password",
    is_flag=True,
    help="No password: the user has an API token and cannot sign in to the web app.",
)
@click.option(
    "--plan",
    type=click.Choice([p.value for p in Plan]),
    default=None,
    help="Plan for a new team (default: solo).",
)
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=None,
    help="admin or member (default: admin for a new team's first user, else member).",
)
def create_user(
    email: str,
    team_name: str,
    name: str | None,
    password: str | None,
    password_stdin: bool,
    no_password: bool,
    plan: str | None,
    role: str | None,
) -> None:
    """Create the team if needed, the user, and an API token (printed alone on the last line).

    Asks for the password (twice, hidden) unless --password-stdin, --password or
    --no-password is given.
    """
    email = _email_argument(email)
    team_name = _text_option(team_name, "--team")
    name = _text_option(name, "--name") if name is not None else None
    if no_password and (password is not None or password_stdin):
        raise click.UsageError("--no-password cannot be given with a password")
    with session_scope() as session:
        # Asked before the password, so nobody types one for an account that exists.
        if session.scalar(select(User.id).where(User.email == email)) is not None:
            raise click.ClickException(f"a user with email {email} already exists")
    secret = None if no_password else read_password(email, password, password_stdin)
    with session_scope() as session:
        team = session.scalar(select(Team).where(Team.name == team_name))
        new_team = team is None
        if team is None:
            team = Team(name=team_name, plan=plan or Plan.SOLO)
            session.add(team)
            session.flush()
            click.echo(f"created team {team.name!r} (id {team.id}, plan {team.plan})")
        if session.scalar(select(User.id).where(User.email == email)) is not None:
            raise click.ClickException(f"a user with email {email} already exists")
        user = User(
            team_id=team.id,
            email=email,
            name=name,
            password_hash=generate_password_hash(secret) if secret is not None else None,
            # A team is never without an admin: its first user is one.
            role=role or (Role.ADMIN if new_team else Role.MEMBER),
        )
        session.add(user)
        session.flush()
        token, _row = _add_token(session, user)
        click.echo(f"created user {email} (id {user.id}) in team {team.name!r}")
    click.echo(token)


@users.command("list")
@click.option("--team", "team_name", default=None, help="Only this team's users.")
def list_users(team_name: str | None) -> None:
    """Every user: email, name, team, role, web sign-in, API tokens, created, last sign-in."""
    last_sign_in = (
        select(SignIn.user_id, func.max(SignIn.at).label("at")).group_by(SignIn.user_id).subquery()
    )
    active_tokens = (
        select(ApiToken.user_id, func.count().label("n"))
        .where(ApiToken.revoked_at.is_(None))
        .group_by(ApiToken.user_id)
        .subquery()
    )
    query = (
        select(User, Team, last_sign_in.c.at, active_tokens.c.n)
        .join(Team, Team.id == User.team_id)
        .outerjoin(last_sign_in, last_sign_in.c.user_id == User.id)
        .outerjoin(active_tokens, active_tokens.c.user_id == User.id)
        .order_by(Team.name, User.email)
    )
    with session_scope() as session:
        if team_name is not None:
            team_name = team_name.strip()
            if session.scalar(select(Team.id).where(Team.name == team_name)) is None:
                raise click.ClickException(f"no team is named {team_name!r}")
            query = query.where(Team.name == team_name)
        rows = [
            (
                str(user.id),
                user.email,
                user.name or "-",
                f"{team.name} ({team.plan})",
                "removed" if user.removed_at else user.role,
                "yes" if user.password_hash else "no",
                str(tokens_active or 0),
                _when(user.created_at),
                _when(signed_in_at),
            )
            for user, team, signed_in_at, tokens_active in session.execute(query).all()
        ]
    if not rows:
        click.echo("no users")
        return
    header = (
        "id",
        "email",
        "name",
        "team",
        "role",
        "password",
        "tokens",
        "created UTC",
        "last sign-in UTC",
    )
    _table(header, rows)


@users.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password(email: str, password_stdin: bool) -> None:
    """Give EMAIL's user a new password for the web app (asked twice, hidden).

    The old password stops working at once. Browsers already signed in stay
    signed in until their session ends or they sign out; API tokens are not
    touched (see `tokens revoke`).
    """
    with session_scope() as session:
        address = _user(session, email).email
    secret = read_password(address, None, password_stdin)
    with session_scope() as session:
        user = _user(session, address)
        user.password_hash = generate_password_hash(secret)
    click.echo(f"password set for {address}")


@tokens.command("list")
@click.option("--user", "email", default=None, help="Only this user's tokens.")
@click.option("--revoked", is_flag=True, help="Include revoked tokens.")
def list_tokens(email: str | None, revoked: bool) -> None:
    """API tokens by id and visible prefix (the token itself is never stored)."""
    query = select(ApiToken, User.email).join(User, User.id == ApiToken.user_id)
    with session_scope() as session:
        if email is not None:
            query = query.where(ApiToken.user_id == _user(session, email).id)
        if not revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        rows = [
            (
                str(row.id),
                f"{row.prefix}…",
                owner,
                _when(row.created_at),
                _when(row.last_used_at),
                f"revoked {_when(row.revoked_at)}" if row.revoked_at else "active",
            )
            for row, owner in session.execute(query.order_by(ApiToken.id)).all()
        ]
    if not rows:
        click.echo("no API tokens" if revoked else "no active API tokens")
        return
    _table(("id", "prefix", "user", "created UTC", "last used UTC", "state"), rows)


@tokens.command("create")
@click.argument("email")
def create_token(email: str) -> None:
    """Make another API token for EMAIL's user (printed alone on the last line)."""
    with session_scope() as session:
        user = _user(session, email)
        token, row = _add_token(session, user)
        click.echo(f"created API token {row.id} ({row.prefix}…) for {user.email}")
    click.echo(token)


@tokens.command("revoke")
@click.argument("token")
@click.option("--user", "email", default=None, help="Only look among this user's tokens.")
def revoke_token(token: str, email: str | None) -> None:
    """Revoke an API token, named by its id, its visible prefix, or the whole token.

    The API refuses it from the next request on. Revoking a revoked token
    changes nothing.
    """
    token = token.strip()
    with session_scope() as session:
        query = select(ApiToken, User.email).join(User, User.id == ApiToken.user_id)
        if email is not None:
            query = query.where(ApiToken.user_id == _user(session, email).id)
        if token.isdigit():
            query = query.where(ApiToken.id == int(token))
        elif token.startswith(API_TOKEN_PREFIX) and display_prefix(token) != token:
            # Longer than any prefix: the whole token (one that leaked, say).
            query = query.where(ApiToken.token_hash == hash_api_token(token))
        elif token.startswith(API_TOKEN_PREFIX) and len(token.rstrip("…")) == DISPLAY_PREFIX_LENGTH:
            query = query.where(ApiToken.prefix == token.rstrip("…"))
        else:
            raise click.BadParameter(
                "expected a token id, its prefix as `tokens list` shows it "
                f"({DISPLAY_PREFIX_LENGTH} characters, such as {API_TOKEN_PREFIX}AbCd123), "
                "or the whole token",
                param_hint="TOKEN",
            )
        found = session.execute(query).all()
        if not found:
            raise click.ClickException("no API token matches (see `tokens list`)")
        if len(found) > 1:
            ids = ", ".join(str(row.id) for row, _owner in found)
            raise click.ClickException(f"several API tokens match (ids {ids}): name one by id")
        row, owner = found[0]
        if row.revoked_at is not None:
            click.echo(f"API token {row.id} ({row.prefix}…) of {owner} was already revoked")
            return
        revoke_api_token(row)
        click.echo(f"revoked API token {row.id} ({row.prefix}…) of {owner}")


@click.command("rotate-credentials")
def rotate_credentials() -> None:
    """Re-encrypt every stored credential under the newest SIGHTLINE_ENCRYPTION_KEY.

    Mailboxes and team Salesforce connections. Safe to run twice, and while the
    app runs (each row is one small update). A row no configured key opens is
    left as it is and named; the command then exits with status 1, so the old
    key is not dropped while something still needs it.
    """
    done: dict[str, int] = {"mailbox": 0, "salesforce connection": 0}
    unreadable: list[str] = []
    with session_scope() as session:
        for mailbox in session.scalars(select(Mailbox).order_by(Mailbox.id)):
            try:
                mailbox.credentials_encrypted = rotate(mailbox.credentials_encrypted)
                done["mailbox"] += 1
            except CredentialsError:
                unreadable.append(f"mailbox id={mailbox.id}")
        connections = select(SalesforceConnection).order_by(SalesforceConnection.id)
        for connection in session.scalars(connections):
            if not connection.credentials_encrypted:
                continue
            try:
                connection.credentials_encrypted = rotate(connection.credentials_encrypted)
                done["salesforce connection"] += 1
            except CredentialsError:
                unreadable.append(f"salesforce connection id={connection.id}")
    click.echo(
        f"re-encrypted credentials of {done['mailbox']} mailbox(es) and "
        f"{done['salesforce connection']} Salesforce connection(s)"
    )
    if unreadable:
        raise click.ClickException(
            "no key in SIGHTLINE_ENCRYPTION_KEY opens the credentials of "
            + ", ".join(unreadable)
            + ": put the key they were encrypted with back in the list (after the new one)"
        )


def init_app(app: Flask) -> None:
    app.cli.add_command(users)
    app.cli.add_command(tokens)
    app.cli.add_command(rotate_credentials)
    app.cli.add_command(gmail_addon)
    app.cli.add_command(jobs)
