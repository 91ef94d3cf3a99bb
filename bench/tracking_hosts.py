"""What the Host → team lookup costs the web edge per request (`web.tracking.hosts`).

Reproduce: `python -m bench.tracking_hosts` (`--requests 200000`).

The map is loaded once (from a fixed table here: the database read happens at
most every 2 s on a miss, every 30 s otherwise, in a thread, and is not what a
request pays); then the same `TeamHosts.team_for` the edge awaits is called for
the operator's host, a team's host and a name nobody claimed. Prints
microseconds per request; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from web.tracking.hosts import TeamHosts

HEADERS = ("localhost:5000", "track.acme-sales.com", "unknown.example.com")


async def measure(requests: int) -> dict[str, float]:
    lookup = TeamHosts(load=lambda: {"track.acme-sales.com": 1})
    await lookup.team_for("track.acme-sales.com")  # the first load
    results = {}
    for header in HEADERS:
        started = time.perf_counter()
        for _ in range(requests):
            await lookup.team_for(header)
        results[header] = (time.perf_counter() - started) / requests * 1e6
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    for header, micros in asyncio.run(measure(args.requests)).items():
        print(f"host={header} us_per_request={micros:.2f}")


if __name__ == "__main__":
    main()
