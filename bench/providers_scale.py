"""10,000 mailboxes, a message a minute each, on this machine: pushes, syncs, reply -> halt.

Reproduce: make bench-providers-scale
    (python -m bench.providers_scale --mailboxes 10000 --seconds 120 --sync-processes 2
     --scaling 1,2,4)

What runs, all on this machine (2 cores here):
- PostgreSQL and Redis (the test services), migrated fresh;
- the Procfile's `web` (gunicorn + uvicorn workers), `cron`, one `worker` (the
  other queues) and N `sync` processes (`python -m worker.sync.drain`);
- in this process: the fake Gmail serving every mailbox over TLS, its Pub/Sub
  pushing to `web` (--push-threads delivery threads, tokens reused as Google
  does), and the driver delivering one message per mailbox per minute, spread
  evenly (mailboxes / 60 a second), --reply-share of them replies to a step we sent
  (from --senders threads where the mode's delivery allows it: IMAP's LMTP).

Offered phase, measured over the window after a warm-up: messages delivered
(offered pushes), pushes acknowledged by `web` (2xx), syncs run (the fake's
history.list calls), the sync backlog (`worker.sync.wanted`), CPU per role from
/proc, and reply -> halt latency (reply delivered at the fake -> the enrolment's
`replied` transition committed). After the window the driver stops and the bench
waits (--drain) for every reply; a reply whose enrolment never halted is `lost`.

Capacity phases (--scaling 1,2,4): with push paused, one new message in each of
--capacity mailboxes and a sync asked for each at once; k `sync` processes drain
them; syncs/s and the drainers' CPU per sync, so the factor from 1 to k processes
and the per-core rate (syncs per drainer cpu-second) are measured, not assumed.

The last line is `scale: <mailboxes> mailboxes, offered <r>/s, acknowledged <a>/s,
p95 <s> s, p99 <s> s, lost <n>, load <l>`: with --mode all, each figure the
worst mode's (Gmail push, Graph notifications, IMAP IDLE, EWS streaming), for
the box must carry every kind. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import load_average, load_note, wait_until_quiet  # noqa: E402
from bench.providers import World, newsletter, percentile, reply  # noqa: E402
from bench.scale_modes import ScaleMode, modes  # noqa: E402
from bench.scale_world import cpu_by_group, cpu_by_name, setup  # noqa: E402

__all__ = ["setup"]  # bench.sync_cpu builds its mailboxes with the same setup


class Drainers:
    """The `sync` processes, started from the Procfile's command, stopped between phases."""

    def __init__(self, stack: Any, threads: int) -> None:
        self.stack = stack
        self.threads = threads
        self.running: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self, count: int) -> None:
        from core.redis import get_redis
        from worker.sync import wanted

        def consumers() -> int:
            try:
                return len(get_redis().xinfo_consumers(wanted.STREAM_KEY, wanted.GROUP))
            except Exception:  # noqa: BLE001 - no stream yet: nobody has started
                return 0

        from tests.services import process

        before = consumers()
        logs: list[Path] = []
        for _ in range(count):
            self.started += 1
            log_path = self.stack.log_dir / f"sync{self.started}.log"
            logs.append(log_path)
            self.running.append(
                process.spawn(
                    [*self.stack.commands["sync"], "--threads", str(self.threads)],
                    log_path=log_path,
                    env=self.stack.env,
                    cwd=ROOT,
                )
            )
        deadline = time.monotonic() + 120
        while consumers() < before + count:
            if time.monotonic() > deadline:
                raise SystemExit("the sync processes did not start: see " + str(logs[0]))
            time.sleep(0.2)

    def cpu(self, groups: dict[int, float]) -> float:
        return sum(groups.get(p.pid, 0.0) for p in self.running)

    def stop(self) -> None:
        for proc in self.running:
            proc.send_signal(signal.SIGTERM)
        for proc in self.running:
            proc.wait(timeout=60)
        self.running = []


def _age_folder_lists(world: dict[str, Any], timeout: float = 900.0) -> None:
    """Once the catch-up syncs are done, each kept folder list as old as in steady use
    (bench.scale_common.age_folder_lists)."""
    from bench.scale_common import age_folder_lists
    from worker.sync import wanted

    deadline = time.monotonic() + timeout
    while sum(wanted.backlog().values()) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    aged = age_folder_lists(list(world.get("ids", {}).values()))
    if aged:
        print(f"kept folder lists spread over FOLDER_LIST_KEPT again: {aged} cursors")


