"""Document links cannot be made to write visit rows without end; sign-in counts IPv6 by /64.

A recipient's `/d/` link is public (its signed token is in an email anyone may
forward): every open used to write a `document_visits` row. Now new rows are
bounded per address (IPv4, or the IPv6 /64) and per link per day, counted in
the real Redis; past either the document is still shown and downloadable, and
no row is written. The same /64 rule holds for the sign-in limiter, which
counted each IPv6 address on its own.
"""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from config import Settings
from core.db import session_scope
from core.models import DocumentVisit
from core.redis import get_redis
from tests.integration.test_documents_viewer import READER_UA, Shared, shared  # noqa: F401
from web.documents.visits import (
    VISIT_DAY_KEY,
    VISITS_PER_ADDRESS,
    VISITS_PER_LINK_PER_DAY,
)
from web.signin_limit import record_failure, retry_after
from web.tracking.limits import SHED_KEY

pytestmark = pytest.mark.integration


def visits() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(DocumentVisit)) or 0)


def view_from(client: FlaskClient, token: str, address: str, path: str = "") -> int:
    answer = client.get(
        f"/d/{token}{path}",
        headers={"User-Agent": READER_UA},
        environ_base={"REMOTE_ADDR": address},
    )
    # Read and closed as a WSGI server would: a download streams inside its request
    # context, and an unread one popped later ("Popped wrong request context").
    answer.get_data()
    answer.close()
    return int(answer.status_code)


def test_a_flood_of_views_from_one_64_writes_only_a_few_visit_rows(
    client: FlaskClient,
    shared: Shared,  # noqa: F811
) -> None:
    for n in range(1, 3 * VISITS_PER_ADDRESS + 1):
        # A fresh address of the same /64 each time, as a rotating client would use.
        assert view_from(client, shared.token, f"2001:db8:7:9::{n:x}") == 200
    assert visits() == VISITS_PER_ADDRESS
    assert get_redis().hget(SHED_KEY, "visit") == str(2 * VISITS_PER_ADDRESS).encode()
    # Shed, the document is still offered for download, and served.
    assert view_from(client, shared.token, "2001:db8:7:9::ffff", "/download") == 200
    assert visits() == VISITS_PER_ADDRESS
    # Another reader is not held back by that one.
    assert view_from(client, shared.token, "203.0.113.20") == 200
    assert visits() == VISITS_PER_ADDRESS + 1


def test_a_link_writes_at_most_its_daily_visits_from_any_number_of_addresses(
    client: FlaskClient,
    shared: Shared,  # noqa: F811
) -> None:
    day = int(time.time() // 86400)
    # The link's day already counted almost all it may (our own counter, in Redis).
    get_redis().set(VISIT_DAY_KEY.format(link=shared.link_id, day=day), VISITS_PER_LINK_PER_DAY - 1)
    for n in range(5):
        assert view_from(client, shared.token, f"198.51.100.{n + 1}") == 200
    assert visits() == 1


def test_sign_in_failures_count_an_ipv6_64_as_one_address(app: Flask, env: Settings) -> None:
    limit = env.signin_limits.per_ip
    for n in range(limit):
        # Many accounts, a fresh address of one /64 for each guess.
        record_failure(f"user{n}@spray.test", f"2001:db8:aa:bb::{n + 1:x}")
    assert retry_after("someone@else.test", "2001:db8:aa:bb:cc::1") is not None
    assert retry_after("someone@else.test", "2001:db8:aa:bc::1") is None
