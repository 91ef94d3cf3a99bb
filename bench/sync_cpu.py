"""CPU per Gmail push sync in the Procfile's `sync` process, and where it goes.

Reproduce:
    make bench-sync-cpu   (python -m bench.sync_cpu --mailboxes 200 --rounds 4)
    python -m bench.sync_cpu                       measure: the real `sync` process, --burst
    python -m bench.sync_cpu --profile             cProfile of the same syncs, in this process

What a push produces at scale (bench.providers_scale): one new, unrelated message
in a Gmail mailbox, then one sync job for it. Here N mailboxes (connected as in
the scale bench: live token, cursor, watch) each get one newsletter and one sync
job through `request_sync`; then the Procfile's `sync` command (SyncWorker on
the sync queue) runs them with `--burst` and exits. Its CPU comes from the
kernel (wait4 rusage). A burst over an empty queue is run first, and between
rounds, to take start-up (imports, warm-up) out: per sync = (CPU of the round -
CPU of the empty burst) / N. The fake Gmail runs in this process, so it is not
counted. Rounds repeat so a loaded machine shows its spread. Prints; asserts nothing.

--profile runs the Procfile's worker class in this process under cProfile (the fake's
threads are not profiled) and prints the functions by own time and by
cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import load_average, load_note  # noqa: E402
from bench.providers import World, newsletter  # noqa: E402
from bench.providers_scale import setup  # noqa: E402


def queue_round(w: World, ids: dict[str, int], bodies: list[bytes]) -> int:
    """One new message in every mailbox and a sync asked for each. Returns how many were asked."""
    from worker.sync.engine import request_sync

    queued = 0
    for n, (address, mailbox_id) in enumerate(ids.items()):
        w.gmail.deliver(address, bodies[n % len(bodies)])
        queued += request_sync(mailbox_id)
    return queued


def burst_cpu(command: list[str], env: dict[str, str]) -> float:
    """Run the `sync` process over the queue until it is empty; its CPU seconds."""
    proc = subprocess.Popen(
        [*command, "--burst"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(errors.decode("utf-8", "replace"))
        raise SystemExit(f"sync process exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def history_calls(w: World) -> int:
    return sum(1 for c in w.gmail.calls.all() if c.label == "users.history.list")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile in this process")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--profile-out", help="also write the pstats file here (for snakeviz &c.)")
    args = parser.parse_args()
    load = load_average()  # before this bench's own work: how busy the machine already was

    from tests.stack import procfile

    w = World()
    try:
        w.start()
        w.env["LOG_LEVEL"] = "WARNING"
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, **w.env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        world = setup(w, args.mailboxes, max(1, args.mailboxes // 20), 1)
        ids: dict[str, int] = world["ids"]
        bodies = [newsletter("team@seller.test", n) for n in range(20)]
        command = procfile()["sync"]
        # A first round warms PostgreSQL's caches and the fake; not counted.
        queue_round(w, ids, bodies)
        burst_cpu(command, env)

        if args.profile:
            profile(w, ids, bodies, args.top, args.profile_out)
            return

        per_sync: list[float] = []
        for r in range(args.rounds):
            idle = burst_cpu(command, env)
            before = history_calls(w)
            queued = queue_round(w, ids, bodies)
            used = burst_cpu(command, env)
            syncs = history_calls(w) - before
            cost = (used - idle) / max(syncs, 1)
            per_sync.append(cost)
            print(
                f"round {r + 1}: {queued} jobs, {syncs} syncs; sync process "
                f"{used:.2f} cpu-s, empty burst {idle:.2f} cpu-s -> {cost * 1000:.1f} ms per sync "
                f"(load {os.getloadavg()[0]:.1f})"
            )
        print(
            f"command: python -m bench.sync_cpu --mailboxes {args.mailboxes} --rounds {args.rounds}"
        )
        print(
            f"cpu per Gmail push sync (one new unrelated message), Procfile `sync`: "
            f"median {statistics.median(per_sync) * 1000:.1f} ms, "
            f"min {min(per_sync) * 1000:.1f}, max {max(per_sync) * 1000:.1f}; "
            f"{os.cpu_count()} cores, {load_note(load)}"
        )
    finally:
        w.stop()


def profile(w: World, ids: dict[str, int], bodies: list[bytes], top: int, out: str | None) -> None:
    """The syncs as the `sync` process runs them (`drain_waiting`), in this process, profiled."""
    from worker.sync.drain import drain_waiting

    queue_round(w, ids, bodies)
    drain_waiting()  # warm this process as the real one is after its first syncs
    before = history_calls(w)
    queue_round(w, ids, bodies)
    # CPU of this thread only: the fake's threads and waits on sockets are left out.
    profiler = cProfile.Profile(time.thread_time)
    started = time.thread_time()
    profiler.enable()
    drain_waiting()
    profiler.disable()
    used = time.thread_time() - started
    syncs = history_calls(w) - before
    print(
        f"profiled {syncs} syncs: {used / max(syncs, 1) * 1000:.1f} ms of this thread's cpu "
        "per sync (with the profiler's overhead)"
    )
    if out:
        profiler.dump_stats(out)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


if __name__ == "__main__":
    main()