def offered_phase(
    args: argparse.Namespace,
    mode: ScaleMode,
    world: dict[str, Any],
    stack: Any,
    drainers: Drainers,
) -> dict[str, float]:
    """Drive a message per mailbox per minute; measure; return the summary's figures."""
    from sqlalchemy import select

    from core.db import session_scope
    from core.models import EnrollmentTransition
    from worker.sync import wanted

    rate = args.mailboxes / 60.0
    addresses: list[str] = world["addresses"]
    targets: list[tuple[int, str, str]] = list(world["targets"])
    random.Random(5).shuffle(targets)
    delivered_replies: dict[int, float] = {}
    stop = threading.Event()
    measuring = threading.Event()
    counters = {"messages": 0, "replies": 0}
    bodies = [newsletter("team@seller.test", n) for n in range(20)]  # built once

    senders = max(1, args.senders) if mode.concurrent_delivery else 1
    in_flight = threading.BoundedSemaphore(senders)
    counted = threading.Lock()
    failed: list[BaseException] = []

    def send(address: str, raw: bytes, is_reply: bool) -> None:
        try:
            mode.deliver(address, raw)
        except BaseException as exc:
            failed.append(exc)
            stop.set()
            raise
        finally:
            in_flight.release()
        with counted:  # counted once delivered: "offered" is what the mail system accepted
            counters["messages"] += 1
            counters["replies"] += is_reply

    def drive() -> None:
        rng = random.Random(7)
        order = list(range(len(addresses)))
        rng.shuffle(order)
        started = time.monotonic()
        n = 0
        with ThreadPoolExecutor(senders, thread_name_prefix="deliver") as pool:
            while not stop.is_set():
                wait = started + n / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                in_flight.acquire()  # behind schedule when every sender is busy: catch up
                address = addresses[order[n % len(order)]]
                if measuring.is_set() and targets and rng.random() < args.reply_share:
                    enrollment_id, target, message_id = targets.pop()
                    delivered_replies[enrollment_id] = time.time()  # latency includes delivery
                    raw, is_reply = reply("boss@customer.test", target, message_id), True
                    address = target
                else:
                    raw, is_reply = bodies[n % len(bodies)], False
                pool.submit(send, address, raw, is_reply)
                n += 1

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    time.sleep(args.warmup)
    groups0, pg0, redis0 = cpu_by_group(), cpu_by_name("postgres"), cpu_by_name("redis-server")
    self0 = sum(os.times()[:2])
    msgs0, acked0, syncs0 = counters["messages"], mode.pushes(), mode.syncs()
    start = time.monotonic()
    measuring.set()
    samples: list[int] = []
    while time.monotonic() - start < args.seconds:
        time.sleep(5)
        samples.append(sum(wanted.backlog().values()))
    window = time.monotonic() - start
    measuring.clear()
    groups1, pg1, redis1 = cpu_by_group(), cpu_by_name("postgres"), cpu_by_name("redis-server")
    self1 = sum(os.times()[:2])
    messages = counters["messages"] - msgs0
    pushes, synced = mode.pushes() - acked0, mode.syncs() - syncs0
    stop.set()
    driver.join(timeout=60)  # deliveries under way finish: every scheduled reply is in
    if failed:
        raise RuntimeError(f"a delivery failed: {failed[0]!r}") from failed[0]

    drain_until = time.monotonic() + args.drain
    replied: dict[int, float] = {}
    while time.monotonic() < drain_until:
        with session_scope() as session:
            rows = session.execute(
                select(EnrollmentTransition.enrollment_id, EnrollmentTransition.at).where(
                    EnrollmentTransition.to_state == "replied",
                    EnrollmentTransition.enrollment_id.in_(list(delivered_replies)),
                )
            ).all()
        replied = {int(e): at.timestamp() for e, at in rows}
        if len(replied) == len(delivered_replies):
            break
        time.sleep(1)
    latencies = [replied[e] - delivered_replies[e] for e in replied]

    def group(prefix: str) -> float:
        return sum(
            groups1.get(p.pid, 0.0) - groups0.get(p.pid, 0.0)
            for name, p in stack.running.items()
            if name.startswith(prefix)
        )

    capacity = window * (os.cpu_count() or 1)
    sync_cpu = drainers.cpu(groups1) - drainers.cpu(groups0)
    web_cpu, listener_cpu = group("web"), group("listener")
    print(
        f"offered: {messages / window:.1f} new messages/s ({args.mailboxes} mailboxes x 1/min), "
        f"{counters['replies']} replies among them"
    )
    print(
        f"pushes acknowledged by web: {pushes / window:.1f}/s; syncs run: {synced / window:.1f}/s"
    )
    print(
        f"sync backlog (waiting + claimed + later): max {max(samples) if samples else 0}, "
        f"{samples[-1] if samples else 0} at the end (sampled every 5 s)"
    )
    print("CPU share of the machine (cpu-seconds / (window x cores)):")
    for label, used in (
        (f"{len(drainers.running)} x Procfile `sync` ({args.threads} threads each)", sync_cpu),
        ("one Procfile `worker` (ticks, other queues)", group("worker")),
        ("web (gunicorn + uvicorn workers)", web_cpu),
        ("cron", group("cron")),
        ("listener (IMAP IDLE, EWS streams; every shard)", listener_cpu),
        ("PostgreSQL", pg1 - pg0),
        ("Redis", redis1 - redis0),
        (f"the fake {mode.name} server, its pushes, the driver (this process)", self1 - self0),
        *(
            [(server[0], groups1.get(server[1], 0.0) - groups0.get(server[1], 0.0))]
            if (server := mode.server_group())
            else []
        ),
    ):
        print(f"  {label:<60} {used / capacity:6.1%}  ({used:7.1f} cpu-s)")
    if synced and sync_cpu:
        print(
            f"sync cpu per sync: {sync_cpu / synced * 1000:.1f} ms "
            f"({synced / sync_cpu:.0f} syncs per sync-process cpu-second)"
        )
    if pushes and web_cpu and not mode.processes():  # the push came through web
        print(f"web cpu per acknowledged push: {web_cpu / pushes * 1000:.2f} ms")
    if pushes and listener_cpu:
        print(f"listener cpu per push: {listener_cpu / pushes * 1000:.2f} ms")
    lost = len(delivered_replies) - len(latencies)
    # No reply offered: no latency (nan). Replies offered and none halted: unbounded (inf).
    unmeasured = float("inf") if delivered_replies else float("nan")
    p95 = percentile(latencies, 0.95) if latencies else unmeasured
    p99 = percentile(latencies, 0.99) if latencies else unmeasured
    if latencies:
        print(
            f"reply -> halt: {len(latencies)}/{len(delivered_replies)} halted within the window "
            f"+ {args.drain:.0f} s; p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, "
            f"p99 {p99:.2f} s, max {max(latencies):.2f} s"
        )
    elif delivered_replies:
        print(f"reply -> halt: none of {len(delivered_replies)} replies halted")
    else:
        print("reply -> halt: no reply was offered (--reply-share 0)")
    return {
        "offered": messages / window,
        "acknowledged": pushes / window,
        "p95": p95,
        "p99": p99,
        "lost": float(lost),
        "sync_per_cpu": synced / sync_cpu if sync_cpu else 0.0,
        "web_ms_per_push": web_cpu / pushes * 1000 if pushes else 0.0,
    }


