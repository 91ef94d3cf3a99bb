"""IMAP IDLE at scale (`bench.providers_scale --mode imap`): real Dovecot, real listener.

Dovecot (`tests.services.dovecot.DovecotServer(many_clients=True)`: a few imap
processes hold every session, imap-login in high-performance mode) holds every
mailbox; mail arrives over kept LMTP connections, one per delivering thread
(`--senders`), as a mail server's queue runners hand it over. The Procfile's
`listener` (--listener-shards copies, each with its SIGHTLINE_LISTENER_SHARD)
holds an IDLE on every INBOX, all of them on its watch hub (`worker/watch_hub.py`).

`setup` connects mailboxes as production leaves them after a connect, a sync and
a day of pushes, without 10,000 logins: each maildir is made with a known
UIDVALIDITY (a `dovecot-uidlist` Dovecot adopts), the cursor is INBOX at that
UIDVALIDITY with nothing listed yet (`worker.sync.imap`: the next sync asks
`UID SEARCH UID 1:*`), and the push is measured prompt (three delays of a
second: what Dovecot's IDLE earns in `worker.sync.push_latency` after three
messages). The listener's own marks say the IDLE is live; `ready` waits for all
of them and for the catch-up sync every (re)connection asks for.

pushes(): new sync requests (the wanted stream's entries-added, `worker.sync.wanted`)
while nothing else asks: the poll spares a live, prompt IDLE and no follow-up
falls due. A push that finds its mailbox already waiting joins that request and is
not counted. syncs(): IMAP sessions Dovecot logged out (its log): every sync opens
one and logs out; the held IDLEs do not log out while they hold.
hold_pushes(True) stops the listener(s) and cron (SIGSTOP: the IDLEs stay open, the
live marks lapse, and a stopped cron does not poll the mailboxes they spared).

Alone, the listener(s) connecting to every mailbox with nothing offered (connection
setup time, CPU while connecting and while holding, memory per connection):
    python -m bench.scale_imap --mailboxes 1000 [--listener-shards N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import queue
import shutil
import signal
import smtplib
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.scale_world import CLOCK_TICKS, cpu_by_group, proc_status

if TYPE_CHECKING:
    import subprocess

    from bench.providers import World
    from tests.services.dovecot import DovecotServer

UIDVALIDITY_BASE = 1_000_000
PROMPT_DELAYS = [1.0, 1.0, 1.0]
READY_TIMEOUT_SECONDS = 1800.0
QUIET_SECONDS = 30.0


class ImapMode:
    name = "imap"
    label = "imap idle"
    concurrent_delivery = True  # a pool of LMTP connections

    def __init__(self) -> None:
        self.w: World | None = None
        self.shards = 1
        self.stack: Any = None
        self.ids: dict[str, int] = {}
        self._idle_lmtp: queue.SimpleQueue[smtplib.LMTP] = queue.SimpleQueue()
        self._log_offset = 0
        self._logouts = 0
        self._added_total = 0
        self._added_last = 0

    @property
    def dovecot(self) -> DovecotServer:
        assert self.w is not None
        return self.w.dovecot

    def prepare(self, w: World, args: argparse.Namespace) -> None:
        """Dovecot for many clients in place of the tests' one; N listener shards configured."""
        from tests.services.dovecot import DovecotServer
        from tests.services.smtp import SmtpServer

        w.smtp.stop()
        w.dovecot.stop()
        w.dovecot = DovecotServer(many_clients=True).start()
        w.cleanup.append(w.dovecot.stop)
        w.smtp = SmtpServer(
            lmtp_host=w.dovecot.host,
            lmtp_port=w.dovecot.lmtp_port,
            password=w.dovecot.password,
            starttls=False,
        ).start()
        w.cleanup.append(w.smtp.stop)
        self.shards = max(1, int(getattr(args, "listener_shards", 1)))
        # Shard 0 is the Procfile's `listener` the bench starts; ready() starts the others.
        w.env["SIGHTLINE_LISTENER_SHARDS"] = str(self.shards)
        w.env["SIGHTLINE_LISTENER_SHARD"] = "0"
        self.w = w
        w.cleanup.append(self._close_lmtp)

    def setup(self, w: World, mailboxes: int, teams: int, per_team: int) -> dict[str, Any]:
        from sqlalchemy import update

        from bench.scale_common import (
            addresses,
            create_teams,
            insert_mailboxes,
            sequences_with_step_one_sent,
        )
        from core.db import session_scope
        from core.models import Mailbox, MailboxKind, utcnow

        everyone = addresses(mailboxes, teams)
        today = datetime.now(UTC).date().isoformat()
        rows = []
        for n, address in enumerate(everyone):
            uidvalidity = UIDVALIDITY_BASE + n
            self._make_maildir(address, uidvalidity)
            cursor = {"INBOX": {"uidvalidity": uidvalidity, "last_uid": 0, "synced_on": today}}
            rows.append((address, self._credentials(address), cursor))
        with session_scope() as session:
            team_ids = create_teams(session, teams)
            ids = insert_mailboxes(session, MailboxKind.IMAP, team_ids, rows, utcnow())
            session.execute(
                update(Mailbox)
                .where(Mailbox.kind == MailboxKind.IMAP)
                .values(push_delays=PROMPT_DELAYS, push_prompt=True)
            )
            targets = sequences_with_step_one_sent(session, ids, team_ids, per_team)
        self.ids = ids
        return {"addresses": everyone, "targets": targets, "ids": ids}

    def _credentials(self, address: str) -> dict[str, Any]:
        assert self.w is not None
        server = {
            "host": self.dovecot.host,
            "username": address,
            "password": self.dovecot.password,
            "security": "none",
        }
        return {
            "imap": {**server, "port": self.dovecot.imap_port},
            "smtp": {**server, "host": self.w.smtp.host, "port": self.w.smtp.port},
        }

    def _make_maildir(self, address: str, uidvalidity: int) -> None:
        """The user's Maildir as Dovecot makes it, with this UIDVALIDITY (dovecot-uidlist v3)."""
        home = self.dovecot.root / "mail" / address.lower()
        maildir = home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        (maildir / "dovecot-uidlist").write_text(f"3 V{uidvalidity} N1\n")
        if os.geteuid() == 0:  # Dovecot's mail processes run as vmail (DovecotServer)
            owner = pwd.getpwnam("vmail")
            for path in (home, maildir, *maildir.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def processes(self) -> list[str]:
        return ["listener"]

    def ready(self, stack: Any, world: dict[str, Any]) -> None:
        """The other shards started; wait for every IDLE to be live, then the catch-up syncs."""
        from tests.services import process
        from worker.sync import wanted

        self.stack = stack
        for shard in range(1, self.shards):
            name = f"listener{shard}"
            stack.running[name] = process.spawn(
                stack.commands["listener"],
                log_path=stack.log_dir / f"{name}.log",
                env={**stack.env, "SIGHTLINE_LISTENER_SHARD": str(shard)},
                cwd=Path(__file__).resolve().parent.parent,
            )
        ids = list(world["ids"].values())
        started = time.monotonic()
        last_print = started
        while (live := self.live_count(ids)) < len(ids):
            now = time.monotonic()
            if now - started > READY_TIMEOUT_SECONDS:
                raise SystemExit(f"only {live} of {len(ids)} IDLEs live: see {stack.log_dir}")
            if now - last_print >= 10:
                print(f"[imap] {live}/{len(ids)} IDLEs live after {now - started:.0f} s")
                last_print = now
            for name, proc in stack.running.items():
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited ({proc.returncode}): see {stack.log_dir}")
            time.sleep(1.0)
        # Timed from the first listener's start: the bench starts it well before ready().
        live_after = max(
            _running_for(proc.pid) for n, proc in stack.running.items() if n.startswith("listener")
        )
        waited = time.monotonic()
        while sum(wanted.backlog().values()) > 0:
            time.sleep(0.5)
        print(
            f"[imap] {len(ids)} IDLEs live by {live_after:.1f} s after the listener started "
            f"({len(ids) / max(live_after, 1e-9):.0f} connections/s with its start-up, "
            f"{self.shards} listener shard(s)); the catch-up syncs they asked for done "
            f"{live_after + time.monotonic() - waited:.1f} s after"
        )

    @staticmethod
    def live_count(ids: list[int]) -> int:
        """Mailboxes whose IDLE the listener marks live (worker.sync.push_latency)."""
        from core.redis import get_redis
        from worker.sync import push_latency

        redis = get_redis()
        live = 0
        for start in range(0, len(ids), 1000):
            keys = [push_latency.LIVE_KEY.format(mailbox_id=i) for i in ids[start : start + 1000]]
            live += sum(1 for v in redis.mget(keys) if v is not None)
        return live

    def deliver(self, address: str, raw: bytes) -> None:
        """Over a kept LMTP connection (a connection per message costs Dovecot a fork).

        Thread-safe: each caller takes an idle connection (or opens one), so the
        driver's `senders` threads deliver side by side, as a mail server's
        queue runners do; one connection's ~15 ms a message caps a single
        sender near 60 messages a second.
        """
        for attempt in range(2):
            try:
                lmtp = self._idle_lmtp.get_nowait()
            except queue.Empty:
                lmtp = smtplib.LMTP(
                    self.dovecot.host, self.dovecot.lmtp_port, local_hostname="localhost"
                )
            try:
                lmtp.sendmail("sender@sightline.test", [address], raw)
            except smtplib.SMTPServerDisconnected:
                if attempt:
                    raise
                continue
            self._idle_lmtp.put(lmtp)
            return

    def _close_lmtp(self) -> None:
        while True:
            try:
                lmtp = self._idle_lmtp.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(smtplib.SMTPException, OSError):
                lmtp.quit()

    def pushes(self) -> int:
        """New sync requests so far (the stream's entries-added, summed across its deletions)."""
        from core.redis import get_redis
        from worker.sync import wanted

        try:
            added = int(get_redis().xinfo_stream(wanted.STREAM_KEY)["entries-added"])
        except Exception:  # noqa: BLE001 - no stream (yet, or deleted by the bench): none added
            added = 0
        if added < self._added_last:  # the stream was deleted and made again
            self._added_last = 0
        self._added_total += added - self._added_last
        self._added_last = added
        return self._added_total

    def syncs(self) -> int:
        """IMAP sessions that logged out, read from Dovecot's log since the last call."""
        with self.dovecot.log_path.open("rb") as log:
            log.seek(self._log_offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        self._logouts += sum(
            1 for line in complete.splitlines() if b" imap(" in line and b"Logged out" in line
        )
        return self._logouts

    def _held_processes(self) -> list[subprocess.Popen[bytes]]:
        if self.stack is None:
            return []
        return [p for n, p in self.stack.running.items() if n.startswith(("listener", "cron"))]

    def server_group(self) -> tuple[str, int] | None:
        label = "Dovecot (IMAP, logins, LMTP; remote in production)"
        return (label, self.dovecot.pid) if self.dovecot.pid else None

    def hold_pushes(self, held: bool) -> None:
        for proc in self._held_processes():
            os.kill(proc.pid, signal.SIGSTOP if held else signal.SIGCONT)

    def report(self, stack: Any) -> list[str]:
        """Listener memory per held connection, its threads and fds; Dovecot's memory."""
        ids = list(self.ids.values())
        live = self.live_count(ids)
        rss = threads = fds = 0
        for name, proc in stack.running.items():
            if name.startswith("listener"):
                status = proc_status(proc.pid)
                rss += status.get("VmRSS", 0)
                threads += status.get("Threads", 0)
                fds += len(os.listdir(f"/proc/{proc.pid}/fd"))
        dovecot_rss, dovecot_procs, imap_procs = self._dovecot_memory()
        lines = [
            f"listener ({self.shards} process(es)): {live} IDLEs live, RSS {rss / 1024:.0f} MiB "
            f"= {rss / max(live, 1):.0f} KiB per connection, {threads} threads, {fds} fds",
            f"dovecot: {dovecot_procs} processes ({imap_procs} imap), RSS {dovecot_rss / 1024:.0f} "
            f"MiB = {dovecot_rss / max(live, 1):.0f} KiB per IDLE client",
        ]
        return lines

    def cpu_note(self, stack: Any, before: dict[int, float]) -> str:
        """CPU seconds used since `before` (scale_world.cpu_by_group) by role and by Dovecot."""
        after = cpu_by_group()
        used: dict[str, float] = {}
        for name, proc in stack.running.items():
            role = name.rstrip("0123456789")
            used[role] = used.get(role, 0.0) + after.get(proc.pid, 0.0) - before.get(proc.pid, 0.0)
        master = self.dovecot.pid or -1
        used["dovecot"] = after.get(master, 0.0) - before.get(master, 0.0)
        return ", ".join(f"{role} {seconds:.1f}" for role, seconds in used.items())

    def _dovecot_memory(self) -> tuple[int, int, int]:
        """(RSS KiB, processes, imap processes) of this Dovecot: its master and its children."""
        master = self.dovecot.pid or -1
        rss = procs = imap = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            status = proc_status(int(entry))
            if int(entry) != master and status.get("PPid") != master:
                continue
            rss += status.get("VmRSS", 0)
            procs += 1
            imap += 1 if status.get("Name") == "imap" else 0
        return rss, procs, imap


def _running_for(pid: int) -> float:
    """Seconds since the process started (/proc/<pid>/stat field 22, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - int(fields[19]) / CLOCK_TICKS


def listener_alone(mailboxes: int, shards: int) -> None:
    """The listener(s) connecting to every mailbox, nothing offered: setup time and memory."""
    from bench.providers import World
    from tests.stack import Stack

    mode = ImapMode()
    w = World()
    stack: Stack | None = None
    try:
        w.start()
        mode.prepare(w, argparse.Namespace(listener_shards=shards))
        w.env["LOG_LEVEL"] = "INFO"  # the listener's reconnects, should there be any
        from config import get_settings

        get_settings.cache_clear()
        t0 = time.monotonic()
        world = mode.setup(w, mailboxes, max(1, min(500, mailboxes // 20)), 1)
        print(f"[imap] setup: {mailboxes} mailboxes in {time.monotonic() - t0:.0f} s")
        stack = Stack(w.env, w.var_dir / "logs")
        groups = cpu_by_group()
        stack.start("sync", *mode.processes())
        mode.ready(stack, world)
        print(f"[imap] cpu-seconds while connecting: {mode.cpu_note(stack, groups)}")
        groups = cpu_by_group()
        time.sleep(QUIET_SECONDS)
        print(
            f"[imap] cpu-seconds holding them {QUIET_SECONDS:.0f} s, nothing delivered: "
            f"{mode.cpu_note(stack, groups)}"
        )
        for line in mode.report(stack):
            print(line)
        print(f"[imap] catch-up syncs counted at Dovecot: {mode.syncs()}")
    finally:
        if stack is not None:
            stack.stop()
            kept = Path(tempfile.gettempdir()) / "sightline-scale-imap-logs"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(stack.log_dir, kept)
            shutil.copy(w.dovecot.log_path, kept / "dovecot.log")
            print(f"[imap] logs kept in {kept}")
        w.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=listener_alone.__doc__)
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--listener-shards", type=int, default=1)
    args = parser.parse_args()
    print(
        f"command: python -m bench.scale_imap --mailboxes {args.mailboxes} "
        f"--listener-shards {args.listener_shards}"
    )
    listener_alone(args.mailboxes, args.listener_shards)


if __name__ == "__main__":
    main()
