"""Fixtures shared by the whole suite.

Real services come from `tests.services` (PostgreSQL, Redis, Dovecot, SMTP) and
the fake Salesforce from `tests.fakes`. Tests that touch the database run on
both engines: the `database_url` fixture is parametrised over SQLite and
PostgreSQL, each migrated once per session with Alembic (so the migrations are
what is tested, not `create_all`) and emptied between tests.

`env` points this process's settings at those services (the same environment
variables a deployment sets) and returns the Settings; `app` and `client` are
the Flask tutorial's fixtures; `api` is a client that sends a team's token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from config import Settings, get_settings
from core import db as core_db
from core import redis as core_redis
from core.models import Base

if TYPE_CHECKING:
    from tests.asgi_client import AsgiClient

pytest_plugins = [
    "tests.services.fixtures",
    "tests.fakes.salesforce_plugin",
    "tests.fakes.providers_plugin",
    "tests.security.log_scan",
]

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
TEST_FERNET_KEY = Fernet.generate_key().decode()


def _clear_caches() -> None:
    get_settings.cache_clear()
    core_db.reset_for_tests()
    core_redis.get_redis.cache_clear()


def migrate(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("SIGHTLINE_ENCRYPTION_KEY", TEST_FERNET_KEY)
    _clear_caches()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    _clear_caches()


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'sightline.db'}"
    with pytest.MonkeyPatch.context() as mp:
        migrate(url, mp)
    yield url


@pytest.fixture(scope="session")
def postgresql_database_url(postgres_url: str) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        migrate(postgres_url, mp)
    yield postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_database_url")
    return url


def empty_database() -> None:
    engine = core_db.get_engine()
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            quoted = ", ".join(f'"{t}"' for t in tables)
            connection.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f'DELETE FROM "{table}"'))


def service_environment(database_url: str, redis_url: str, var_dir: Path) -> dict[str, str]:
    """What a deployment would set: used for this process and the subprocesses tests start."""
    return {
        "SIGHTLINE_ENV": "test",
        "SIGHTLINE_VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "SIGHTLINE_ENCRYPTION_KEY": TEST_FERNET_KEY,
        "PUBLIC_BASE_URL": "http://localhost:5000",
        "LOG_LEVEL": "INFO",
        # Tests send step after step from one mailbox within a second; the pacing
        # tests (tests/integration/test_pacing.py) give their mailbox its own spacing.
        "SIGHTLINE_SEND_SPACING_SECONDS": "0",
    }


@pytest.fixture
def env(
    database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    for name in (
        "SALESFORCE_INSTANCE_URL",
        "SALESFORCE_ACCESS_TOKEN",
        "SALESFORCE_USERNAME",
        "SALESFORCE_PASSWORD",
        "DYNO",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in service_environment(database_url, redis_url, tmp_path / "var").items():
        monkeypatch.setenv(name, value)
    _clear_caches()
    empty_database()
    core_redis.get_redis().flushdb()
    yield get_settings()
    _clear_caches()


@pytest.fixture
def app(env: Settings) -> Flask:
    from web import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def asgi(env: Settings) -> Iterator[AsgiClient]:
    """The `web` process's ASGI app, for the routes it answers without Flask (the webhooks)."""
    from tests.asgi_client import AsgiClient

    web = AsgiClient()
    yield web
    web.close()


def create_user(app: Flask, email: str, team: str, *extra: str) -> str:
    """Run the real CLI command; return the API token it prints on its last line.

    Without `--password` in `extra` the user is API-only (`--no-password`): the
    command would otherwise ask for a password.
    """
    if "--password" not in extra and "--password-stdin" not in extra:
        extra = (*extra, "--no-password")
    result = app.test_cli_runner().invoke(args=["users", "create", email, "--team", team, *extra])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


class ApiClient:
    """The Flask test client with a bearer token and JSON helpers."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self._headers(), **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.client.post(
            path,
            data=json.dumps(body),
            headers=self._headers(),
            content_type="application/json",
            **kwargs,
        )


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> ApiClient:
    return ApiClient(client, create_user(app, "owner@team-a.test", "Team A"))
