"""The PostgreSQL server the tests use, and a fresh database per test session.

Owns: finding a server and creating/dropping uniquely named databases on it.
Where the server is, first match wins:

1. `SIGHTLINE_TEST_PG_URL` (any SQLAlchemy or libpq URL; its database is used only
   to connect for CREATE/DROP DATABASE). When set, it must answer.
2. 127.0.0.1:`SIGHTLINE_TEST_PG_PORT` (default 5432), user postgres, trust auth:
   the project's machines and CI, or the server `scripts/test-prereqs.sh` started.
3. The URL `scripts/test-prereqs.sh` recorded in its state folder when it started
   its own server (in case this process does not see the port it was given).

Must never: touch a database it did not create. Databases are named
`sightline_test_<pid>_<random>`; the drop terminates leftover connections first.
"""

from __future__ import annotations

import os
import secrets
from types import TracebackType

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from tests.services.process import ServiceError, ServiceUnavailableError, prereqs_state_dir

DATABASE_PREFIX = "sightline_test_"


def _normalise(url: URL) -> URL:
    return url.set(drivername="postgresql+psycopg")


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _connect_problem(url: URL) -> str | None:
    """Return None when `url` lets us in, else the server's or the socket's complaint."""
    try:
        with psycopg.connect(_libpq(url), connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return str(exc).strip()
    return None


def find_server() -> URL:
    """Return the SQLAlchemy URL of a PostgreSQL server that lets us create databases.

    Raises:
        ServiceError: `SIGHTLINE_TEST_PG_URL` is set and does not answer.
        ServiceUnavailableError: no server was found; the message says how to get one.
    """
    explicit = os.environ.get("SIGHTLINE_TEST_PG_URL")
    if explicit:
        url = _normalise(make_url(explicit))
        problem = _connect_problem(url)
        if problem:
            raise ServiceError(f"SIGHTLINE_TEST_PG_URL does not answer: {problem}")
        return url

    port = int(os.environ.get("SIGHTLINE_TEST_PG_PORT", "5432"))
    candidates = [URL.create("postgresql+psycopg", "postgres", None, "127.0.0.1", port, "postgres")]
    recorded = prereqs_state_dir() / "postgres.url"
    if recorded.is_file():
        candidates.append(_normalise(make_url(recorded.read_text().strip())))

    problems = []
    for url in candidates:
        problem = _connect_problem(url)
        if problem is None:
            return url
        problems.append(f"  {url.render_as_string()}: {problem}")
    raise ServiceUnavailableError(
        "no PostgreSQL server for the tests:\n"
        + "\n".join(problems)
        + "\nRun scripts/test-prereqs.sh as root (`make test` does): it starts one when "
        "none answers. Or point SIGHTLINE_TEST_PG_URL at a server where we may create "
        "databases."
    )


class TemporaryDatabase:
    """A uniquely named, empty database that exists between `create()` and `drop()`."""

    def __init__(self, server: URL) -> None:
        self.server = _normalise(server)
        self.name = f"{DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database, `postgresql+psycopg://...`, password included."""
        return self.server.set(database=self.name).render_as_string(hide_password=False)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(_libpq(self.server), connect_timeout=5, autocommit=True)

    def create(self) -> TemporaryDatabase:
        with self._admin() as conn:
            # template0 + explicit encoding: the same UTF-8 database whatever the
            # cluster's template1 holds or was created with.
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(self.name)
                )
            )
        return self

    def drop(self) -> None:
        """Drop the database, ending connections a test left open."""
        with self._admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )

    def __enter__(self) -> TemporaryDatabase:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.drop()
