"""Pixel endpoint throughput against nginx serving the same GIF, on loopback.

Reproduce: `make bench-pixel` (or `python -m bench.pixel --duration 10 --connections 50`).

Starts a private redis-server (unix socket, AOF with fsync every second: the
production setting), the Procfile's `web` process (gunicorn with uvicorn
workers, WEB_CONCURRENCY=2) and nginx (2 workers) answering any `/o/*.gif` with
the same 43-byte GIF from a file.

What is timed must be the path that writes: a hit is verified, appended to the
stream, answered. Hammering one token would time something else: the per-copy
rate limit (`web.tracking.limits`) sheds a token after 20 hits from one
address, and a shed hit writes nothing. So the bench makes `--tokens` sent
messages (real rows in a migrated database, one recipient each) and their
signed open tokens, and wrk walks those distinct tokens in a random order per
thread (`PIXEL_LUA`, paths read from a file), the same script against nginx
and against the pixel. Each token is then hit a few times in the run, far
below the limit.

Counted afterwards, from three sources that do not depend on each other:

- wrk: requests completed and the 200 answers among them;
- Redis: the hits durable in the stream (XLEN; no consumer runs);
- the product's shed counter (`sightline:tracking:shed`, flushed when the web
  process stops gracefully), checked to be live first: one token is hit
  `BURST + 5` times before the run and exactly 5 answers must carry
  `X-Sightline-Hit: shed` and be counted.

`lost = 200 answers - durable - shed`, floored at 0: wrk stops counting at the
cut-off while a few requests it sent are still being written, so durable may
exceed what it counted by up to the number of connections. More than that is
reported as a problem (a counter that over-counts would hide a loss). Finally a
sample of the durable hits goes through the events consumer's own code
(`worker.events.store_hits`): every one must name a sent message it accepts.

Prints numbers; asserts nothing. The last line sums it up, with what was shed
and the machine's load beside it:

    pixel: <rps> rps = <pct>% of nginx <rps> rps, p99 <ms> ms, lost <n>, shed <n>, load <x>
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import insert, select

from bench.machine import load_average, load_note
from core.db import session_scope
from core.models import Mailbox, SendStatus, SentMessage, Team
from core.tracking import hits as hit_stream
from core.tracking.tokens import open_token
from tests.services import process
from tests.services.redis import PrivateRedisServer
from tests.stack import procfile
from web.tracking.app import PIXEL
from web.tracking.limits import BURST, SHED_KEY
from worker.events import DrainStats, store_hits

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131 Safari/537.36"
SAMPLE = 1000  # durable hits put through the events consumer's code afterwards

NGINX_CONF = """
daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    types {{ image/gif gif; }}
    server {{
        listen 127.0.0.1:{port};
        root {dir}/static;
        location /o/ {{
            try_files /pixel.gif =404;
            add_header Cache-Control "no-store, no-cache, must-revalidate, max-age=0, private";
        }}
    }}
}}
"""

# wrk runs this per thread: the paths file (one path a line) shuffled with the
# thread's own seed, then walked round and round. One table index and one
# wrk.format per request: cheap next to the request itself.
PIXEL_LUA = """
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  paths = {}
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  math.randomseed(7919 * id)
  for k = #paths, 2, -1 do
    local j = math.random(k)
    paths[k], paths[j] = paths[j], paths[k]
  end
  position = 0
end

function request()
  position = position + 1
  if position > #paths then
    position = 1
  end
  return wrk.format(nil, paths[position])
