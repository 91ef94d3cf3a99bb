"""Operator commands: `flask --app web users create …`, `flask --app web rotate-credentials`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from core.crypto import CredentialsError, rotate
from core.db import session_scope
from core.models import ApiToken, Mailbox, Plan, SalesforceConnection, Team, User
from core.tokens import display_prefix, hash_api_token, new_api_token
from web.api.schemas import check_email

users = AppGroup("users", help="Manage users and their API tokens.")


@users.command("create")
@click.argument("email")
@click.option("--team", "team_name", required=True, help="Team name; created if new.")
@click.option("--password", default=None, help="Password for signing in to the web app.")
@click.option("--name", default=None, help="The user's display name.")
@click.option(
    "--plan",
    type=click.Choice([p.value for p in Plan]),
    default=None,
    help="Plan for a new team (default: solo).",
)
def create_user(
    email: str, team_name: str, password: str | None, name: str | None, plan: str | None
) -> None:
    """Create the team if needed, the user, and an API token (printed alone on the last line)."""
    try:
        email = check_email(email).lower()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    team_name = team_name.strip()
    if not team_name:
        raise click.BadParameter("must not be empty", param_hint="--team")
    token = new_api_token()
    with session_scope() as session:
        team = session.scalar(select(Team).where(Team.name == team_name))
        if team is None:
            team = Team(name=team_name, plan=plan or Plan.SOLO)
            session.add(team)
            session.flush()
            click.echo(f"created team {team.name!r} (id {team.id}, plan {team.plan})")
        if session.scalar(select(User).where(User.email == email)) is not None:
            raise click.ClickException(f"a user with email {email} already exists")
        user = User(
            team_id=team.id,
            email=email,
            name=name,
            password_hash=generate_password_hash(password) if password else None,
        )
        session.add(user)
        session.flush()
        session.add(
            ApiToken(
                user_id=user.id, token_hash=hash_api_token(token), prefix=display_prefix(token)
            )
        )
        click.echo(f"created user {email} (id {user.id}) in team {team.name!r}")
    click.echo(token)


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
    app.cli.add_command(rotate_credentials)
