"""Mailbox providers: bytes per unrelated message, Gmail quota, reply -> halt latency with push.

Reproduce:
    make bench-providers                      (all three)
    python -m bench.providers bytes           bytes fetched per message that answers nothing of ours
    python -m bench.providers quota           Gmail quota units per 1,000 new messages
    python -m bench.providers latency         reply -> halt, push/streaming, real processes

Everything runs on real parts where they exist here (PostgreSQL, Redis, Dovecot,
the Procfile's own web/worker/cron/listener processes) and on the wire-faithful
fakes where they cannot (Gmail + Pub/Sub, Microsoft Graph + identity, EWS),
driven by the real client libraries. Prints numbers; asserts nothing.

bytes: a realistic newsletter (35 KB, 4 KB of headers: Received, DKIM, ARC,
List-*) arrives; the mailbox is synced; every byte the server sent during the
sync is counted (the fakes' call logs; for IMAP a counting TCP proxy in front
of Dovecot). Two shapes: one message per sync (what push produces) and 200 in
one sync (a backlog).

quota: Gmail units charged by the fake (Google's per-method table) for 1,000
new messages, one sync per message and all in one sync.

latency: N prospects per provider get step 1 through the provider; replies
arrive at the fake; Gmail pushes through Pub/Sub to `web`, Graph notifies `web`,
Exchange streams to `listener`; `worker` syncs. Latency = reply delivered at the
server -> the enrolment's `replied` transition committed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("imap", "gmail", "exchange", "graph")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def newsletter(to: str, n: int) -> bytes:
    """A realistic bulk message: long Received/DKIM/ARC headers, a 30 KB HTML body."""
    msg = EmailMessage()
    sent = datetime.now(UTC) - timedelta(seconds=5)
    for hop in range(4):
        msg["Received"] = (
            f"from mail-sor-f{hop}1.google.com (mail-sor-f{hop}1.google.com. "
            f"[209.85.220.{hop + 41}]) by mx.seller.test with SMTPS id {make_msgid()[1:20]} "
            f"for <{to}> (Google Transport Security); {format_datetime(sent)}"
        )
    signature = "b=" + ("A1b2C3d4E5f6" * 29)
    msg["ARC-Seal"] = (
        f"i=1; a=rsa-sha256; t=1700000000; cv=none; d=google.com; s=arc-20240605; {signature}"
    )
    msg["ARC-Message-Signature"] = (
        "i=1; a=rsa-sha256; c=relaxed/relaxed; d=google.com; s=arc-20240605; "
        "h=list-unsubscribe:mime-version:subject:message-id:to:from:date:dkim-signature; "
        f"bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; {signature}"
    )
    msg["ARC-Authentication-Results"] = (
        "i=1; mx.google.com; dkim=pass header.i=@shop.test header.s=s1 header.b=abc; "
        "spf=pass (google.com: domain of bounce@shop.test designates 198.51.100.7 as permitted "
        "sender) smtp.mailfrom=bounce@shop.test; dmarc=pass (p=REJECT sp=REJECT dis=NONE) "
        "header.from=shop.test"
    )
    msg["Return-Path"] = f"<bounce-{n}@shop.test>"
    msg["DKIM-Signature"] = (
        "v=1; a=rsa-sha256; c=relaxed/relaxed; d=shop.test; s=s1; t=1700000000; "
        "h=from:to:subject:date:message-id:list-unsubscribe; "
        f"bh=frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=; {signature}"
    )
    msg["From"] = "Shop Deals <deals@shop.test>"
    msg["To"] = to
    msg["Subject"] = f"This week's deals #{n}: up to 40% off"
    msg["Date"] = format_datetime(sent)
    msg["Message-ID"] = make_msgid(domain="shop.test")
    msg["List-Unsubscribe"] = f"<https://shop.test/u/{n}>, <mailto:unsubscribe-{n}@shop.test>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Id"] = "Weekly deals <deals.shop.test>"
    msg["X-Mailer"] = "ShopMailer 7.2"
    msg.set_content("Deals of the week.\n" * 200)
    msg.add_alternative(
        "<html><body>" + "<p>Deals of the week, just for you.</p>" * 700 + "</body></html>",
        subtype="html",
    )
    return msg.as_bytes()


def reply(author: str, to: str, message_id: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = to
    msg["Subject"] = "Re: Quick question"
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content("Yes, let's talk on Tuesday.\n")
    return msg.as_bytes()


# -- the environment ------------------------------------------------------------------------


class CountingProxy:
    """A TCP proxy that counts the bytes a server sends to its clients (for IMAP)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.server_bytes = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if count:
                    with self._lock:
                        self.server_bytes += len(data)
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class World:
    """PostgreSQL + Redis + Dovecot/SMTP + the provider fakes, with this process configured."""

    def __init__(self) -> None:
        self.cleanup: list[Callable[[], None]] = []

    def start(self) -> World:
        from tests.fakes.httpfake import trust_provider_ca

        bundle = trust_provider_ca()
        from alembic import command
        from alembic.config import Config
        from cryptography.fernet import Fernet

        from tests.fakes.ews import FakeEws
        from tests.fakes.gmail import FakeGmail
        from tests.fakes.graph import FakeGraph
        from tests.services import postgres
        from tests.services import redis as test_redis
        from tests.services.dovecot import DovecotServer
        from tests.services.smtp import SmtpServer

        database = postgres.TemporaryDatabase(postgres.find_server()).create()
        self.cleanup.append(database.drop)
        server_url = test_redis.find_server()
        if server_url is None:
            private = test_redis.PrivateRedisServer().start()
            self.cleanup.append(private.close)
            claimed = test_redis.ClaimedDatabase(private.url(db=9), lock_fd=None)
        else:
            claimed = test_redis.claim_database(server_url)
        self.cleanup.append(claimed.release)
        self.dovecot = DovecotServer().start()
        self.cleanup.append(self.dovecot.stop)
        self.smtp = SmtpServer(
            lmtp_host=self.dovecot.host,
            lmtp_port=self.dovecot.lmtp_port,
            password=self.dovecot.password,
            starttls=False,
        ).start()
        self.cleanup.append(self.smtp.stop)
        self.gmail = FakeGmail().start()
        self.graph = FakeGraph().start()
        self.ews = FakeEws().start()
        for fake in (self.gmail, self.graph, self.ews):
            self.cleanup.append(fake.stop)
        self.var_dir = Path(tempfile.mkdtemp(prefix="sightline-bench-providers-"))
        self.port = _free_port()
        base = f"http://127.0.0.1:{self.port}"
        self.env = {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": str(self.var_dir),
            "DATABASE_URL": database.url,
            "REDIS_URL": claimed.url,
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "PUBLIC_BASE_URL": base,
            "PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            "REQUESTS_CA_BUNDLE": bundle,
            "HTTPLIB2_CA_CERTS": bundle,
            **self.gmail.environment(),
            **self.graph.environment(),
            "GMAIL_PUSH_AUDIENCE": f"{base}/webhooks/gmail",
            "GRAPH_NOTIFICATION_URL": f"{base}/webhooks/graph",
            "SIGHTLINE_EXCHANGE_STREAM_MINUTES": "29",
        }
        os.environ.update(self.env)
        _forget_settings()  # a World before this one in the process (--mode all) had its own
        config = Config(str(ROOT / "alembic.ini"))
        config.attributes["configure_logger"] = False
        command.upgrade(config, "head")
        return self

    def stop(self) -> None:
        for step in reversed(self.cleanup):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - tear everything down, report, go on
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)
        _forget_settings()


