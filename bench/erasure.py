"""What erasing a person costs, as the team grows: the deletes, and the sweep for mentions.

Reproduce: `python -m bench.erasure` (`--prospects 5000 --runs 5`).

On a fresh PostgreSQL database (the test suite's helper), migrated to head: one
team with N prospects, each enrolled with two history lines, one sent message,
two events and one inbound reply of about 400 characters; the people erased
also have 50 tracking hits each. Each run erases one of them through
`worker.erasure.erase_person` in its own transaction, and times the sweep for
mentions (`_replace_mentions`, a LIKE over the team's text and JSON columns)
apart, since it grows with the team while the deletes grow with the person.
Prints medians in milliseconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prospects", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load = load_average()

    from tests.services import postgres

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": tempfile.mkdtemp(prefix="sightline-bench-"),
            "DATABASE_URL": database.url,
            "REDIS_URL": "redis://127.0.0.1:6379/15",  # the resolver cache's keys are dropped
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
        }
    )
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")

    from sqlalchemy import insert, select

    from core.db import session_scope
    from core.models import (
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
        TrackingHit,
        utcnow,
    )
    from worker import erasure

    now = utcnow()
    n = args.prospects
    started = time.perf_counter()
    with session_scope() as session:
        team = Team(name="Bench")
        session.add(team)
        session.flush()
        mailbox = Mailbox(team_id=team.id, kind="imap", email="rep@seller.test",
                          credentials_encrypted="-")  # fmt: skip
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="x")]
        session.add(sequence)
        session.flush()
        emails = [f"person{i}@company{i % 500}.test" for i in range(n)]
        session.execute(
            insert(Prospect),
            [{"team_id": team.id, "email": e, "name": f"Person {i} Example", "created_at": now}
             for i, e in enumerate(emails)],
        )  # fmt: skip
        pids = dict(session.execute(select(Prospect.email, Prospect.id)).all())
        session.execute(
            insert(Enrollment),
            [{"team_id": team.id, "sequence_id": sequence.id, "prospect_id": pids[e],
              "state": "replied", "created_at": now} for e in emails],
        )  # fmt: skip
        eids = dict(session.execute(select(Enrollment.prospect_id, Enrollment.id)).all())
        history = (("new", "active", "enrolled"), ("active", "replied", "reply from {}"))
        session.execute(
            insert(EnrollmentTransition),
            [{"enrollment_id": eids[pids[e]], "from_state": a, "to_state": b,
              "reason": r.format(e), "at": now} for e in emails for a, b, r in history],
        )  # fmt: skip
        session.execute(
            insert(SentMessage),
            [{"team_id": team.id, "mailbox_id": mailbox.id, "enrollment_id": eids[pids[e]],
              "step_position": 0, "prospect_id": pids[e], "message_id": f"<{i}@seller.test>",
              "subject": "Hi", "to_addrs": [e], "cc_addrs": [], "status": "sent",
              "sent_at": now} for i, e in enumerate(emails)],
        )  # fmt: skip
        sids = dict(session.execute(select(SentMessage.prospect_id, SentMessage.id)).all())
        session.execute(
            insert(InboundMessage),
            [{"team_id": team.id, "mailbox_id": mailbox.id, "provider_id": str(i),
              "sent_message_id": sids[pids[e]], "kind": "reply", "from_addr": e,
              "subject": "Re: Hi", "text": f"Thanks, happy to talk next week. {e} " * 8,
              "details": {"signal": "reply"}} for i, e in enumerate(emails)],
        )  # fmt: skip
        session.execute(
            insert(Event),
            [{"team_id": team.id, "key": f"{kind}:{i}", "kind": kind,
              "sent_message_id": sids[pids[e]], "prospect_id": pids[e],
              "enrollment_id": eids[pids[e]], "data": {"from": e, "subject": "Re: Hi"}}
             for i, e in enumerate(emails) for kind in ("sent", "reply")],
        )  # fmt: skip
        erased = emails[: args.runs]
        session.execute(
            insert(TrackingHit),
            [{"stream_id": f"{i}-{h}", "team_id": team.id, "sent_message_id": sids[pids[e]],
              "recipient": 0, "kind": "open", "hit_class": "person", "method": "GET",
              "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}
             for i, e in enumerate(erased) for h in range(50)],
        )  # fmt: skip
        team_id = team.id
    print(f"{n} prospects with their rows written in {time.perf_counter() - started:.1f} s")

    whole: list[float] = []
    sweep: list[float] = []
    for email in erased:
        with session_scope() as session:
            t0 = time.perf_counter()
            erasure.erase_person(session, team_id=team_id, email=email, user_id=None, now=now)
            whole.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            erasure._replace_mentions(session, team_id, [email, "Person 1 Example"])
            sweep.append(time.perf_counter() - t1)
    print(
        f"erase one person (PostgreSQL, team of {n}): median "
        f"{statistics.median(whole) * 1000:.0f} ms over {len(whole)} runs; "
        f"of which the sweep for mentions alone: median {statistics.median(sweep) * 1000:.0f} ms"
    )
    print(load_note(load))
    database.drop()


if __name__ == "__main__":
    main()
