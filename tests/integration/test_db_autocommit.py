"""Reads in autocommit (core.db.read_scope, autocommit_connection) on both databases.

A sync's lookups and its mailbox row statements run without a transaction
around them: no BEGIN or COMMIT round trips. Checked on the driver's own
connection: PostgreSQL reports whether a transaction is open, SQLite's driver too.
"""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.orm import Session

from config import Settings
from core.db import autocommit_connection, read_scope, session_scope
from core.models import Team


def _in_transaction(connection: Connection) -> bool:
    """What the driver says: is a transaction open on this connection now?"""
    raw: Any = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        return bool(raw.info.transaction_status != TransactionStatus.IDLE)
    return bool(raw.in_transaction)


def _count_teams(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Team)) or 0)


def test_a_read_scope_reads_without_opening_a_transaction(env: Settings) -> None:
    with session_scope() as session:
        session.add(Team(name="Acme"))
    with read_scope() as session:
        assert _count_teams(session) == 1
        assert not _in_transaction(session.connection())


def test_each_read_in_a_read_scope_sees_what_was_committed_meanwhile(env: Settings) -> None:
    with read_scope() as session:
        assert _count_teams(session) == 0
        with session_scope() as other:
            other.add(Team(name="Acme"))
        assert _count_teams(session) == 1  # no snapshot held from the first read


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_session_scope_does_open_one(env: Settings, database_url: str) -> None:
    """The check above can fail: PostgreSQL's session_scope reads inside BEGIN … COMMIT.
    (pysqlite opens a transaction only before a write, so SQLite shows no difference.)"""
    with session_scope() as session:
        _count_teams(session)
        assert _in_transaction(session.connection())


def test_an_autocommit_connection_commits_each_statement(env: Settings) -> None:
    with autocommit_connection() as connection:
        connection.execute(insert(Team).values(name="Acme"))
        assert not _in_transaction(connection)
    with read_scope() as session:
        assert _count_teams(session) == 1
