"""Microsoft 365 (Graph) and Exchange (EWS): what reading every folder costs a sync, in calls.

Reproduce:
    python -m bench.folder_sync_calls [--folders 0 10 50]

A mailbox with N folders of its own (besides the default ones) is read by the
real providers (worker.sync.graph with requests, worker.sync.exchange with
exchangelib) against the wire-faithful fakes: the first sync (the skipped
well-known folders are asked for, every folder gets its first delta/sync state)
a push sync (one new message in Inbox: the folder list the first sync kept is
trusted, worker.sync.folders.FolderReads) and a sync with nothing new (a poll:
the known folders held nothing, so it lists the tree again). Counts the HTTP
calls the fake answered, by kind. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _sync(provider: Any, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
    since = datetime.now(UTC) - timedelta(days=1)
    for batch in provider.changes(cursor, since):
        cursor = batch.cursor
    return cursor


def _counts(calls: Any) -> tuple[int, str]:
    found = Counter(c.label or c.path for c in calls.all())
    return sum(found.values()), ", ".join(f"{k} {v}" for k, v in sorted(found.items()))


def _report(name: str, folders: int, fake: Any, provider: Any, address: str) -> None:
    """Calls of a first sync, a push sync (one new message in Inbox) and an idle sync."""
    from bench.providers import newsletter

    rows = []
    fake.calls.clear()
    cursor = _sync(provider, None)
    rows.append(("first sync", *_counts(fake.calls)))
    fake.deliver(address, newsletter(address, 1))
    fake.calls.clear()
    cursor = _sync(provider, cursor)
    rows.append(("push sync ", *_counts(fake.calls)))
    fake.calls.clear()
    _sync(provider, cursor)
    rows.append(("idle sync ", *_counts(fake.calls)))
    for what, count, kinds in rows:
        print(f"{name:8s} {folders:3d} own folders: {what} {count:3d} calls ({kinds})")


def graph(folders: int) -> None:
    from config import get_settings
    from tests.fakes.graph import FakeGraph
    from worker.sync.graph import GraphProvider

    with FakeGraph() as fake:
        os.environ.update(fake.environment())
        get_settings.cache_clear()
        address = "rep@contoso.test"
        fake.add_user(address)
        for n in range(folders):
            fake.folder_key(address, f"Customers/Client {n:02d}" if n else "Customers")
        token, _ = fake.store.issue_tokens(address, fake.client_id, [])
        provider = GraphProvider(address, {}, get_token=lambda: token)
        _report("graph", folders, fake, provider, address)


def exchange(folders: int) -> None:
    from config import get_settings
    from tests.fakes.ews import FakeEws
    from worker.sync.exchange import ExchangeProvider

    with FakeEws() as fake:
        get_settings.cache_clear()
        address = "rep@fabrikam.test"
        fake.add_mailbox(address)
        for n in range(folders):
            fake.folder_key(address, f"Customers/Client {n:02d}" if n else "Customers")
        provider = ExchangeProvider(address, fake.credentials(address, "basic"))
        _report("exchange", folders, fake, provider, address)
        provider.close()


def main() -> None:
    from tests.fakes.httpfake import trust_provider_ca

    trust_provider_ca()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, nargs="+", default=[0, 10, 50])
    args = parser.parse_args()
    for count in args.folders:
        graph(count)
        exchange(count)


if __name__ == "__main__":
    main()
