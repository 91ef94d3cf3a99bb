"""Reply → halt latency with IMAP IDLE, on real parts.

Reproduce: `make bench-reply` (or `python -m bench.reply_latency --replies 50`).

Starts Dovecot, the SMTP server, a fresh PostgreSQL database and a Redis
database (the test suite's service helpers), runs the Procfile's `worker`,
`cron` and `listener`, enrols N prospects in a one-mailbox sequence, waits for
every first step to be sent, then delivers N replies into the sender's mailbox
over LMTP (one every `--gap` seconds). Latency is the time from a reply's
delivery to its enrolment's `replied` transition as recorded in the database.
Prints p50/p95/max; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from sqlalchemy import select

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between deliveries")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    args = parser.parse_args()
    load = load_average()  # before this bench's own work: how busy the machine already was

    from tests.services import postgres, process
    from tests.services import redis as test_redis
    from tests.services.dovecot import DovecotServer, unique_address
    from tests.services.smtp import SmtpServer
    from tests.stack import Stack

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    server_url = test_redis.find_server()
    private = None
    if server_url is None:
        private = test_redis.PrivateRedisServer().start()
        claimed = test_redis.ClaimedDatabase(private.url(db=9), lock_fd=None)
    else:
        claimed = test_redis.claim_database(server_url)
    dovecot = DovecotServer().start()
    smtp = SmtpServer(
        lmtp_host=dovecot.host,
        lmtp_port=dovecot.lmtp_port,
        password=dovecot.password,
        starttls=False,
    ).start()
    var_dir = Path(tempfile.mkdtemp(prefix="sightline-bench-"))
    env = {
        "SIGHTLINE_ENV": "test",
        "SIGHTLINE_VAR_DIR": str(var_dir),
        "DATABASE_URL": database.url,
        "REDIS_URL": claimed.url,
        "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
        "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "SIGHTLINE_SEQUENCE_TICK_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    stack = None
    try:
        config = Config(str(ROOT / "alembic.ini"))
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")

        from core.crypto import encrypt_json
        from core.db import session_scope
        from core.models import (
            EnrollmentTransition,
            Mailbox,
            SentMessage,
            Sequence,
            SequenceStep,
            Team,
        )
        from worker.sequences.enrolling import enroll

        sender = unique_address("seller.test", "rep")
        server = {
            "host": dovecot.host,
            "username": sender,
            "password": dovecot.password,
            "security": "none",
        }
        credentials = {
            "imap": {**server, "port": dovecot.imap_port},
            "smtp": {**server, "host": smtp.host, "port": smtp.port},
        }
        now = datetime.now(UTC)
        with session_scope() as session:
            team = Team(name="Bench")
            session.add(team)
            session.flush()
            mailbox = Mailbox(
                team_id=team.id,
                kind="imap",
                email=sender,
                credentials_encrypted=encrypt_json(credentials),
                created_at=now,
            )
            session.add(mailbox)
            session.flush()
            sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Bench")
            sequence.steps = [
                SequenceStep(
                    position=0, delay_seconds=0, subject="Hello", body_html="<p>Hello</p>"
                ),
                SequenceStep(
                    position=1,
                    delay_seconds=3600,
                    subject="",
                    body_html="<p>Bump</p>",
                    same_thread=True,
                ),
            ]
            session.add(sequence)
            session.flush()
            enrollment_ids = [
                enroll(
                    session,
                    sequence=sequence,
                    email=f"prospect{n}@acme.test",
                    name=None,
                    now=now - timedelta(seconds=1),
                ).id
                for n in range(args.replies)
            ]

        stack = Stack(env, var_dir / "logs")
        stack.start("cron", "listener")
        for n in range(args.workers):
            stack.running[f"worker{n}"] = process.spawn(
                stack.commands["worker"],
                log_path=var_dir / "logs" / f"worker{n}.log",
                env=stack.env,
                cwd=ROOT,
            )

        def all_sent() -> dict[int, str] | None:
            with session_scope() as session:
                rows = session.execute(
                    select(SentMessage.enrollment_id, SentMessage.message_id).where(
                        SentMessage.status == "sent"
                    )
                ).all()
            found = {int(e): m for e, m in rows if e is not None}
            return found if len(found) == len(enrollment_ids) else None

        sent = stack.wait_for("every first step to be sent", all_sent, timeout=300, interval=0.5)
        time.sleep(2)  # let IDLE settle after the sends' own traffic

        delivered: dict[int, float] = {}
        for enrollment_id in enrollment_ids:
            msg = EmailMessage()
            msg["From"] = f"prospect{enrollment_id}@acme.test"
            msg["To"] = sender
            msg["Subject"] = "Re: Hello"
            msg["Message-ID"] = make_msgid(domain="acme.test")
            msg["In-Reply-To"] = sent[enrollment_id]
            msg.set_content("Yes, let's talk.\n")
            delivered[enrollment_id] = time.time()
            dovecot.deliver(sender, msg.as_bytes())
            time.sleep(args.gap)

        def all_replied() -> dict[int, float] | None:
            with session_scope() as session:
                rows = session.execute(
                    select(EnrollmentTransition.enrollment_id, EnrollmentTransition.at).where(
                        EnrollmentTransition.to_state == "replied"
                    )
                ).all()
            found = {int(e): at.timestamp() for e, at in rows}
            return found if len(found) == len(enrollment_ids) else None

        replied = stack.wait_for(
            "every enrolment to be replied", all_replied, timeout=300, interval=0.5
        )
        latencies = [replied[e] - delivered[e] for e in enrollment_ids]
        print(
            "command: make bench-reply  (python -m bench.reply_latency "
            f"--replies {args.replies} --gap {args.gap} --workers {args.workers})"
        )
        print(
            f"machine: {os.cpu_count()} cores; PostgreSQL, Redis, Dovecot IMAP IDLE, "
            f"{args.workers} RQ worker process(es), 1 listener"
        )
        print(f"replies: {len(latencies)} delivered {args.gap}s apart")
        print(
            f"reply->halt seconds: p50 {statistics.median(latencies):.2f}, "
            f"p95 {percentile(latencies, 0.95):.2f}, max {max(latencies):.2f}, "
            f"min {min(latencies):.2f}, {load_note(load)}"
        )
    finally:
        if stack is not None:
            stack.stop()
        smtp.stop()
        dovecot.stop()
        claimed.release()
        if private is not None:
            private.close()
        database.drop()


if __name__ == "__main__":
    main()
