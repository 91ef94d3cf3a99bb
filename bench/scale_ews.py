"""Exchange (EWS) streaming, as `bench.providers_scale --mode ews` drives it: the `listener` holds
a GetStreamingEvents stream per mailbox.

The fake Exchange (tests.fakes.ews, in the bench process, one thread per
connection) holds every mailbox. `setup` connects them as production leaves
them after a connect and a sync, without 10,000 logins: HTTP Basic credentials
(the cheapest the provider supports and the fake checks: no NTLM handshake per
connection, no token), and a cursor at Inbox's current SyncState with the
well-known folder ids, so the first sync neither relists nor asks GetFolder, and
the folder list as a sync keeps it, each mailbox's made at another moment of the
last `folders.FOLDER_LIST_KEPT` (a tenth of syncs list again, as in steady
production at a message a minute).
Each mailbox's push is marked measured prompt, as after a day connected, so
the poll spares it while its stream is held (worker.sync.polling).
The `listener` (--listener-shards processes: the Procfile's is shard 0, the
others are started here with SIGHTLINE_LISTENER_SHARD) subscribes each mailbox
and holds its stream; `ready` waits until the fake holds a stream for every one.

pushes(): stream frames carrying new-mail events the fake wrote (each becomes
the listener's request_sync). syncs(): SyncFolderItems calls on Inbox at the
fake (every sync reads Inbox once). hold_pushes: new mail waits at the fake,
keep-alives go on (the streams stay live). report(): the listener's resident
memory and threads per held connection, and the fake's.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.scale_world import proc_status

if TYPE_CHECKING:
    from bench.providers import World
    from tests.fakes.ews import FakeEws

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 1800.0


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard one (the fake holds a socket per stream; the
    listener, started from this process, inherits it). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class EwsMode:
    name = "ews"
    label = "ews streaming"
    concurrent_delivery = False

    def __init__(self) -> None:
        self.w: World | None = None
        self.shards = 1
        self.extra: list[subprocess.Popen[bytes]] = []
        self.fake_rss_before = 0
        self.mailboxes = 0
        self.started = time.monotonic()

    @property
    def fake(self) -> FakeEws:
        assert self.w is not None
        return self.w.ews

    def prepare(self, w: World, args: argparse.Namespace) -> None:
        limit = raise_fd_limit()
        self.shards = max(1, int(getattr(args, "listener_shards", 1) or 1))
        if args.mailboxes + 200 > limit:
            print(f"[ews] warning: RLIMIT_NOFILE {limit} < one socket per stream + spare")
        w.env["SIGHTLINE_LISTENER_SHARDS"] = str(self.shards)
        w.env["SIGHTLINE_LISTENER_SHARD"] = "0"  # the Procfile's listener; the others: ready()
        w.cleanup.append(self._stop_shards)
        self.w = w

    def setup(self, w: World, mailboxes: int, teams: int, per_team: int) -> dict[str, Any]:
        from sqlalchemy import update

        from bench import scale_common
        from core.db import session_scope
        from core.models import Mailbox, MailboxKind, utcnow
        from worker.sync.folders import FOLDER_LIST_KEPT

        now = utcnow()
        fake = w.ews
        addresses = scale_common.addresses(mailboxes, teams)
        fake.add_mailboxes(addresses)
        well_known = well_known_names()
        folders = read_folders(fake, addresses[0])
        # Each cursor's folder list was made at a different moment of the last
        # FOLDER_LIST_KEPT, as in a mailbox that has synced for a while: the share of
        # syncs that list again (FindFolder) is production's steady one from the start.
        kept = FOLDER_LIST_KEPT / len(addresses)
        rows = [
            (
                address,
                fake.credentials(address, "basic"),
                cursor(fake, address, well_known, folders, now, now - kept * i),
            )
            for i, address in enumerate(addresses)
        ]
        with session_scope() as session:
            team_ids = scale_common.create_teams(session, teams)
            ids = scale_common.insert_mailboxes(session, MailboxKind.EXCHANGE, team_ids, rows, now)
            # Streams connected a while ago were measured prompt (worker.sync.push_latency):
            # while the listener holds one, the poll spares its mailbox (worker.sync.polling).
            session.execute(
                update(Mailbox)
                .where(Mailbox.kind == MailboxKind.EXCHANGE)
                .values(push_prompt=True, push_delays=[0.5] * 3)
            )
            targets = scale_common.sequences_with_step_one_sent(session, ids, team_ids, per_team)
        self.mailboxes = mailboxes
        return {"addresses": addresses, "targets": targets, "ids": ids}

    def processes(self) -> list[str]:
        # Asked for just before the stack starts them: the streams are timed from here.
        self.started = time.monotonic()
        self.fake_rss_before = proc_status(os.getpid()).get("VmRSS", 0)
        return ["listener"]

    def ready(self, stack: Any, world: dict[str, Any]) -> None:
        """Start the other listener shards; return once the fake holds every mailbox's stream."""
        from tests.services import process

        started = self.started
        for shard in range(1, self.shards):
            env = {**stack.env, "SIGHTLINE_LISTENER_SHARD": str(shard)}
            self.extra.append(
                process.spawn(
                    stack.commands["listener"],
                    log_path=stack.log_dir / f"listener{shard}.log",
                    env=env,
                    cwd=ROOT,
                )
            )
        wanted = len(world["ids"])
        shown = started
        while self.fake.live_streams < wanted:
            now = time.monotonic()
            if now - started > READY_TIMEOUT:
                raise SystemExit(
                    f"[ews] only {self.fake.live_streams} of {wanted} streams after "
                    f"{READY_TIMEOUT:.0f} s: see {stack.log_dir}/listener*.log"
                )
            if now - shown >= 10:
                print(
                    f"[ews] {self.fake.live_streams}/{wanted} streams held "
                    f"after {now - started:.0f} s"
                )
                shown = now
            time.sleep(0.2)
        print(
            f"[ews] the listener ({self.shards} shard(s)) holds {wanted} streams: "
            f"{time.monotonic() - started:.1f} s after the listener was started"
        )

    def deliver(self, address: str, raw: bytes) -> None:
        self.fake.deliver(address, raw)

    def pushes(self) -> int:
        return self.fake.event_frames

    def syncs(self) -> int:
        return self.fake.sync_calls("inbox")

    def server_group(self) -> tuple[str, int] | None:
        return None

    def hold_pushes(self, held: bool) -> None:
        self.fake.hold_events(held)

    def _listener_pids(self, stack: Any) -> list[int]:
        pids = [p.pid for name, p in stack.running.items() if name == "listener"]
        return pids + [p.pid for p in self.extra]

    def report(self, stack: Any) -> list[str]:
        pids = self._listener_pids(stack)
        listeners = [proc_status(pid) for pid in pids]
        rss = sum(s.get("VmRSS", 0) for s in listeners)
        threads = sum(s.get("Threads", 0) for s in listeners)
        streams = self.fake.live_streams
        me = proc_status(os.getpid())
        fake_rss = me.get("VmRSS", 0) - self.fake_rss_before
        per = max(streams, 1)
        return [
            f"[ews] listener ({len(pids)} process(es)): {rss / 1024:.0f} MiB resident, "
            f"{threads} threads for {streams} streams = {rss / per:.0f} KiB and "
            f"{threads / per:.2f} threads per connection (the process's own memory included: "
            "compare two sizes for the cost of one more)",
            f"[ews] fake Exchange (this process): +{fake_rss / 1024:.0f} MiB resident since the "
            f"listener started ({fake_rss / per:.0f} KiB per connection), "
            f"{me.get('Threads', 0)} threads in all ({threading.active_count()} Python threads)",
        ]

    def _stop_shards(self) -> None:
        from tests.services import process

        for proc in self.extra:
            process.stop(proc)
        self.extra = []