def ask_as_pushed(mailbox_ids: list[int]) -> None:
    """Ask for these syncs as pushes would: each with its push noted, then all at once.

    Without the note a sync that reads mail delivered seconds before takes it for
    a push that never came, marks the mailbox's push slow and polls it every
    15 s from then on: extra syncs no push asked for (the capacity phases note
    each push as its message is delivered, for the same reason).
    """
    from core.redis import get_redis
    from worker.sync import push_latency, wanted

    with get_redis().pipeline(transaction=False) as pipe:
        for mailbox_id in mailbox_ids:
            push_latency.note_push(mailbox_id, redis=pipe)
        pipe.execute()
    wanted.want_many(mailbox_ids)


def settle(mode: ScaleMode, world: dict[str, Any]) -> float:
    """Pushes held, every mailbox synced until nothing waits: the capacity phases start even.

    The offered phase may leave mailboxes with messages not yet synced (a backlog
    in the mailboxes, not only in Redis): a capacity phase run over them would
    time several messages per sync. Returns the seconds it took (not a measure).
    """
    from worker.sync import wanted

    mode.hold_pushes(True)
    started = time.monotonic()
    ask_as_pushed(list(world["ids"].values()))
    while sum(wanted.backlog().values()) > 0:
        time.sleep(0.2)
    return time.monotonic() - started


