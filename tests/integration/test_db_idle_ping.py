"""A pooled PostgreSQL connection is pinged before use only after sitting idle (core.db).

Real PostgreSQL: the server ends a pooled connection (as a restart or a
firewall would) and the next checkout must hand out a working one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core import db as core_db


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.commit()


@pytest.fixture
def pooled(postgres_url: str) -> Iterator[tuple[Engine, Engine]]:
    """An engine with a one-connection pool, and another to kill its connection with."""
    engine = core_db.make_engine(postgres_url, pool_size=1, max_overflow=0)
    killer = core_db.make_engine(postgres_url, pool_size=1, max_overflow=0)
    yield engine, killer
    engine.dispose()
    killer.dispose()


def test_a_connection_that_died_while_idle_is_replaced_before_use(
    pooled: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, killer = pooled
    first = _backend_pid(engine)
    _terminate(killer, first)
    # It sat idle "long enough": the checkout pings, finds it dead, takes a new one.
    monkeypatch.setattr(core_db, "PING_AFTER_IDLE_SECONDS", 0.0)
    second = _backend_pid(engine)
    assert second != first


def test_a_connection_used_moments_ago_is_not_pinged(
    pooled: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, killer = pooled
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted_ping)
    _backend_pid(engine)
    _backend_pid(engine)
    assert pings == []  # returned a moment ago: no round trip spent on a ping
    monkeypatch.setattr(core_db, "PING_AFTER_IDLE_SECONDS", 0.0)
    _backend_pid(engine)
    assert len(pings) == 1
    # The cost of not pinging: a connection killed between two quick uses fails
    # that one statement, and the pool is invalidated, so the next one works.
    monkeypatch.setattr(core_db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    _terminate(killer, _backend_pid(engine))
    with pytest.raises(Exception, match=r"terminat|closed|connection"):
        _backend_pid(engine)
    _backend_pid(engine)
