"""What removing a member costs as their live enrolments grow: one request, one transaction.

Reproduce: `python -m bench.members_removal` (`--enrollments 5000 --runs 3`).

On a fresh PostgreSQL database (the test suite's helper), migrated to head: per
run, a team with an admin and a rep, the rep's mailbox, a sequence sending from
it and N active enrolments in it. Each run removes the rep through
`worker.members.remove` (what the members page and `DELETE /api/v1/members/{id}`
call): tokens revoked, the mailbox disabled, every enrolment paused with its
transition recorded. Prints the median in milliseconds and per enrolment; asserts
nothing.
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
    parser.add_argument("--enrollments", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from tests.services import postgres

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": tempfile.mkdtemp(prefix="sightline-bench-"),
            "DATABASE_URL": database.url,
            "REDIS_URL": "redis://127.0.0.1:6379/15",  # the disconnect jobs land here
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
        }
    )
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")

    from sqlalchemy import func, insert, select

    from core.db import session_scope
    from core.models import (
        Enrollment,
        EnrollmentTransition,
        Mailbox,
        Prospect,
        Role,
        Sequence,
        SequenceStep,
        Team,
        User,
        utcnow,
    )
    from worker import members

    n = args.enrollments
    load = load_average()
    timings: list[float] = []
    for run in range(args.runs):
        now = utcnow()
        with session_scope() as session:
            team = Team(name=f"Bench {run}")
            session.add(team)
            session.flush()
            admin = User(team_id=team.id, email=f"admin{run}@seller.test", role=Role.ADMIN)
            rep = User(team_id=team.id, email=f"rep{run}@seller.test", name=f"Rep {run}")
            session.add_all([admin, rep])
            session.flush()
            mailbox = Mailbox(team_id=team.id, user_id=rep.id, kind="imap",
                              email=rep.email, credentials_encrypted="-")  # fmt: skip
            session.add(mailbox)
            session.flush()
            sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
            step = SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="x")
            sequence.steps = [step]
            session.add(sequence)
            session.flush()
            session.execute(
                insert(Prospect),
                [{"team_id": team.id, "email": f"p{i}@c{run}.test", "created_at": now}
                 for i in range(n)],
            )  # fmt: skip
            prospect_ids = session.scalars(
                select(Prospect.id).where(Prospect.team_id == team.id)
            ).all()
            session.execute(
                insert(Enrollment),
                [{"team_id": team.id, "sequence_id": sequence.id, "prospect_id": p,
                  "state": "active", "next_step_at": now, "created_at": now}
                 for p in prospect_ids],
            )  # fmt: skip
            ids = (team.id, admin.id, rep.id)
        with session_scope() as session:
            team_id, admin_id, rep_id = ids
            by = session.get_one(User, admin_id)
            started = time.perf_counter()
            removal = members.remove(session, team_id, rep_id, by=by, now=utcnow())
            timings.append(time.perf_counter() - started)
            assert removal.enrollments_paused == n
            recorded = session.scalar(
                select(func.count())
                .select_from(EnrollmentTransition)
                .join(Enrollment, Enrollment.id == EnrollmentTransition.enrollment_id)
                .where(Enrollment.team_id == team_id)
            )
            assert recorded == n
    median = statistics.median(timings)
    print(
        f"remove a member with {n} live enrolments (PostgreSQL): median {median * 1000:.0f} ms "
        f"over {len(timings)} runs, {median * 1e6 / n:.0f} µs an enrolment; {load_note(load)}"
    )
    database.drop()


if __name__ == "__main__":
    main()
