"""Database engine and sessions, the same for PostgreSQL and SQLite.

SQLite is the zero-configuration default: several local processes (web, worker,
cron, listener) share one file, so it runs in WAL mode with a generous busy
timeout and foreign keys on. Work that must not race (claiming a step, recording
a reply, claiming outbox rows) is written as conditional UPDATEs that come first
in their transaction; with pysqlite's default transaction handling that takes
the write lock before anything is read, which is what serialises writers there.
On PostgreSQL the same UPDATEs take row locks and re-check their WHERE clause
after waiting, so the two engines give the same answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from config import get_settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# The connections a process's pool keeps open once opened: as many as its threads
# use at once (`size_pool`). A connection checked in while the pool already holds
# this many is closed, and the next checkout opens a new one: a PostgreSQL backend
# started, authenticated and its catalog caches filled again. A `sync` process
# with eight threads and a pool of five opened ~14 connections a second that way
# (`pg_stat_database.sessions` over `python -m bench.providers_scale`'s capacity
# phase), which cost more PostgreSQL CPU than the syncs' statements did.
DEFAULT_POOL_SIZE = 10
# Above the pool, connections opened for a burst and closed when it passes. The
# most a process holds is DEFAULT_POOL_SIZE + MAX_OVERFLOW, 15 as before pools were
# sized: what a Heroku Postgres plan's connection limit has to allow per process.
MAX_OVERFLOW = 5
# What size_pool asked for, read when the engine is built.
_pool = {"size": DEFAULT_POOL_SIZE}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`, tuned for its dialect."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_size", DEFAULT_POOL_SIZE)
    kwargs.setdefault("max_overflow", MAX_OVERFLOW)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine)
    return engine


# A pooled connection that sat idle longer than this is pinged before it is used.
PING_AFTER_IDLE_SECONDS = 5.0


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle a while.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: one more round trip
    for each transaction. A `sync` process checks a connection out four times
    per sync, a few milliseconds apart; those pings were ~11 % of its time
    (py-spy over `python -m bench.sync_cpu`). A connection returned moments ago
    was alive moments ago; one idle longer (a database restart, a firewall
    dropping quiet connections) is pinged as before, and a dead one is replaced
    through the pool's own checkout retry (`DisconnectionError`, SQLAlchemy's
    documented custom pessimistic handling). A connection that dies in the few
    seconds between uses fails its statement once; SQLAlchemy then invalidates
    the pool, and the work is retried as any failed transaction is.
    """

    @event.listens_for(engine.pool, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure means: not this connection
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc
        if not alive:
            raise DisconnectionError("idle connection failed its ping")


def size_pool(threads: int) -> None:
    """Keep a pooled connection for each of `threads` threads using the database at once.

    For a process that knows its concurrency (a `sync` process: its sync threads);
    called before the engine is built, as the pool's size is fixed then.

    Raises:
        ValueError: `threads` is below 1.
        RuntimeError: the engine exists already.
    """
    if threads < 1:
        raise ValueError("a pool needs at least one connection")
    if get_engine.cache_info().currsize:
        raise RuntimeError("size_pool must come before the engine is built")
    _pool["size"] = threads


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().database_url, pool_size=_pool["size"])


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def autocommit_connection() -> Iterator[Connection]:
    """A pooled connection in autocommit, for statements that stand alone: no BEGIN,
    no COMMIT or ROLLBACK (two round trips and two commands for the database, per
    transaction). For one statement, or reads that need no common snapshot."""
    with get_engine().connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def read_scope() -> Iterator[Session]:
    """A session for reads alone, each statement in autocommit (`autocommit_connection`).

    What a sync's lookups use: the mail it classifies names sent messages that were
    committed before it arrived, so no snapshot across the lookups is needed, and a
    transaction around them cost a BEGIN and a COMMIT per sync. Not for writes: each
    one would commit by itself.
    """
    with autocommit_connection() as connection:
        session = Session(bind=connection, expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()


def reset_for_tests() -> None:
    """Forget the cached engine so a test can point the process at another database."""
    _pool["size"] = DEFAULT_POOL_SIZE
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