def well_known_names() -> list[str]:
    """Every distinguished folder a sync may ask the id of (worker.sync.exchange_folders)."""
    from worker.sync.folders import EXCHANGE_ALWAYS_SKIPPED, EXCHANGE_ROLE_FOLDERS

    return sorted({"inbox", *EXCHANGE_ALWAYS_SKIPPED, *EXCHANGE_ROLE_FOLDERS.values()})


def read_folders(fake: FakeEws, address: str) -> list[str]:
    """The keys of the folders a sync reads, as production lists them (worker.sync.exchange),
    asked once, for one mailbox: every fake mailbox has the same folders under the same keys."""
    from worker.sync.exchange import ExchangeProvider
    from worker.sync.exchange_folders import watched_folders
    from worker.sync.folders import skip_list

    credentials = fake.credentials(address, "basic")
    provider = ExchangeProvider(address, credentials)
    try:
        listed, _ = watched_folders(provider.account, skip_list(credentials), {})
    finally:
        provider.close()
    mailbox = fake.store.mailbox(address)
    assert mailbox is not None
    keys = {folder_id: key for key, folder_id in mailbox.folder_ids.items()}
    return [keys[folder.id] for folder in listed]


def cursor(
    fake: FakeEws,
    address: str,
    well_known: list[str],
    folders: list[str],
    now: Any,
    listed_at: Any,
) -> dict[str, Any]:
    """The cursor a sync of this mailbox would have left a moment ago (worker.sync.exchange):
    Inbox's SyncState, the distinguished folders' ids ("" where the server has none), and
    the list of `folders` (keys) made at `listed_at`."""
    from config import get_settings
    from worker.sync.folders import folder_listing

    mailbox = fake.store.mailbox(address)
    assert mailbox is not None
    inbox = mailbox.folder_ids["inbox"]
    ids = [mailbox.folder_ids[key] for key in folders]
    return {
        "folders": {inbox: {"sync_state": fake.sync_state(address), "synced_at": now.isoformat()}},
        "well_known": {name: mailbox.folder_ids.get(name, "") for name in well_known},
        "listing": folder_listing(ids, get_settings().providers.skip_folders, listed_at),
    }


