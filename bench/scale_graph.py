"""Microsoft 365 (Graph) change notifications, as `bench.providers_scale --mode graph` drives them.

The fake Graph holds every mailbox; a new message notifies each mailbox's
subscription (`me/messages`, created) by POSTing to `web`'s /webhooks/graph
(GRAPH_NOTIFICATION_URL, set by `bench.providers.World`) from --push-threads
delivery threads on kept-alive connections, as Graph's senders hold theirs.

`setup` connects mailboxes as production leaves them after a connect and a sync,
without 10,000 sign-ins: credentials are an MSAL token cache holding a live
access token (`FakeGraph.grant`), the cursor is a deltaLink at the mailbox's
current state for every folder the sync reads (which folders: asked of the real
provider once, for the first mailbox) and the folder list is kept as a sync
keeps it, each mailbox's made at another moment of the last
`folders.FOLDER_LIST_KEPT` (so a tenth of syncs list again, as in steady
production at a message a minute), the subscription lives at the fake and
its mailbox_push row (external_id = subscription id) carries the clientState in
production's format (`worker.sync.push.client_state`).

pushes(): notifications `web` answered 2xx. syncs(): Inbox delta rounds at the
fake (every sync reads Inbox once; its other folders are not counted).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.providers import World
    from tests.fakes.graph import FakeGraph


class GraphMode:
    name = "graph"
    label = "graph notifications"
    concurrent_delivery = False

    def __init__(self) -> None:
        self.w: World | None = None

    @property
    def fake(self) -> FakeGraph:
        assert self.w is not None
        return self.w.graph

    def prepare(self, w: World, args: argparse.Namespace) -> None:
        from tests.fakes.graph import FakeGraph

        w.graph.stop()
        w.graph = FakeGraph(notify_threads=args.push_threads).start()
        w.cleanup.append(w.graph.stop)
        os.environ.update(w.graph.environment())
        w.env.update(w.graph.environment())
        self.w = w

    def setup(self, w: World, mailboxes: int, teams: int, per_team: int) -> dict[str, Any]:
        from bench.scale_common import (
            addresses,
            create_teams,
            insert_mailboxes,
            insert_pushes,
            sequences_with_step_one_sent,
        )
        from config import get_settings
        from core.db import session_scope
        from core.models import MailboxKind, PushKind, utcnow
        from worker.sync.folders import FOLDER_LIST_KEPT
        from worker.sync.push import client_state

        get_settings.cache_clear()  # the fake's endpoints, set by prepare
        url = w.env["GRAPH_NOTIFICATION_URL"]
        now = utcnow()
        fake = w.graph
        granted = [(address, fake.grant(address)) for address in addresses(mailboxes, teams)]
        folders, well_known = read_folders(fake, *granted[0])
        # Each cursor's folder list was made at a different moment of the last
        # FOLDER_LIST_KEPT, as in a mailbox that has synced for a while: the share of
        # syncs that list the tree again is production's steady one from the start.
        kept = FOLDER_LIST_KEPT / len(granted)
        rows = [
            (address, creds, cursor(fake, address, folders, well_known, now, now - kept * i))
            for i, (address, creds) in enumerate(granted)
        ]
        with session_scope() as session:
            team_ids = create_teams(session, teams)
            ids = insert_mailboxes(session, MailboxKind.GRAPH, team_ids, rows, now)
            subscriptions = {
                mailbox_id: fake.subscribe(address, url, client_state(mailbox_id))
                for address, mailbox_id in ids.items()
            }
            expires = min(s.expiration for s in subscriptions.values())
            insert_pushes(
                session,
                PushKind.GRAPH_SUBSCRIPTION,
                {mailbox_id: s.id for mailbox_id, s in subscriptions.items()},
                expires,
            )
            targets = sequences_with_step_one_sent(session, ids, team_ids, per_team)
        return {"addresses": list(ids), "targets": targets, "ids": ids}

    def processes(self) -> list[str]:
        return []  # Graph notifies `web`

    def ready(self, stack: Any, world: dict[str, Any]) -> None:
        return None  # the subscriptions were made by setup

    def deliver(self, address: str, raw: bytes) -> None:
        self.fake.deliver(address, raw)

    def pushes(self) -> int:
        return self.fake.delivered()

    def syncs(self) -> int:
        return self.fake.delta_rounds("inbox")

    def server_group(self) -> tuple[str, int] | None:
        return None

    def hold_pushes(self, held: bool) -> None:
        if held:
            self.fake.paused.set()
        else:
            self.fake.paused.clear()

    def report(self, stack: Any) -> list[str]:
        refused = Counter(n.status for n in list(self.fake.notifications) if n.status is not None)
        failed = {status: count for status, count in refused.items() if not 200 <= status < 300}
        if not failed:
            return []
        shown = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(failed.items()))
        return [f"graph notifications not acknowledged (status: count): {shown}"]


def read_folders(
    fake: FakeGraph, address: str, creds: dict[str, Any]
) -> tuple[list[str], dict[str, str]]:
    """(keys of the folders a sync reads, well-known name -> key) as production chooses them.

    Asked once, of the real provider for one mailbox; every fake mailbox has the
    same folders under the same keys (their ids differ).
    """
    from worker.sync.folders import skip_list
    from worker.sync.graph import GraphProvider
    from worker.sync.graph_folders import watched_folders

    provider = GraphProvider(address, creds)
    read, well_known_ids = watched_folders(provider.request, skip_list(creds), {})
    user = fake.store.user(address)
    keys = {folder.id: key for key, folder in fake.app.folders.folders(user).items()}
    return [keys[f.id] for f in read], {
        name: keys.get(folder_id, "") for name, folder_id in well_known_ids.items()
    }


def cursor(
    fake: FakeGraph,
    address: str,
    folders: list[str],
    well_known: dict[str, str],
    now: datetime,
    listed_at: datetime,
) -> dict[str, Any]:
    """The cursor a sync of this mailbox would have left a moment ago (worker.sync.graph),
    its folder list made at `listed_at`."""
    from config import get_settings
    from worker.sync.folders import folder_listing
    from worker.sync.graph import DELTA_EXPAND, DELTA_SELECT

    synced_at = now.isoformat()
    ids = [fake.folder_id(address, key) for key in folders]
    return {
        "folders": {
            folder_id: {
                "delta_link": fake.delta_link(address, key, DELTA_SELECT, DELTA_EXPAND),
                "synced_at": synced_at,
            }
            for folder_id, key in zip(ids, folders, strict=True)
        },
        "well_known": {
            name: fake.folder_id(address, key) if key else "" for name, key in well_known.items()
        },
        "listing": folder_listing(ids, get_settings().providers.skip_folders, listed_at),
    }
