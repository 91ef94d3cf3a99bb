"""A database session per request, closed at teardown; handlers commit explicitly."""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy.orm import Session

from core.db import get_sessionmaker


def db() -> Session:
    if "db" not in g:
        g.db = get_sessionmaker()()
    session: Session = g.db
    return session


def _close(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close)