def capacity_phase(
    args: argparse.Namespace,
    mode: ScaleMode,
    world: dict[str, Any],
    drainers: Drainers,
    count: int,
    batch: int,
) -> tuple[float, float]:
    """`count` sync processes drain one new message in each of `--capacity` mailboxes.

    Returns (syncs/s, drainer cpu per sync). Pushes are held (`settle`), so the
    only requests are the ones asked for here, all at once; each phase takes its
    own slice of mailboxes (`batch`), synced up to date before.
    """
    from worker.sync import push_latency, wanted

    drainers.stop()
    drainers.start(count)
    ids: dict[str, int] = world["ids"]
    everyone = list(ids.items())
    first = (batch * args.capacity) % max(1, len(everyone))
    chosen = (everyone[first:] + everyone[:first])[: args.capacity]
    syncs0 = mode.syncs()
    for n, (address, mailbox_id) in enumerate(chosen):
        mode.deliver(address, newsletter("team@seller.test", n % 20))
        push_latency.note_push(mailbox_id)  # as its push would, the moment it arrived
    groups0, pg0, redis0 = cpu_by_group(), cpu_by_name("postgres"), cpu_by_name("redis-server")
    start = time.monotonic()
    wanted.want_many([mailbox_id for _, mailbox_id in chosen])
    while sum(wanted.backlog().values()) > 0:
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    cpu = drainers.cpu(cpu_by_group()) - drainers.cpu(groups0)
    pg, redis = cpu_by_name("postgres") - pg0, cpu_by_name("redis-server") - redis0
    synced = mode.syncs() - syncs0
    rate = synced / elapsed
    per = 1000 / max(synced, 1)
    print(
        f"capacity, {count} sync process(es): {synced} syncs of {len(chosen)} asked in "
        f"{elapsed:.1f} s = {rate:.0f} syncs/s; per sync: {cpu * per:.1f} ms sync-process cpu, "
        f"{pg * per:.1f} ms PostgreSQL, {redis * per:.2f} ms Redis"
    )
    return rate, cpu / max(synced, 1)


def run_mode(args: argparse.Namespace, mode: ScaleMode) -> dict[str, float]:
    """One mode in a world of its own: setup, offered phase, capacity phases. Its figures."""
    from bench.providers import _wait_http
    from tests.stack import Stack

    waited, busy = wait_until_quiet()
    print(f"[{mode.name}] waited {waited:.0f} s for a quiet machine: cores {busy:.0%} busy")
    w = World()
    stack: Stack | None = None
    drainers: Drainers | None = None
    try:
        w.start()
        mode.prepare(w, args)
        w.env["SIGHTLINE_SYNC_POLL_SECONDS"] = "60"
        w.env["WEB_CONCURRENCY"] = "2"
        from config import get_settings

        get_settings.cache_clear()
        per_team = max(
            1,
            int(args.mailboxes * args.reply_share * (args.seconds + args.warmup) / 60 / args.teams)
            + 2,
        )
        t0 = time.monotonic()
        world = mode.setup(w, args.mailboxes, args.teams, per_team)
        print(
            f"[{mode.name}] setup: {args.mailboxes} mailboxes, {args.teams} teams, "
            f"{len(world['targets'])} sent steps in {time.monotonic() - t0:.0f} s"
        )
        stack = Stack(w.env, w.var_dir / "logs")
        stack.start("web", "cron", "worker", *mode.processes())
        drainers = Drainers(stack, args.threads)
        drainers.start(args.sync_processes)
        _wait_http(w.port)
        mode.ready(stack, world)
        _age_folder_lists(world)
        result = offered_phase(args, mode, world, stack, drainers)
        for line in mode.report(stack):
            print(line)
        counts = [int(c) for c in args.scaling.split(",") if c.strip()]
        if counts:
            print(f"settled (every mailbox synced, pushes held) in {settle(mode, world):.0f} s")
        rates = {c: capacity_phase(args, mode, world, drainers, c, n) for n, c in enumerate(counts)}
        if len(rates) > 1:
            base = rates[counts[0]][0]
            factors = ", ".join(f"{c}: x{rates[c][0] / base:.2f}" for c in counts)
            print(
                f"scaling (syncs/s relative to {counts[0]} sync process): {factors} "
                f"on {os.cpu_count()} cores shared with web, PostgreSQL, Redis and the fakes"
            )
        if rates:
            best = max(rates.values())
            result["per_core"] = 1 / best[1] if best[1] else 0.0
        print(
            f"{mode.label}: {args.mailboxes} mailboxes, offered {result['offered']:.1f}/s, "
            f"acknowledged {result['acknowledged']:.1f}/s, p95 {result['p95']:.2f} s, "
            f"p99 {result['p99']:.2f} s, lost {int(result['lost'])}"
        )
        return result
    finally:
        if drainers is not None:
            drainers.stop()
        if stack is not None:
            stack.stop()
        w.stop()


