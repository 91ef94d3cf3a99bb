"""How fast the web app's pages render, how large they are, and how long a CSV import takes.

Reproduce: `make bench-ui` (or `python -m bench.ui --enrollments 5000`; add
`--database-url postgresql+psycopg://…` for PostgreSQL; the default is an SQLite file).

Seeds one team the way the product would have filled it: a sequence with
`--enrollments` prospects, each sent step 1 (half opened by a person, a fifth
prefetched by Apple, a tenth clicked, one in twenty replied with text), plus
19 small sequences, templates and a second team of the same shape (so every
query has another team's rows to filter out). Then, signed in through the real
sign-in, each main page is requested `--runs` times in-process (the Flask app,
no network): median and 95th percentile server time, and the HTML size. Then a
CSV import of 1,000 and 5,000 rows: the check (preview) and the confirm (one
transaction). Last, the size of the JavaScript and CSS the pages load.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import re
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from sqlalchemy import insert, select, text

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench passphrase 0123456789"


def _environment(database_url: str | None) -> Any:
    from tests.services import redis as test_redis

    var_dir = Path(tempfile.mkdtemp(prefix="sightline-bench-ui-"))
    server_url = test_redis.find_server()
    private = None
    if server_url is None:
        private = test_redis.PrivateRedisServer().start()
        claimed = test_redis.ClaimedDatabase(private.url(db=9), lock_fd=None)
    else:
        claimed = test_redis.claim_database(server_url)
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": str(var_dir),
            "DATABASE_URL": database_url or f"sqlite:///{var_dir / 'bench.db'}",
            "REDIS_URL": claimed.url,
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
        }
    )
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    if database_url:
        from core.db import get_engine
        from core.models import Base

        with get_engine().begin() as connection:
            names = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    return claimed, private


def _seed_team(name: str, enrollments: int, app: Any) -> dict[str, int]:
    from core.crypto import encrypt_json
    from core.db import session_scope
    from core.models import (
        EmailTemplate,
        Enrollment,
        EnrollmentTransition,
        Event,
        InboundMessage,
        Mailbox,
        Prospect,
        SentMessage,
        Sequence,
        SequenceStep,
        Team,
        User,
        utcnow,
    )

    email = f"rep@{name.lower()}.test"
    result = app.test_cli_runner().invoke(
        args=["users", "create", email, "--team", name, "--password", PASSWORD, "--name", "Rep"]
    )
    assert result.exit_code == 0, result.output
    now = utcnow()
    with session_scope() as session:
        team = session.scalars(select(Team).where(Team.name == name)).one()
        user = session.scalars(select(User).where(User.email == email)).one()
        mailbox = Mailbox(
            team_id=team.id,
            user_id=user.id,
            kind="imap",
            email=email,
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequences = []
        for n in range(20):
            sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name=f"{name} seq {n}")
            sequence.steps = [
                SequenceStep(
                    position=p,
                    delay_seconds=86400 * p,
                    subject="Hi {{first_name}}" if p == 0 else "",
                    body_html="<p>Hi {{first_name}}, about {{company|your team}}.</p>",
                    same_thread=p > 0,
                )
                for p in range(3)
            ]
            session.add(sequence)
            sequences.append(sequence)
        for n in range(30):
            session.add(
                EmailTemplate(team_id=team.id, name=f"T{n}", subject="Hi", body_html="<p>x</p>")
            )
        session.flush()
        team_id, mailbox_id, main = team.id, mailbox.id, sequences[0].id
    engine_conn = session_scope
    with engine_conn() as session:
        session.execute(
            insert(Prospect),
            [
                {
                    "team_id": team_id,
                    "email": f"p{i}@{name.lower()}-prospects.test",
                    "name": f"Dana {i} Scully",
                    "company": f"Acme {i % 50}",
                    "created_at": now,
                }
                for i in range(enrollments)
            ],
        )
        prospect_ids = list(
            session.scalars(
                select(Prospect.id).where(Prospect.team_id == team_id).order_by(Prospect.id)
            )
        )
        session.execute(
            insert(Enrollment),
            [
                {
                    "team_id": team_id,
                    "sequence_id": main,
                    "prospect_id": pid,
                    "state": "replied" if i % 20 == 0 else "active",
                    "state_reason": "reply" if i % 20 == 0 else "enrolled",
                    "state_changed_at": now,
                    "next_step": 1,
                    "next_step_at": now + timedelta(days=1),
                    "steps_sent": 1,
                    "created_at": now,
                }
                for i, pid in enumerate(prospect_ids)
            ],
        )
        enrollment_ids = list(
            session.scalars(
                select(Enrollment.id).where(Enrollment.sequence_id == main).order_by(Enrollment.id)
            )
        )
        session.execute(
            insert(EnrollmentTransition),
            [
                {
                    "enrollment_id": eid,
                    "from_state": "new",
                    "to_state": "active",
                    "reason": "enrolled",
                    "at": now,
                }
                for eid in enrollment_ids
            ],
        )
        session.execute(
            insert(SentMessage),
            [
                {
                    "team_id": team_id,
                    "mailbox_id": mailbox_id,
                    "enrollment_id": eid,
                    "step_position": 0,
                    "prospect_id": pid,
                    "message_id": f"<{name}.{eid}@bench.test>",
                    "subject": f"Hi Dana {i}",
                    "to_addrs": [f"p{i}@{name.lower()}-prospects.test"],
                    "cc_addrs": [],
                    "status": "sent",
                    "send_attempts": 1,
                    "attempt": 0,
                    "claimed_at": now,
                    "sent_at": now,
                }
                for i, (eid, pid) in enumerate(zip(enrollment_ids, prospect_ids, strict=True))
            ],
        )
        sent_ids = list(
            session.scalars(
                select(SentMessage.id)
                .where(SentMessage.team_id == team_id)
                .order_by(SentMessage.id)
            )
        )
        events: list[dict[str, Any]] = []
        inbound: list[dict[str, Any]] = []
        for i, (sid, eid, pid) in enumerate(
            zip(sent_ids, enrollment_ids, prospect_ids, strict=True)
        ):
            base = {
                "team_id": team_id,
                "sent_message_id": sid,
                "enrollment_id": eid,
                "prospect_id": pid,
                "occurred_at": now,
                "created_at": now,
            }
            events.append({**base, "key": f"sent:{sid}", "kind": "sent", "data": {}})
            if i % 2 == 0:
                events.append(
                    {
                        **base,
                        "key": f"open:{sid}:0:1:counted",
                        "kind": "open",
                        "data": {"recipient": 0},
                    }
                )
            if i % 5 == 0:
                events.append(
                    {
                        **base,
                        "key": f"open:{sid}:0:0:probable",
                        "kind": "open",
                        "data": {"recipient": 0, "probable": True},
                    }
                )
            if i % 10 == 0:
                events.append(
                    {
                        **base,
                        "key": f"click:{sid}:0:0:1",
                        "kind": "click",
                        "data": {"url": "https://a.test"},
                    }
                )
            if i % 20 == 0:
                inbound.append(
                    {
                        "team_id": team_id,
                        "mailbox_id": mailbox_id,
                        "provider_id": f"mid:<r{sid}@{name}>",
                        "sent_message_id": sid,
                        "kind": "reply",
                        "from_addr": "x@a.test",
                        "text": "Sounds good, Tuesday works.",
                        "quarantined": False,
                        "created_at": now,
                    }
                )
        session.execute(insert(Event), events)
        session.execute(insert(InboundMessage), inbound)
        replies = session.execute(
            select(InboundMessage.id, InboundMessage.sent_message_id).where(
                InboundMessage.team_id == team_id
            )
        ).all()
        by_sent: dict[int | None, tuple[int, int]] = dict(
            zip(sent_ids, zip(enrollment_ids, prospect_ids, strict=True), strict=True)
        )
        session.execute(
            insert(Event),
            [
                {
                    "team_id": team_id,
                    "sent_message_id": sid,
                    "enrollment_id": by_sent[sid][0],
                    "prospect_id": by_sent[sid][1],
                    "inbound_message_id": iid,
                    "key": f"reply:{sid}:r",
                    "kind": "reply",
                    "occurred_at": now,
                    "created_at": now,
                    "data": {"from": "x@a.test"},
                }
                for iid, sid in replies
            ],
        )
    return {
        "sequence": main,
        "enrollment": enrollment_ids[0],
        "prospect": prospect_ids[0],
        "events": len(events) + len(replies),
    }


def _sign_in(app: Any, email: str) -> Any:
    client = app.test_client()
    page = client.get("/signin").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    answer = client.post(
        "/signin", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert answer.status_code == 302
    return client, token


def _time_pages(client: Any, pages: list[tuple[str, str]], runs: int) -> None:
    print(f"{'page':<34}{'median ms':>10}{'p95 ms':>9}{'HTML KB':>9}")
    for label, path in pages:
        timings = []
        size = 0
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
            size = len(response.get_data())
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))]
        print(f"{label:<34}{statistics.median(timings):>10.1f}{p95:>9.1f}{size / 1024:>9.1f}")


def _time_import(app: Any, email: str, sequence_id: int, rows: int) -> None:
    client, _ = _sign_in(app, email)
    page = client.get(f"/sequences/{sequence_id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    lines = ["email,first_name,last_name,company"] + [
        f"import{rows}-{i}@new.test,Fox,Mulder {i},FBI" for i in range(rows)
    ]
    data = ("\n".join(lines) + "\n").encode()
    started = time.perf_counter()
    preview = client.post(
        f"/sequences/{sequence_id}/import",
        data={"csrf_token": token.group(1), "file": (io.BytesIO(data), "list.csv")},
        content_type="multipart/form-data",
    )
    checked = time.perf_counter() - started
    assert preview.status_code == 200, preview.status_code
    action = re.search(r'action="(/sequences/\d+/import/[^"]+)"', preview.get_data(as_text=True))
    assert action is not None
    started = time.perf_counter()
    done = client.post(action.group(1), data={"csrf_token": token.group(1), "expected": str(rows)})
    confirmed = time.perf_counter() - started
    assert done.status_code == 302, done.status_code
    print(
        f"csv import {rows:>5} rows ({len(data) / 1024:.0f} KB): check {checked * 1000:.0f} ms, "
        f"confirm (one transaction) {confirmed * 1000:.0f} ms"
    )


def _assets() -> None:
    for path in ("web/static/app.css", "web/static/app/app.js", "web/static/time.js"):
        raw = (ROOT / path).read_bytes()
        packed = len(gzip.compress(raw)) / 1024
        print(f"{path:<28} {len(raw) / 1024:6.1f} KB, {packed:5.1f} KB gzipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enrollments", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    load = load_average()  # before this bench's own work: how busy the machine already was
    logging.disable(logging.WARNING)
    claimed, private = _environment(args.database_url)
    try:
        from config import get_settings
        from web import create_app

        get_settings.cache_clear()
        app = create_app({"TESTING": True})
        started = time.perf_counter()
        ids = _seed_team("Bench", args.enrollments, app)
        _seed_team("Other", args.enrollments, app)
        engine = os.environ["DATABASE_URL"].split(":", 1)[0]
        print(
            f"seeded 2 teams x {args.enrollments} enrolments, {ids['events']} events each "
            f"on {engine} in {time.perf_counter() - started:.1f} s"
        )
        client, _ = _sign_in(app, "rep@bench.test")
        seq = ids["sequence"]
        _time_pages(
            client,
            [
                ("sent emails", "/emails"),
                ("compose", "/emails/new"),
                ("sequences", "/sequences"),
                (f"sequence ({args.enrollments} enrolled)", f"/sequences/{seq}"),
                ("sequence, replied only", f"/sequences/{seq}?state=replied"),
                ("step editor with preview", f"/sequences/{seq}/steps/1"),
                ("enrolment history", f"/enrollments/{ids['enrollment']}"),
                ("prospects", "/prospects"),
                ("prospects, search", "/prospects?q=dana+4999"),
                ("prospect", f"/prospects/{ids['prospect']}"),
                ("reports (20 funnels)", "/reports"),
                (f"funnel ({args.enrollments} sent)", f"/reports/sequences/{seq}"),
                ("templates", "/templates"),
            ],
            args.runs,
        )
        for rows in (1000, 5000):
            _time_import(app, "rep@bench.test", seq + 1, rows)
        _assets()
        runs = f"{args.runs} runs a page"
        print(f"ui: {args.enrollments} enrolments per team, {runs}, {load_note(load)}")
    finally:
        claimed.release()
        if private is not None:
            private.stop()


if __name__ == "__main__":
    main()
