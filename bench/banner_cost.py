"""What the Salesforce banner adds to every signed-in page view.

Reproduce: `python -m bench.banner_cost` (`--rows 50000 --views 300`).

On a fresh PostgreSQL database (the test suite's helper), migrated to head: one
team with N outbox rows owed to Salesforce (half pending, half waiting for a
Contact, plus as many done), its admin signed in through the real form. The
same page (`/settings`: small, so the banner's share shows) is fetched with the
Flask test client in three states, `--views` times each after a warm-up,
interleaved in rounds of 20:

    no banner      the banner's global swapped for one that answers None (the page before)
    connected      the team's org is connected: one lookup of its connection row
    not connected  the connection is broken: the lookup, then the count over
                   ix_outbox_team_status_due (kept in Redis for 10 s), the banner drawn

and `worker.salesforce.org_status.banner` alone is timed: connected, and not
connected with its count made afresh and kept in Redis. Prints
medians in milliseconds and the query plan of the count; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench password 0123456789"


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--views", type=int, default=300)
    args = parser.parse_args()

    from tests.services import postgres

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": tempfile.mkdtemp(prefix="sightline-bench-"),
            "DATABASE_URL": database.url,
            "REDIS_URL": "redis://127.0.0.1:6379/15",
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
        }
    )
    for name in ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME"):
        os.environ.pop(name, None)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")

    from sqlalchemy import insert, text, update
    from werkzeug.security import generate_password_hash

    from core.db import session_scope
    from core.models import (
        OutboxStatus,
        Role,
        SalesforceConnection,
        SalesforceOutbox,
        Team,
        User,
        utcnow,
    )
    from core.redis import get_redis
    from web import create_app
    from worker.salesforce import org_status

    now = utcnow()
    with session_scope() as session:
        team = Team(name="Bench")
        session.add(team)
        session.flush()
        session.add(
            User(team_id=team.id, email="admin@bench.test", role=Role.ADMIN,
                 password_hash=generate_password_hash(PASSWORD))
        )  # fmt: skip
        statuses = [OutboxStatus.PENDING, OutboxStatus.WAITING_WHO, OutboxStatus.DONE]
        session.execute(
            insert(SalesforceOutbox),
            [{"team_id": team.id, "key": f"task:{i}", "kind": "task_sent",
              "who_email": f"p{i}@bench.test", "payload": {"subject": "Hi"},
              "status": statuses[i % 2] if i < args.rows else OutboxStatus.DONE,
              "attempts": 0, "next_attempt_at": now, "created_at": now}
             for i in range(2 * args.rows)],
        )  # fmt: skip
        session.add(
            SalesforceConnection(team_id=team.id, auth_kind="oauth", status="active",
                                 org_id="00D000000000001", instance_url="https://x.test",
                                 username="sf@bench.test", budget_share=80,
                                 create_leads=False, token_version=0, updated_at=now)
        )  # fmt: skip
        team_id = team.id
    with session_scope() as session:
        session.execute(text("ANALYZE salesforce_outbox"))

    app = create_app({"TESTING": True})
    client = app.test_client()
    signin = client.get("/signin").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', signin)
    assert token is not None
    client.post(
        "/signin",
        data={"email": "admin@bench.test", "password": PASSWORD, "csrf_token": token.group(1)},
    )

    def set_status(status: str) -> None:
        with session_scope() as session:
            session.execute(update(SalesforceConnection).values(status=status))

    real_banner = app.jinja_env.globals["salesforce_banner"]
    states = {
        "no banner": ("active", lambda: None),
        "connected": ("active", real_banner),
        "not connected": ("needs_reconnect", real_banner),
    }
    pages: dict[str, list[float]] = {name: [] for name in states}
    for _ in range(20):  # warm-up
        client.get("/settings")
    load = load_average()
    # Interleaved in rounds, so a change of load on a shared machine hits every state alike.
    for _ in range(max(1, args.views // 20)):
        for name, (status, function) in states.items():
            set_status(status)
            app.jinja_env.globals["salesforce_banner"] = function
            for _ in range(20):
                t0 = time.perf_counter()
                answer = client.get("/settings")
                pages[name].append(time.perf_counter() - t0)
                assert answer.status_code == 200
    assert 'id="salesforce-banner"' in answer.get_data(as_text=True), "the banner should show"

    def banner_alone(cold: bool) -> list[float]:
        samples = []
        redis = get_redis()
        with session_scope() as session:
            for _ in range(args.views):
                if cold:
                    for key in redis.scan_iter("sightline:sf:banner:*"):
                        redis.delete(key)
                t0 = time.perf_counter()
                org_status.banner(session, team_id)
                samples.append(time.perf_counter() - t0)
        return samples

    set_status("active")
    connected_alone = banner_alone(cold=True)
    set_status("needs_reconnect")
    cold, warm = banner_alone(cold=True), banner_alone(cold=False)
    with session_scope() as session:
        plan = session.execute(
            text(
                "EXPLAIN SELECT count(*) FROM salesforce_outbox WHERE team_id = :t "
                "AND status IN ('pending', 'waiting_who', 'in_flight')"
            ),
            {"t": team_id},
        ).all()
    print(f"PostgreSQL, one team, {args.rows:,} activities waiting of {2 * args.rows:,} rows")
    print(f"GET /settings, no banner:      median {median_ms(pages['no banner'])}")
    print(
        f"GET /settings, connected:      median {median_ms(pages['connected'])} "
        f"(banner check alone {median_ms(connected_alone)})"
    )
    print(
        f"GET /settings, not connected:  median {median_ms(pages['not connected'])} "
        f"(banner check alone: counting {args.rows:,} rows {median_ms(cold)}, "
        f"the count kept in Redis {median_ms(warm)})"
    )
    print("the count's plan: " + " / ".join(str(row[0]).strip() for row in plan[:3]))
    print(load_note(load))
    database.drop()


if __name__ == "__main__":
    main()