def profile(mailboxes: int, top: int) -> None:
    """CPU per EWS push sync (one new unrelated message), as `drain_waiting` runs it, profiled.

    The syncs run in this thread (`worker.sync.drain.drain_waiting`, what a `sync`
    process does per entry); the fake's threads are not counted (thread CPU time).
    """
    import cProfile
    import pstats
    import sys

    from bench.providers import World, newsletter
    from worker.sync.drain import drain_waiting
    from worker.sync.engine import request_sync

    w = World()
    try:
        w.start()
        mode = EwsMode()
        mode.w = w
        world = mode.setup(w, mailboxes, max(1, mailboxes // 20), 1)
        ids: dict[str, int] = world["ids"]
        bodies = [newsletter("team@seller.test", n) for n in range(20)]

        def one_round() -> None:
            for n, (address, mailbox_id) in enumerate(ids.items()):
                w.ews.deliver(address, bodies[n % len(bodies)])
                request_sync(mailbox_id)

        one_round()
        drain_waiting()  # warm this process as a `sync` process is after its first syncs
        one_round()
        before = mode.syncs()
        started = time.thread_time()
        drain_waiting()
        plain = (time.thread_time() - started) / max(mode.syncs() - before, 1)
        one_round()
        before = mode.syncs()
        profiler = cProfile.Profile(time.thread_time)
        started = time.thread_time()
        profiler.enable()
        drain_waiting()
        profiler.disable()
        used = time.thread_time() - started
        syncs = mode.syncs() - before
        print(f"command: python -m bench.scale_ews --profile --mailboxes {mailboxes}")
        print(f"EWS sync, one new unrelated message: {plain * 1000:.1f} ms of cpu per sync")
        print(
            f"profiled {syncs} EWS syncs: {used / max(syncs, 1) * 1000:.1f} ms of this thread's "
            "cpu per sync (with the profiler's overhead)"
        )
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
    finally:
        w.stop()


def hold(mailboxes: int, seconds: float) -> None:
    """The Procfile's `listener` alone holds a stream per mailbox: how long until all are
    held, memory and threads per connection, then CPU over `seconds` of keep-alives only."""
    from bench.providers import World
    from bench.scale_world import cpu_by_group
    from tests.stack import Stack

    w = World()
    stack: Stack | None = None
    try:
        w.start()
        mode = EwsMode()
        mode.prepare(w, argparse.Namespace(mailboxes=mailboxes, listener_shards=1))
        w.env["LOG_LEVEL"] = "INFO"  # the listener's reconnections, tallied at the end
        started = time.monotonic()
        world = mode.setup(w, mailboxes, max(1, mailboxes // 20), 1)
        print(f"command: python -m bench.scale_ews --hold {mailboxes} --seconds {seconds:.0f}")
        print(f"[ews] setup: {mailboxes} mailboxes in {time.monotonic() - started:.0f} s")
        stack = Stack(w.env, w.var_dir / "logs")
        stack.start(*mode.processes())
        mode.ready(stack, world)
        for line in mode.report(stack):
            print(line)
        listener = stack.running["listener"].pid
        cpu0, at0 = cpu_by_group().get(listener, 0.0), time.monotonic()
        time.sleep(seconds)
        cpu = cpu_by_group().get(listener, 0.0) - cpu0
        window = time.monotonic() - at0
        print(
            f"[ews] holding {mode.fake.live_streams} idle streams (a keep-alive each "
            f"{mode.fake.app.keepalive_seconds:.0f} s): listener {cpu / window:.1%} of a core "
            f"over {window:.0f} s"
        )
        for line in mode.report(stack):
            print(line)
        print(reconnections(stack.log_dir / "listener.log"))
    finally:
        if stack is not None:
            stack.stop()
        w.stop()


def reconnections(log: Path) -> str:
    """Why the listener's streams were re-opened or its threads ended, from its log."""
    import re
    from collections import Counter

    reasons: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if "idle_reconnect" in line or "idle_stopped" in line or "watch_stopped" in line:
            reason = line.partition("reason=")[2]
            reasons[re.sub(r"\d+", "N", reason)[:120]] += 1
        elif line.startswith("Exception in thread"):
            reasons["a watch thread died"] += 1
    if not reasons:
        return "[ews] the listener reconnected no stream"
    shown = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(5))
    return f"[ews] listener reconnections: {shown}"


def main() -> None:
    parser = argparse.ArgumentParser(description="EWS streaming alone: --profile or --hold N.")
    parser.add_argument("--profile", action="store_true", help="cProfile EWS push syncs")
    parser.add_argument("--mailboxes", type=int, default=200, help="for --profile")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--hold", type=int, default=0, help="the listener alone holds N streams")
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window for --hold")
    args = parser.parse_args()
    if args.hold:
        hold(args.hold, args.seconds)
    else:
        profile(args.mailboxes, args.top)


if __name__ == "__main__":
    main()