def _forget_settings() -> None:
    """Forget the cached settings, database engine and Redis client of this process: the
    next World's migration and setup must reach its own database, not a dropped one."""
    from config import get_settings
    from core import db
    from core import redis as core_redis

    get_settings.cache_clear()
    db.reset_for_tests()
    core_redis.get_redis.cache_clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def world() -> Iterator[World]:
    w = World()
    try:
        yield w.start()
    finally:
        w.stop()


class Mailboxes:
    """Create mailboxes of each kind against the world's servers, through production code."""

    def __init__(self, w: World, imap_proxy: CountingProxy | None = None) -> None:
        self.w = w
        self.proxy = imap_proxy
        self.n = 0

    def address(self, kind: str) -> str:
        self.n += 1
        return f"rep{self.n}-{kind}-{os.getpid()}@seller.test"

    def credentials(self, kind: str, address: str) -> dict[str, Any]:
        w = self.w
        if kind == "imap":
            port = self.proxy.port if self.proxy else w.dovecot.imap_port
            server = {
                "host": w.dovecot.host,
                "username": address,
                "password": w.dovecot.password,
                "security": "none",
            }
            return {
                "imap": {**server, "port": port},
                "smtp": {
                    **server,
                    "host": w.smtp.host,
                    "port": w.smtp.port,
                    "password": w.smtp.password,
                },
            }
        if kind == "gmail":
            creds: dict[str, Any] = w.gmail.grant(address)
            return creds
        if kind == "exchange":
            w.ews.add_mailbox(address)
            ews: dict[str, Any] = w.ews.credentials(address, "ntlm")
            return ews
        from tests.integration.provider_harness import graph_sign_in

        w.graph.add_user(address)
        return graph_sign_in(w.graph, address)

    def deliver(self, kind: str, address: str, raw: bytes) -> None:
        w = self.w
        if kind == "imap":
            w.dovecot.deliver(address, raw)
        elif kind == "gmail":
            w.gmail.deliver(address, raw)
        elif kind == "exchange":
            w.ews.deliver(address, raw)
        else:
            w.graph.deliver(address, raw)

    def served(self, kind: str) -> int:
        if kind == "imap":
            assert self.proxy is not None
            return self.proxy.server_bytes
        fakes: dict[str, Any] = {
            "gmail": self.w.gmail,
            "exchange": self.w.ews,
            "graph": self.w.graph,
        }
        return int(fakes[kind].calls.bytes_out())

    def create(self, kind: str, team_id: int, sequence: bool = True) -> tuple[int, str, int | None]:
        from core.crypto import encrypt_json
        from core.db import session_scope
        from core.models import Mailbox, Sequence, SequenceStep, utcnow

        address = self.address(kind)
        creds = self.credentials(kind, address)
        with session_scope() as session:
            mailbox = Mailbox(
                team_id=team_id,
                kind=kind,
                email=address,
                credentials_encrypted=encrypt_json(creds),
                created_at=utcnow(),
            )
            session.add(mailbox)
            session.flush()
            sequence_id = None
            if sequence:
                seq = Sequence(team_id=team_id, mailbox_id=mailbox.id, name=f"Bench {kind}")
                seq.steps = [
                    SequenceStep(
                        position=0, delay_seconds=0, subject="Quick question", body_html="<p>Hi</p>"
                    ),
                    SequenceStep(
                        position=1, delay_seconds=86400, subject="Again", body_html="<p>Bump</p>"
                    ),
                ]
                session.add(seq)
                session.flush()
                sequence_id = seq.id
            return mailbox.id, address, sequence_id


