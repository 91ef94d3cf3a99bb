"""The operator's commands as an operator types them: `flask --app web users …`, `tokens …`.

Each runs through Flask's CLI runner against the real database (SQLite and
PostgreSQL); what it did is checked where a person would notice it: signing in
at /signin, and the API answering (or refusing) a bearer token.
"""

from __future__ import annotations

import re

from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import session_scope
from core.models import ApiToken, User
from core.tokens import hash_api_token

PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple lantern orbit"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def run(app: Flask, *args: str, typed: str | None = None) -> Result:
    """The command as run from a shell; `typed` is what the operator types (its stdin)."""
    return app.test_cli_runner().invoke(args=list(args), input=typed)


def twice(password: str) -> str:
    """What a person types at a prompt that asks for the password and its confirmation."""
    return f"{password}\n{password}\n"


def sign_in(client: FlaskClient, email: str, password: str) -> int:
    match = CSRF.search(client.get("/signin").get_data(as_text=True))
    assert match, "no CSRF field on the sign-in page"
    form = {"email": email, "password": password, "csrf_token": match.group(1)}
    return client.post("/signin", data=form).status_code


def stored_user(email: str) -> User | None:
    with session_scope() as session:
        user = session.scalar(select(User).where(User.email == email))
        if user is not None:
            session.expunge(user)
        return user


def api_status(client: FlaskClient, token: str) -> int:
    return client.get("/api/v1/mailboxes", headers={"Authorization": f"Bearer {token}"}).status_code