end
"""


@dataclass
class WrkResult:
    requests: int
    rps: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    raw: str


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected latency {text!r} in wrk output")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=requests,
        rps=rps,
        p99_ms=p99,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        raw=output,
    )


def run_wrk(
    base_url: str, script: Path, paths: Path, duration: int, connections: int, threads: int
) -> WrkResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"User-Agent: {USER_AGENT}",
        "-s",
        str(script),
        base_url,
        "--",
        str(paths),
    ]
    print("$ " + " ".join(command[:5]) + f" -s {script.name} {base_url} -- {paths.name}")
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


def wait_for(url: str, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer at {url} within {timeout:.0f} s")


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def make_tokens(count: int) -> tuple[list[str], int]:
    """`count` sent messages (one recipient each) in the database, and their open tokens.

    Returns the tokens and the team's id. Each token is what the message's pixel
    carries: signed for its sent message, team and recipient 0, issued when it was
    "sent" an hour ago, so the events consumer would accept every hit on it.
    """
    sent_at = datetime.now(UTC) - timedelta(hours=1)
    issued = int(sent_at.timestamp())
    with session_scope() as session:
        team = Team(name="Bench")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email="rep@seller.test", credentials_encrypted="-"
        )
        session.add(mailbox)
        session.flush()
        team_id, mailbox_id = team.id, mailbox.id
        session.execute(
            insert(SentMessage),
            [
                {
                    "team_id": team_id,
                    "mailbox_id": mailbox_id,
                    "message_id": f"<bench.{n}@seller.test>",
                    "subject": f"Quick question #{n}",
                    "to_addrs": [f"reader{n}@acme.test"],
                    "cc_addrs": [],
                    "status": SendStatus.SENT,
                    "claimed_at": sent_at,
                    "sent_at": sent_at,
                }
                for n in range(count)
            ],
        )
        ids = list(session.scalars(select(SentMessage.id).order_by(SentMessage.id)))
    return [open_token(sent_id, team_id, 0, issued) for sent_id in ids], team_id


def probe_shed(base_url: str, token: str) -> int:
    """Hit one token `BURST + 5` times from here; how many answers said the hit was shed."""
    shed = 0
    for _ in range(BURST + 5):
        request = urllib.request.Request(
            f"{base_url}/o/{token}.gif", headers={"User-Agent": USER_AGENT}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            shed += response.headers.get("X-Sightline-Hit") == "shed"
    return shed


def shed_counted(client: redis.Redis) -> int:
    return sum(int(v) for v in client.hgetall(SHED_KEY).values())


def wait_for_shed_count(client: redis.Redis, wanted: int, timeout: float) -> int:
    """The shed counter once it reaches `wanted` (it is flushed every few seconds)."""
    deadline = time.monotonic() + timeout
    while (count := shed_counted(client)) < wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


def drain_sample(client: redis.Redis, count: int) -> tuple[int, int, int]:
    """Store up to `count` durable hits with the events consumer's code: (entries, stored,
    skipped). A hit whose token names no sent message of its team is skipped."""
    entries: Any = client.xrange(hit_stream.STREAM, count=count)
    batch = [hit_stream.decode(entry_id, fields) for entry_id, fields in entries]
    stats = DrainStats(entries=len(batch))
    with session_scope() as session:
        store_hits(session, batch, stats)
    return stats.entries, stats.stored, stats.skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per target")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=40_000, help="distinct sent messages")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: run scripts/test-prereqs.sh bench")

    work = Path(tempfile.mkdtemp(prefix="sightline-bench-pixel-", dir="/tmp"))
    work.chmod(0o755)
    (work / "static").mkdir()
    (work / "static").chmod(0o755)
    (work / "var").mkdir()
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / sub).mkdir()
    (work / "static" / "pixel.gif").write_bytes(PIXEL)
    (work / "static" / "pixel.gif").chmod(0o644)

    redis_server = PrivateRedisServer(work / "redis", appendonly=True, appendfsync="everysec")
    redis_server.start()
    redis_url = redis_server.url(db=0)
    web_port, nginx_port = process.free_port(), process.free_port()
    env = {
        **os.environ,
        "SIGHTLINE_ENV": "test",
        "SIGHTLINE_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'var' / 'bench.db'}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{web_port}",
        "PORT": str(web_port),
        "WEB_CONCURRENCY": str(args.web_workers),
        "LOG_LEVEL": "WARNING",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    names = ("SIGHTLINE_ENV", "SECRET_KEY", "SIGHTLINE_VAR_DIR", "REDIS_URL", "DATABASE_URL")
    os.environ.update({k: env[k] for k in names})
    migrate()
    tokens, _ = make_tokens(args.tokens + 1)
    probe_token, tokens = tokens[0], tokens[1:]
    paths = work / "paths.txt"
    paths.write_text("".join(f"/o/{t}.gif\n" for t in tokens))
    script = work / "pixel.lua"
    script.write_text(PIXEL_LUA)
    print(f"tokens: {len(tokens):,} distinct signed open tokens, one per sent message", flush=True)

    (work / "nginx.conf").write_text(
        NGINX_CONF.format(dir=work, port=nginx_port, workers=args.web_workers)
    )
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    # Exactly what the Procfile runs, with this interpreter's bin on PATH.
    web_command = procfile()["web"]
    procs = []
    problems: list[str] = []
    try:
        procs.append(
            process.spawn(
                [nginx_bin, "-c", str(work / "nginx.conf"), "-p", str(work)],
                log_path=work / "nginx.log",
            )
        )
        web = process.spawn(web_command, log_path=work / "web.log", env=env, cwd=ROOT)
        procs.append(web)
        nginx_base = f"http://127.0.0.1:{nginx_port}"
        pixel_base = f"http://127.0.0.1:{web_port}"
        wait_for(f"{nginx_base}/o/{tokens[0]}.gif", "nginx")
        wait_for(f"{pixel_base}/o/{tokens[0]}.gif", "the web process")
        client = redis.Redis.from_url(redis_url)

        # The shed counter is live, or a "shed 0" below would prove nothing.
        marked = probe_shed(pixel_base, probe_token)
        counted = wait_for_shed_count(client, 5, timeout=15)
        print(
            f"shed probe: {BURST + 5} hits on one token, {marked} answers marked shed, "
            f"{counted} counted by the web process",
            flush=True,
        )
        if (marked, counted) != (5, 5):
            problems.append(f"the shed probe saw {marked} marked and {counted} counted, not 5")
        client.delete(hit_stream.STREAM, SHED_KEY)

        load = load_average()
        nginx = run_wrk(nginx_base, script, paths, args.duration, args.connections, args.threads)
        print(
            f"nginx: {nginx.rps:,.0f} rps, p99 {nginx.p99_ms:.2f} ms, requests {nginx.requests}, "
            f"non-2xx {nginx.non_2xx}, socket errors {nginx.socket_errors}",
            flush=True,
        )
        pixel = run_wrk(pixel_base, script, paths, args.duration, args.connections, args.threads)
        time.sleep(0.5)  # let the last in-flight XADDs land
        durable = int(client.xlen(hit_stream.STREAM))
        process.stop(web, timeout=30)  # graceful: the web process flushes its shed counts
        procs.remove(web)
        shed = shed_counted(client)
        ok = pixel.requests - pixel.non_2xx
        lost = max(0, ok - durable - shed)
        surplus = durable + shed - ok
        if surplus > args.connections:
            problems.append(
                f"durable {durable} + shed {shed} exceed the {ok} answers by {surplus}, more "
                f"than the {args.connections} requests wrk can leave in flight"
            )
        entries, stored, skipped = drain_sample(client, SAMPLE)
        if stored != entries:
            problems.append(f"the events consumer stored {stored} of {entries} sampled hits")
        print(
            f"pixel: requests {pixel.requests}, 200s {ok}, non-2xx {pixel.non_2xx}, "
            f"socket errors {pixel.socket_errors}, hits durable in Redis {durable}, "
            f"shed {shed}; events consumer stored {stored} of {entries} sampled "
            f"(skipped {skipped})",
            flush=True,
        )
        print(
            f"machine: {os.cpu_count()} cores, wrk -t{args.threads} -c{args.connections} "
            f"-d{args.duration}s on loopback over {len(tokens):,} tokens in random order, "
            f"web workers {args.web_workers}, nginx workers {args.web_workers}, "
            f"redis AOF everysec, load {load:.2f} before and {load_average():.2f} after"
        )
        for problem in problems:
            print(f"problem: {problem}")
        pct = 100 * pixel.rps / nginx.rps if nginx.rps else 0.0
        print(
            f"pixel: {pixel.rps:.0f} rps = {pct:.1f}% of nginx {nginx.rps:.0f} rps, "
            f"p99 {pixel.p99_ms:.1f} ms, lost {lost}, shed {shed}, {load_note(load)}"
        )
    finally:
        for proc in reversed(procs):
            process.stop(proc, group=True)
        redis_server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