def team(name: str) -> int:
    from core.db import session_scope
    from core.models import Team

    with session_scope() as session:
        t = Team(name=name)
        session.add(t)
        session.flush()
        return t.id


def send_step_one(sequence_id: int, prospects: list[str]) -> dict[int, str]:
    """Enrol and send step 1 through the real provider. {enrollment id: Message-ID}."""
    from core.db import session_scope
    from core.models import SentMessage, Sequence, utcnow
    from worker.sequences import claiming, delivering, enrolling

    out: dict[int, str] = {}
    for prospect in prospects:
        now = utcnow()
        with session_scope() as session:
            seq = session.get_one(Sequence, sequence_id)
            enrollment = enrolling.enroll(
                session, sequence=seq, email=prospect, name=None, now=now - timedelta(seconds=1)
            )
            session.flush()
            sent = claiming.claim_due_step(session, enrollment.id, now)
            assert sent is not None
            enrollment_id, sent_id = enrollment.id, sent.id
        outcome = delivering.deliver(sent_id)
        if outcome.status != "sent":
            raise RuntimeError(f"step 1 not sent: {outcome}")
        with session_scope() as session:
            out[enrollment_id] = session.get_one(SentMessage, sent_id).message_id
    return out


# -- bytes ------------------------------------------------------------------------------------