def test_create_asks_for_the_password_twice_and_stores_the_name(
    app: Flask, client: FlaskClient
) -> None:
    result = run(
        app, "users", "create", "riley@s.test", "--team", "S", "--name", "Riley Rep",
        typed=twice(PASSWORD),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("Password") == 1 and "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output
    assert result.output.strip().splitlines()[-1].startswith("sl_")
    user = stored_user("riley@s.test")
    assert user is not None and user.name == "Riley Rep"
    assert sign_in(client, "riley@s.test", PASSWORD) == 302


def test_create_refuses_a_confirmation_that_differs(app: Flask) -> None:
    result = run(
        app, "users", "create", "riley@s.test", "--team", "S",
        typed=f"{PASSWORD}\n{PASSWORD}x\n",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert "Traceback" not in result.output
    assert stored_user("riley@s.test") is None


def test_create_refuses_a_short_password_with_the_rule(app: Flask) -> None:
    prompted = run(
        app, "users", "create", "riley@s.test", "--team", "S", typed=twice("hunter2") * 3
    )
    assert prompted.exit_code != 0
    assert "at least 12 characters" in prompted.output
    given = run(app, "users", "create", "riley@s.test", "--team", "S", "--password", "hunter2")
    assert given.exit_code != 0
    assert "at least 12 characters" in given.output
    as_email = run(
        app, "users", "create", "riley@s.test", "--team", "S", "--password", " riley@s.test "
    )
    assert "must not be the email address" in as_email.output
    assert stored_user("riley@s.test") is None


def test_create_without_a_password_at_hand_says_how_to_give_one(app: Flask) -> None:
    result = run(app, "users", "create", "riley@s.test", "--team", "S", typed="")
    assert result.exit_code != 0
    assert "--password-stdin" in result.output
    assert stored_user("riley@s.test") is None


def test_create_reads_the_password_from_stdin_for_scripts(app: Flask, client: FlaskClient) -> None:
    result = run(
        app, "users", "create", "riley@s.test", "--team", "S", "--password-stdin",
        typed=PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Password" not in result.output
    assert sign_in(client, "riley@s.test", PASSWORD) == 302


def test_an_api_only_user_has_a_token_and_no_sign_in(app: Flask, client: FlaskClient) -> None:
    result = run(app, "users", "create", "bot@s.test", "--team", "S", "--no-password")
    assert result.exit_code == 0, result.output
    assert api_status(client, result.output.strip().splitlines()[-1]) == 200
    user = stored_user("bot@s.test")
    assert user is not None and user.password_hash is None
    both = run(app, "users", "create", "bot2@s.test", "--team", "S", "--no-password",
               "--password", PASSWORD)  # fmt: skip
    assert both.exit_code != 0 and "cannot be given with a password" in both.output


def test_list_shows_users_and_teams_and_no_secrets(app: Flask, client: FlaskClient) -> None:
    token = run(app, "users", "create", "riley@s.test", "--team", "Sellers", "--name", "Riley Rep",
                "--password", PASSWORD).output.strip().splitlines()[-1]  # fmt: skip
    run(app, "users", "create", "bot@o.test", "--team", "Others", "--no-password")
    run(app, "users", "create", "sam@s.test", "--team", "Sellers", "--no-password")
    run(app, "users", "create", "kim@s.test", "--team", "Sellers", "--no-password",
        "--role", "admin")  # fmt: skip
    assert sign_in(client, "riley@s.test", PASSWORD) == 302
    listed = run(app, "users", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == [
        "id", "email", "name", "team", "role", "password", "tokens", "created", "UTC", "last",
        "sign-in", "UTC",
    ]  # fmt: skip
    riley = next(line for line in lines if "riley@s.test" in line)
    bot = next(line for line in lines if "bot@o.test" in line)
    assert "Riley Rep" in riley and "Sellers (solo)" in riley and " yes " in riley
    assert riley.count("20") >= 2, "created and last sign-in times"
    assert "Others (solo)" in bot and " no " in bot and bot.rstrip().endswith("-")
    # A new team's first user is its admin; later ones are members unless --role says.
    roles = {line.split()[1]: line for line in lines[1:]}
    assert " admin " in riley and " admin " in bot and " admin " in roles["kim@s.test"]
    assert " member " in roles["sam@s.test"]
    user = stored_user("riley@s.test")
    assert user is not None and user.password_hash is not None
    for secret in (user.password_hash, user.password_hash.split("$")[-1], token, token[10:]):
        assert secret not in listed.output
    only = run(app, "users", "list", "--team", "Others")
    assert "bot@o.test" in only.output and "riley@s.test" not in only.output
    unknown = run(app, "users", "list", "--team", "Nobody")
    assert unknown.exit_code != 0 and "no team is named 'Nobody'" in unknown.output


def test_set_password_replaces_the_old_one(app: Flask, client: FlaskClient) -> None:
    run(app, "users", "create", "riley@s.test", "--team", "S", "--password", PASSWORD)
    result = run(app, "users", "set-password", "Riley@S.test", typed=twice(NEW_PASSWORD))
    assert result.exit_code == 0, result.output
    assert "password set for riley@s.test" in result.output
    assert sign_in(client, "riley@s.test", PASSWORD) == 401
    assert sign_in(app.test_client(), "riley@s.test", NEW_PASSWORD) == 302
    piped = run(app, "users", "set-password", "riley@s.test", "--password-stdin",
                typed=PASSWORD + "\n")  # fmt: skip
    assert piped.exit_code == 0, piped.output
    assert sign_in(app.test_client(), "riley@s.test", PASSWORD) == 302
    weak = run(app, "users", "set-password", "riley@s.test", "--password-stdin", typed="short\n")
    assert weak.exit_code != 0 and "at least 12 characters" in weak.output
    nobody = run(app, "users", "set-password", "nobody@s.test", typed=twice(NEW_PASSWORD))
    assert nobody.exit_code != 0 and "no user has the email nobody@s.test" in nobody.output


def test_a_revoked_token_is_refused_by_the_api(app: Flask, client: FlaskClient) -> None:
    created = run(app, "users", "create", "bot@s.test", "--team", "S", "--no-password")
    first = created.output.strip().splitlines()[-1]
    second = run(app, "tokens", "create", "bot@s.test").output.strip().splitlines()[-1]
    third = run(app, "tokens", "create", "bot@s.test").output.strip().splitlines()[-1]
    assert len({first, second, third}) == 3
    assert [api_status(client, token) for token in (first, second, third)] == [200, 200, 200]

    listed = run(app, "tokens", "list", "--user", "bot@s.test")
    assert listed.exit_code == 0, listed.output
    assert first[:10] in listed.output and first[10:] not in listed.output
    assert len(listed.output.splitlines()) == 4  # a header and three tokens

    by_prefix = run(app, "tokens", "revoke", first[:10])
    assert by_prefix.exit_code == 0, by_prefix.output
    assert f"revoked API token 1 ({first[:10]}…) of bot@s.test" in by_prefix.output
    assert api_status(client, first) == 401
    assert run(app, "tokens", "revoke", second).exit_code == 0  # the whole (leaked) token
    assert run(app, "tokens", "revoke", "3", "--user", "bot@s.test").exit_code == 0
    assert [api_status(client, token) for token in (first, second, third)] == [401, 401, 401]

    again = run(app, "tokens", "revoke", "1")
    assert again.exit_code == 0 and "already revoked" in again.output
    assert "no active API tokens" in run(app, "tokens", "list").output
    assert run(app, "tokens", "list", "--revoked").output.count("revoked 20") == 3
    fresh = run(app, "tokens", "create", "bot@s.test").output.strip().splitlines()[-1]
    assert api_status(client, fresh) == 200


def test_revoke_names_what_it_cannot_find(app: Flask) -> None:
    bot = run(app, "users", "create", "bot@s.test", "--team", "S", "--no-password")
    run(app, "users", "create", "ann@o.test", "--team", "O", "--no-password")
    missing = run(app, "tokens", "revoke", "99")
    assert missing.exit_code != 0 and "no API token matches" in missing.output
    other_user = run(app, "tokens", "revoke", "1", "--user", "ann@o.test")
    assert other_user.exit_code != 0 and "no API token matches" in other_user.output
    # Seven random characters can repeat: then the prefix names no one token.
    prefix = bot.output.strip().splitlines()[-1][:10]
    with session_scope() as session:
        ann = session.scalar(select(User).where(User.email == "ann@o.test"))
        assert ann is not None
        session.add(ApiToken(user_id=ann.id, token_hash=hash_api_token("x"), prefix=prefix))
    ambiguous = run(app, "tokens", "revoke", prefix)
    assert ambiguous.exit_code != 0 and "several API tokens match (ids 1, 3)" in ambiguous.output
    garbage = [run(app, "tokens", "revoke", name) for name in ("not a token", "sl_", "sl_AbC")]
    for refused in garbage:
        assert refused.exit_code != 0 and "expected a token id" in refused.output
    assert "Traceback" not in "".join(r.output for r in (missing, ambiguous, *garbage))
    listed = run(app, "tokens", "list").output
    assert listed.count("active") == 3, "nothing was revoked"