def main() -> None:
    # A line as soon as it is printed, also into a file: a stuck phase shows at once.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    available = modes()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        default="all",
        help=f"one of {', '.join(available)}, a comma-separated list, or all",
    )
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=90.0, help="wait for replies after")
    parser.add_argument("--sync-processes", type=int, default=2, help="one per core")
    parser.add_argument("--threads", type=int, default=8, help="threads per sync process")
    parser.add_argument("--push-threads", type=int, default=16, help="push deliveries at once")
    parser.add_argument(
        "--senders",
        type=int,
        default=4,
        help="deliveries at once, for modes that allow it (imap: LMTP connections)",
    )
    parser.add_argument("--listener-shards", type=int, default=1, help="listener processes")
    parser.add_argument("--reply-share", type=float, default=0.1)
    parser.add_argument("--teams", type=int, default=500)
    parser.add_argument("--scaling", default="1,2,4", help="sync processes per capacity phase")
    parser.add_argument("--capacity", type=int, default=3000, help="syncs per capacity phase")
    args = parser.parse_args()
    names = list(available) if args.mode == "all" else args.mode.split(",")
    unknown = [n for n in names if n not in available]
    if unknown:
        parser.error(f"unknown mode {', '.join(unknown)}: choose from {', '.join(available)}")
    load = load_average()  # before this bench's own work: how busy the machine already was
    print(
        f"command: python -m bench.providers_scale --mode {','.join(names)} "
        f"--mailboxes {args.mailboxes} --seconds {args.seconds:.0f} "
        f"--sync-processes {args.sync_processes} --threads {args.threads} "
        f"--listener-shards {args.listener_shards} --reply-share {args.reply_share} "
        f"--scaling {args.scaling} --capacity {args.capacity}"
    )
    print(
        f"machine: {os.cpu_count()} cores; {load_note(load)} at the start (other work on "
        "the machine competes for the same cores)"
    )
    results = {name: run_mode(args, available[name]()) for name in names}
    print(f"machine at the end: {load_note()}")
    # The summary is the worst mode's figure for each: the box must carry every kind.
    offered = min(r["offered"] for r in results.values())
    share = min(r["acknowledged"] / r["offered"] for r in results.values() if r["offered"])
    worst = min(
        results, key=lambda n: results[n]["acknowledged"] / max(results[n]["offered"], 1e-9)
    )
    if len(results) > 1:
        print(
            "scale line = the worst mode per figure (acknowledged: "
            f"{worst}'s share of offered, applied to the lowest offered rate)"
        )
    print(
        f"scale: {args.mailboxes} mailboxes, offered {offered:.1f}/s, "
        f"acknowledged {offered * share:.1f}/s, "
        f"p95 {_worst(r['p95'] for r in results.values()):.2f} s, "
        f"p99 {_worst(r['p99'] for r in results.values()):.2f} s, "
        f"lost {int(sum(r['lost'] for r in results.values()))}, load {load:.2f}"
    )


def _worst(latencies: Iterable[float]) -> float:
    """The largest of the modes' latencies; nan (no reply offered) only when all are.

    max() over a list holding nan answers by order (nan compares false both ways).
    """
    measured = [x for x in latencies if not math.isnan(x)]
    return max(measured) if measured else float("nan")


if __name__ == "__main__":
    main()
