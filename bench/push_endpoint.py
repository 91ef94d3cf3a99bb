"""What one Gmail push costs the web process: CPU, wall time and Redis commands, before and after.

Reproduce:
    python -m bench.push_endpoint                  this tree, and the tree before the drain
    python -m bench.push_endpoint --before REV     another revision to compare with

The endpoint (`POST /webhooks/gmail`, shared-token authentication so the token
check is the same in both) is called in-process through the `web` process's
ASGI app (`web.tracking.app`, as uvicorn calls it, without the HTTP parsing)
for --pushes distinct mailboxes, each push naming new mail, so each one asks
for a sync. Measured per push: this process's CPU (`time.process_time`), wall time,
and Redis commands (INFO `total_commands_processed`). "Before" is the same
measurement run by the same script on a `git worktree` of REV (default: the
commit before the sync requests were drained, where each push queued an RQ
job); both use one PostgreSQL database and one Redis database, emptied between
them. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The commit before `worker.sync.wanted`: request_sync was one RQ job per push.
BEFORE = "72c3ac1^"
PUSH_TOKEN = "bench-push-token-0123456789abcdef"


def measure(tree: Path, pushes: int) -> dict[str, float]:
    """In a child process importing `tree`'s code: the endpoint's cost per push."""
    sys.path.insert(0, str(tree))
    from sqlalchemy import insert, select

    from core.crypto import encrypt_json
    from core.db import session_scope
    from core.models import Mailbox, MailboxPush, PushKind, Team, utcnow
    from core.redis import get_redis
    from web.tracking.app import SightlineAsgi

    now = utcnow()
    with session_scope() as session:
        team = Team(name="Push bench")
        session.add(team)
        session.flush()
        rows = [
            {
                "team_id": team.id,
                "kind": "gmail",
                "email": f"push{n:05d}@seller.test",
                "credentials_encrypted": encrypt_json({"token": "x"}),
                "sync_cursor": {"history_id": "100"},
                "status": "active",
                "created_at": now,
            }
            for n in range(pushes)
        ]
        session.execute(insert(Mailbox), rows)
        ids = dict(session.execute(select(Mailbox.email, Mailbox.id)).tuples().all())
        session.execute(
            insert(MailboxPush),
            [
                {
                    "mailbox_id": i,
                    "kind": PushKind.GMAIL_WATCH,
                    "external_id": a,
                    "expires_at": now,
                    "renewed_at": now,
                    "created_at": now,
                }
                for a, i in ids.items()
            ],
        )
    app = SightlineAsgi()
    app.start()

    async def post(body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/webhooks/gmail",
            "raw_path": b"/webhooks/gmail",
            "query_string": f"token={PUSH_TOKEN}".encode(),
            "root_path": "",
            "headers": [
                (b"host", b"localhost:5000"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 5000),
        }
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        statuses: list[int] = []

        async def receive() -> dict[str, object]:
            return pending.pop() if pending else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(str(message["status"])))

        await app(scope, receive, send)  # type: ignore[arg-type]
        return statuses[0]

    def envelope(address: str) -> bytes:
        data = json.dumps({"emailAddress": address, "historyId": 200}).encode()
        return json.dumps(
            {"message": {"data": base64.b64encode(data).decode(), "messageId": "1"}}
        ).encode()

    bodies = [envelope(a) for a in ids]
    warm = bodies[: min(50, len(bodies) // 10)]
    redis = get_redis()

    async def run() -> tuple[float, float, int]:
        for body in warm:  # first requests build caches; not counted
            await post(body)
        commands0 = int(redis.info("stats")["total_commands_processed"])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for body in bodies[len(warm) :]:
            status = await post(body)
            assert status == 204, status
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await app.stop()
        return cpu, wall, commands0

    cpu, wall, commands0 = asyncio.run(run())
    commands = int(redis.info("stats")["total_commands_processed"]) - commands0 - 1
    counted = len(bodies) - len(warm)
    return {
        "cpu_ms": cpu / counted * 1000,
        "wall_ms": wall / counted * 1000,
        "redis_commands": commands / counted,
    }


def _run_child(tree: Path, pushes: int, env: dict[str, str]) -> dict[str, float]:
    script = str(ROOT / "bench" / "push_endpoint.py")
    out = subprocess.run(
        [sys.executable, script, "--child", str(tree), f"--pushes={pushes}"],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--before", default=BEFORE, help="the revision to compare with")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child), args.pushes)))
        return

    sys.path.insert(0, str(ROOT))
    from alembic import command
    from alembic.config import Config
    from cryptography.fernet import Fernet

    from bench.machine import load_average, load_note
    from tests.services import postgres
    from tests.services import redis as test_redis

    load = load_average()
    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    server = test_redis.find_server()
    if server is None:
        raise SystemExit("no Redis server answers (scripts/test-prereqs.sh core starts one)")
    claimed = test_redis.claim_database(server)
    worktree = Path(tempfile.mkdtemp(prefix="sightline-push-before-"))
    try:
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        env = {
            **os.environ,
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": str(worktree / "var"),
            "DATABASE_URL": database.url,
            "REDIS_URL": claimed.url,
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "PUBLIC_BASE_URL": "http://localhost:5000",
            "LOG_LEVEL": "WARNING",
            "GMAIL_PUSH_TOKEN": PUSH_TOKEN,
        }
        os.environ.update(env)
        config = Config(str(ROOT / "alembic.ini"))
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")
        results = {}
        for label, tree in (("before", worktree), ("after", ROOT)):
            _empty(env)
            results[label] = _run_child(tree, args.pushes, env)
        print(
            f"command: python -m bench.push_endpoint --pushes {args.pushes} --before {args.before}"
        )
        for label, r in results.items():
            where = f"a worktree of {args.before}" if label == "before" else "this tree"
            print(
                f"gmail push endpoint, {label:<6} ({where}): "
                f"{r['cpu_ms']:.2f} ms cpu, {r['wall_ms']:.2f} ms wall, "
                f"{r['redis_commands']:.1f} Redis commands per push"
            )
        print(
            f"push endpoint cost: before {results['before']['cpu_ms']:.2f} ms cpu, "
            f"after {results['after']['cpu_ms']:.2f} ms cpu per push, {load_note(load)}"
        )
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False
        )
        claimed.release()
        database.drop()


def _empty(env: dict[str, str]) -> None:
    """Empty the bench's tables and Redis database between the two runs."""
    import redis
    from sqlalchemy import create_engine, text

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    engine = create_engine(env["DATABASE_URL"].replace("postgres://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE mailbox_push, mailboxes, teams RESTART IDENTITY CASCADE"))
    engine.dispose()


if __name__ == "__main__":
    main()
