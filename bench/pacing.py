"""What pacing and the bounce guard cost: a claim through the mailbox gate, and a guard check.

Reproduce: `python -m bench.pacing` (`--mailboxes 20 --per-mailbox 50 --history 10000`).

On a fresh PostgreSQL database (the test suite's helper): M mailboxes with a
one-step sequence and N due enrolments each. Round 1 claims every step with
no spacing (each claim takes the mailbox row, counts the day's sends, passes);
round 2 enrols as many again with 90 s spacing, so per mailbox one claim passes
and the rest are given back with their reason. Then one mailbox gets `--history`
sent messages (2 % hard-bounced) and the bounce guard's check (the last 50
sends of the mailbox and of the sequence) is timed. Prints medians and p95 in
milliseconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{label:<44} n={len(ms):<6} median {statistics.median(ms):6.2f} ms  p95 {p95:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--per-mailbox", type=int, default=50)
    parser.add_argument("--history", type=int, default=10000)
    args = parser.parse_args()
    load = load_average()

    from tests.services import postgres

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": tempfile.mkdtemp(prefix="sightline-bench-"),
            "DATABASE_URL": database.url,
            "REDIS_URL": "redis://127.0.0.1:6379/15",  # parsed only: nothing here uses Redis
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
        }
    )
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")

    from config import get_settings
    from core.crypto import encrypt_json
    from core.db import session_scope
    from core.models import Event as EventRow
    from core.models import Mailbox, SendStatus, SentMessage, Sequence, SequenceStep, Team, utcnow
    from worker.sequences.bounce_guard import guard_after_hard_bounce
    from worker.sequences.claiming import claim_due_step
    from worker.sequences.enrolling import enroll

    now = utcnow()
    with session_scope() as session:
        team = Team(name="Bench")
        session.add(team)
        session.flush()
        sequences = []
        for m in range(args.mailboxes):
            mailbox = Mailbox(
                team_id=team.id,
                kind="imap",
                email=f"rep{m}@seller.test",
                credentials_encrypted=encrypt_json({}),
                send_spacing_seconds=0,
                daily_cap=100000,
            )
            session.add(mailbox)
            session.flush()
            sequence = Sequence(
                team_id=team.id,
                mailbox_id=mailbox.id,
                name=f"s{m}",
                send_days=127,
                send_start_minute=0,
                send_end_minute=1440,
            )
            sequence.steps = [
                SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="<p>Hi</p>")
            ]
            session.add(sequence)
            session.flush()
            sequences.append(sequence.id)

    def enrol_all(prefix: str) -> list[int]:
        ids = []
        with session_scope() as session:
            for sequence_id in sequences:
                sequence = session.get_one(Sequence, sequence_id)
                for i in range(args.per_mailbox):
                    email = f"{prefix}{i}.{sequence_id}@acme.test"
                    ids.append(
                        enroll(session, sequence=sequence, email=email, name=None, now=now).id
                    )
        return ids

    def claim_round(ids: list[int], at: datetime) -> tuple[list[float], list[float]]:
        passed: list[float] = []
        held: list[float] = []
        for enrollment_id in ids:
            start = time.perf_counter()
            with session_scope() as session:
                sent = claim_due_step(session, enrollment_id, at)
            (passed if sent is not None else held).append(time.perf_counter() - start)
        return passed, held

    first = enrol_all("a")
    passed, _ = claim_round(first, now + timedelta(seconds=1))
    with session_scope() as session:
        for mailbox in session.query(Mailbox):
            mailbox.send_spacing_seconds = 90
            mailbox.next_send_at = None
    second = enrol_all("b")
    gated, held = claim_round(second, now + timedelta(seconds=2))

    with session_scope() as session:
        mailbox_id = session.get_one(Sequence, sequences[0]).mailbox_id
        base = now - timedelta(days=30)
        for i in range(args.history):
            sent = SentMessage(
                team_id=team.id,
                mailbox_id=mailbox_id,
                subject="Hi",
                message_id=f"<h{i}@seller.test>",
                status=SendStatus.SENT,
                claimed_at=base + timedelta(minutes=i),
                sent_at=base + timedelta(minutes=i),
            )
            session.add(sent)
            if i % 50 == 0:
                session.flush()
                session.add(
                    EventRow(team_id=team.id, key=f"b{i}", kind="bounce", sent_message_id=sent.id)
                )
        session.flush()
        probe = session.get_one(SentMessage, sent.id)
        guards = []
        settings = get_settings()
        for _ in range(200):
            start = time.perf_counter()
            guard_after_hard_bounce(session, probe, utcnow(), settings)
            guards.append(time.perf_counter() - start)
        session.rollback()

    print(f"pacing on PostgreSQL, {args.mailboxes} mailboxes x {args.per_mailbox} due steps")
    print(summary("claim, gate passed (spacing 0)", passed))
    print(summary("claim, gate passed (spacing 90 s)", gated))
    print(summary("claim, given back (inside spacing)", held))
    print(summary(f"bounce guard check, {args.history} sends", guards))
    print(load_note(load))
    database.drop()


if __name__ == "__main__":
    main()