def bench_bytes(args: argparse.Namespace) -> None:
    load = load_average()  # before this bench's own work: how busy the machine already was
    from worker.sync.engine import sync_mailbox

    with world() as w:
        proxy = CountingProxy((w.dovecot.host, w.dovecot.imap_port))
        boxes = Mailboxes(w, proxy)
        team_id = team("Bench bytes")
        sample = newsletter("x@seller.test", 0)
        head, _, _ = sample.partition(b"\n\n")
        print(
            "command: python -m bench.providers bytes"
            + (f" --per-sync {args.per_sync}" if args.per_sync != 200 else "")
        )
        print(f"message: {len(sample):,} bytes, of which headers {len(head):,} bytes")
        print(f"{'provider':<10} {'1 msg/sync (push)':>20} {f'{args.per_sync} msgs/sync':>18}")
        for kind in KINDS:
            mailbox_id, address, _ = boxes.create(kind, team_id, sequence=False)
            sync_mailbox(mailbox_id)
            singles = []
            for n in range(args.singles):
                boxes.deliver(kind, address, newsletter(address, n))
                before = boxes.served(kind)
                stats = sync_mailbox(mailbox_id)
                assert stats.listed == 1 and stats.fetched == 0, (kind, stats)
                singles.append(boxes.served(kind) - before)
            for n in range(args.per_sync):
                boxes.deliver(kind, address, newsletter(address, 1000 + n))
            before = boxes.served(kind)
            stats = sync_mailbox(mailbox_id)
            assert stats.listed == args.per_sync and stats.fetched == 0, (kind, stats)
            batched = (boxes.served(kind) - before) / args.per_sync
            print(f"{kind:<10} {statistics.median(singles):>17,.0f} B {batched:>15,.0f} B")
        print(
            "(bytes the server sent during the sync, per message; bodies never fetched: "
            f"fetched=0), {load_note(load)}"
        )


# -- quota ------------------------------------------------------------------------------------


def bench_quota(args: argparse.Namespace) -> None:
    load = load_average()  # before this bench's own work: how busy the machine already was
    from worker.sync.engine import sync_mailbox

    with world() as w:
        boxes = Mailboxes(w)
        team_id = team("Bench quota")
        print("command: python -m bench.providers quota")
        mailbox_id, address, _ = boxes.create("gmail", team_id, sequence=False)
        sync_mailbox(mailbox_id)
        start = w.gmail.units_used(address)
        for n in range(args.messages):
            w.gmail.deliver(address, newsletter(address, n))
            sync_mailbox(mailbox_id)
        one_each = w.gmail.units_used(address) - start
        for n in range(args.messages):
            w.gmail.deliver(address, newsletter(address, 10_000 + n))
        start = w.gmail.units_used(address)
        stats = sync_mailbox(mailbox_id)
        batched = w.gmail.units_used(address) - start
        scale = 1000 / args.messages
        print(f"new messages: {args.messages} (none answers us)")
        print(f"units per 1,000 new messages, one sync per message (push): {one_each * scale:,.0f}")
        print(
            f"units per 1,000 new messages, all in one sync:             {batched * scale:,.0f}"
            f"  (listed {stats.listed})"
        )
        print(
            "per-user limit: 15,000 units/minute -> one mailbox can take "
            f"{15_000 / (one_each / args.messages):,.0f} pushed messages a minute, "
            f"{load_note(load)}"
        )


# -- latency -----------------------------------------------------------------------------------


