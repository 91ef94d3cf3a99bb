"""Pixel endpoint throughput against nginx serving the same GIF, on loopback.

Reproduce: `make bench-pixel` (or `python -m bench.pixel --duration 10 --connections 50`).

Starts a private redis-server (unix socket, AOF with fsync every second: the
production setting), the Procfile's `web` process (gunicorn with uvicorn
workers, WEB_CONCURRENCY=2)
and nginx (2 workers) serving the 43-byte GIF as a static file. wrk (2 threads)
loads nginx first, then the pixel with a valid signed token, each for the same
time. Then it counts the hits durable in the stream (XLEN; no consumer runs)
against the 200 responses wrk completed. Prints numbers; asserts nothing. The
last line is the one issue 3 asks for:

    pixel: <rps> rps = <pct>% of nginx <rps> rps, p99 <ms> ms, lost <n>
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-0123456789-abcdefghijklmnop"
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131 Safari/537.36"

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
        location /o/ {{
            alias {dir}/static/;
            add_header Cache-Control "no-store, no-cache, must-revalidate, max-age=0, private";
        }}
    }}
}}
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


def run_wrk(url: str, duration: int, connections: int, threads: int) -> WrkResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-H",
        f"User-Agent: {USER_AGENT}",
        url,
    ]
    shown = url.split("/o/", maxsplit=1)[0] + "/o/..."
    print("$ " + " ".join(command[:5]) + " ... " + shown, flush=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per target")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: run scripts/test-prereqs.sh bench")

    import redis

    from tests.services import process
    from tests.services.redis import PrivateRedisServer
    from tests.stack import procfile

    work = Path(tempfile.mkdtemp(prefix="sightline-bench-pixel-", dir="/tmp"))
    work.chmod(0o755)
    (work / "static").mkdir()
    (work / "static").chmod(0o755)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / sub).mkdir()

    from web.tracking.app import PIXEL

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
    os.environ.update({k: env[k] for k in ("SECRET_KEY", "SIGHTLINE_VAR_DIR", "REDIS_URL")})
    from core.tracking.tokens import open_token

    token = open_token(1, 1, 0, int(time.time()) - 3600)

    (work / "nginx.conf").write_text(
        NGINX_CONF.format(dir=work, port=nginx_port, workers=args.web_workers)
    )
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    # Exactly what the Procfile runs, with this interpreter's bin on PATH.
    web_command = procfile()["web"]
    procs = []
    try:
        procs.append(
            process.spawn(
                [nginx_bin, "-c", str(work / "nginx.conf"), "-p", str(work)],
                log_path=work / "nginx.log",
            )
        )
        procs.append(
            process.spawn(
                web_command,
                log_path=work / "web.log",
                env=env,
                cwd=ROOT,
            )
        )
        nginx_url = f"http://127.0.0.1:{nginx_port}/o/pixel.gif"
        pixel_url = f"http://127.0.0.1:{web_port}/o/{token}.gif"
        wait_for(nginx_url, "nginx")
        wait_for(pixel_url, "the web process")
        client = redis.Redis.from_url(redis_url)
        client.delete("sightline:hits")

        nginx = run_wrk(nginx_url, args.duration, args.connections, args.threads)
        print(
            f"nginx: {nginx.rps:,.0f} rps, p99 {nginx.p99_ms:.2f} ms, requests {nginx.requests}, "
            f"non-2xx {nginx.non_2xx}, socket errors {nginx.socket_errors}",
            flush=True,
        )
        pixel = run_wrk(pixel_url, args.duration, args.connections, args.threads)
        time.sleep(0.5)  # let the last in-flight XADDs land
        durable = int(client.xlen("sightline:hits"))
        ok = pixel.requests - pixel.non_2xx
        lost = max(0, ok - durable)
        print(
            f"pixel: requests {pixel.requests}, 200s {ok}, non-2xx {pixel.non_2xx}, "
            f"socket errors {pixel.socket_errors}, hits durable in Redis {durable}",
            flush=True,
        )
        print(
            f"machine: {os.cpu_count()} cores, wrk -t{args.threads} -c{args.connections} "
            f"-d{args.duration}s on loopback, web workers {args.web_workers}, nginx workers "
            f"{args.web_workers}, redis AOF everysec"
        )
        pct = 100 * pixel.rps / nginx.rps if nginx.rps else 0.0
        print(
            f"pixel: {pixel.rps:.0f} rps = {pct:.1f}% of nginx {nginx.rps:.0f} rps, "
            f"p99 {pixel.p99_ms:.1f} ms, lost {lost}"
        )
    finally:
        for proc in reversed(procs):
            process.stop(proc, group=True)
        redis_server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