def bench_latency(args: argparse.Namespace) -> None:
    load = load_average()  # before this bench's own work: how busy the machine already was
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import EnrollmentTransition
    from tests.stack import Stack
    from worker.sync.engine import sync_mailbox
    from worker.sync.push import renew_push_job

    with world() as w:
        boxes = Mailboxes(w)
        team_id = team("Bench latency")
        kinds = args.kinds.split(",")
        mailboxes: dict[str, tuple[int, str, dict[int, str]]] = {}
        for kind in kinds:
            mailbox_id, address, sequence_id = boxes.create(kind, team_id)
            assert sequence_id is not None
            prospects = [f"p{n}-{kind}@acme.test" for n in range(args.replies)]
            sent = send_step_one(sequence_id, prospects)
            sync_mailbox(mailbox_id)
            mailboxes[kind] = (mailbox_id, address, sent)
        w.gmail.subscribe_push(w.env["GMAIL_PUSH_AUDIENCE"], audience=w.env["GMAIL_PUSH_AUDIENCE"])
        stack = Stack(w.env, w.var_dir / "logs")
        try:
            stack.start("web", "cron", "listener")
            for n in range(args.workers):
                stack.start_extra = None  # type: ignore[attr-defined]
                from tests.services import process

                stack.running[f"worker{n}"] = process.spawn(
                    stack.commands["worker"],
                    log_path=w.var_dir / "logs" / f"worker{n}.log",
                    env=stack.env,
                    cwd=ROOT,
                )
            _wait_http(w.port)
            for kind in ("gmail", "graph"):
                if kind in mailboxes:
                    result = renew_push_job(mailboxes[kind][0])
                    if result.get("status") != "renewed":
                        raise RuntimeError(f"{kind} push did not start: {result}\n{stack.logs()}")
            time.sleep(3)  # the listener's streams and the workers settle
            print(
                "command: make bench-providers  (python -m bench.providers latency "
                f"--replies {args.replies} --gap {args.gap} --workers {args.workers} "
                f"--kinds {args.kinds})"
            )
            print(
                f"machine: {os.cpu_count()} cores, {load_note(load)}; "
                f"PostgreSQL, Redis; Procfile web, {args.workers} worker(s), cron, listener; "
                "fakes in this process"
            )
            for kind in kinds:
                mailbox_id, address, sent = mailboxes[kind]
                delivered: dict[int, float] = {}
                for n, (enrollment_id, message_id) in enumerate(sent.items()):
                    delivered[enrollment_id] = time.time()
                    boxes.deliver(
                        kind, address, reply(f"p{n}-{kind}@acme.test", address, message_id)
                    )
                    time.sleep(args.gap)

                def all_replied(ids: frozenset[int] = frozenset(sent)) -> dict[int, float] | None:
                    with session_scope() as session:
                        rows = session.execute(
                            select(
                                EnrollmentTransition.enrollment_id, EnrollmentTransition.at
                            ).where(
                                EnrollmentTransition.to_state == "replied",
                                EnrollmentTransition.enrollment_id.in_(ids),
                            )
                        ).all()
                    found = {int(e): at.timestamp() for e, at in rows}
                    return found if len(found) == len(ids) else None

                replied = stack.wait_for(f"{kind} replies", all_replied, timeout=120, interval=0.2)
                latencies = [replied[e] - delivered[e] for e in sent]
                how = {
                    "gmail": "Pub/Sub push -> web",
                    "graph": "Graph notification -> web",
                    "exchange": "EWS streaming -> listener",
                    "imap": "IMAP IDLE -> listener",
                }[kind]
                print(
                    f"{kind:<9} ({how}): n={len(latencies)} "
                    f"p50 {statistics.median(latencies):.2f} s, "
                    f"p95 {percentile(latencies, 0.95):.2f} s, max {max(latencies):.2f} s"
                )
        finally:
            stack.stop()


def _wait_http(port: int, timeout: float = 60) -> None:
    """Wait until web answers /healthz, not merely accepts connections.

    gunicorn listens before its worker has imported the app; under load that
    took over 10 s, and Graph's validation handshake (the fake's 10 s timeout,
    like the real one's) failed against a port that was open but not answering.
    """
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise RuntimeError(f"web did not answer /healthz on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("bytes")
    b.add_argument("--singles", type=int, default=20)
    b.add_argument("--per-sync", type=int, default=200)
    q = sub.add_parser("quota")
    q.add_argument("--messages", type=int, default=1000)
    lat = sub.add_parser("latency")
    lat.add_argument("--replies", type=int, default=30)
    lat.add_argument("--gap", type=float, default=0.3)
    lat.add_argument("--workers", type=int, default=2)
    lat.add_argument("--kinds", default="gmail,graph,exchange,imap")
    args = parser.parse_args()
    {"bytes": bench_bytes, "quota": bench_quota, "latency": bench_latency}[args.what](args)


if __name__ == "__main__":
    main()
