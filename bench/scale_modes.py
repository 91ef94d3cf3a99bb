"""The push modes `bench.providers_scale` measures, one object each, all driven the same way.

A mode owns what differs between providers: which fake or server holds the
10,000 mailboxes, how they are connected (`setup`), which extra Procfile
processes carry their push (`processes`: the `listener` for IMAP IDLE and EWS
streaming; Gmail and Microsoft 365 push to `web`), how a message is delivered,
and what counts as a push acknowledged and a sync run. The offered and capacity
phases in `bench.providers_scale` are the same for every mode.

    mode.prepare(w, args)            fakes started/replaced; w.env and os.environ set
    mode.setup(w, n, teams, per)     -> {"addresses", "targets", "ids"} (see scale_world.setup)
    mode.processes()                 extra Procfile roles started after web/cron/worker
    mode.ready(stack, world)         returns once every mailbox's push is live
    mode.deliver(address, raw)       one message into a mailbox, as its server would get it
    mode.pushes()                    notifications acknowledged so far (monotonic count)
    mode.syncs()                     syncs run so far, counted at the server (monotonic)
    mode.hold_pushes(held)           capacity phases: stop/restart notifications
    mode.report(stack)               extra lines (e.g. listener memory per connection)
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bench.providers import World


class ScaleMode(Protocol):
    name: str  # --mode value: gmail, graph, imap, ews
    label: str  # the summary line's words: "gmail push", "graph notifications", ...
    concurrent_delivery: bool  # deliver() may run on --senders threads at once

    def prepare(self, w: World, args: argparse.Namespace) -> None: ...

    def setup(self, w: World, mailboxes: int, teams: int, per_team: int) -> dict[str, Any]: ...

    def processes(self) -> list[str]: ...

    def ready(self, stack: Any, world: dict[str, Any]) -> None: ...

    def deliver(self, address: str, raw: bytes) -> None: ...

    def pushes(self) -> int: ...

    def syncs(self) -> int: ...

    def hold_pushes(self, held: bool) -> None: ...

    def server_group(self) -> tuple[str, int] | None:
        """(label, process group) of a mail server run beside the stack, for its CPU; None: the
        provider is a fake in the bench's own process."""
        ...

    def report(self, stack: Any) -> list[str]: ...


class GmailMode:
    """Gmail push: the fake's Pub/Sub posts to `web`'s /webhooks/gmail; a sync is a history.list."""

    name = "gmail"
    label = "gmail push"
    concurrent_delivery = False

    def __init__(self) -> None:
        self.w: World | None = None

    def prepare(self, w: World, args: argparse.Namespace) -> None:
        import os

        from tests.fakes.gmail import FakeGmail

        w.gmail.stop()
        w.gmail = FakeGmail(push_threads=args.push_threads).start()
        w.cleanup.append(w.gmail.stop)
        os.environ.update(w.gmail.environment())
        w.env.update(w.gmail.environment())
        self.w = w

    def setup(self, w: World, mailboxes: int, teams: int, per_team: int) -> dict[str, Any]:
        from bench.scale_world import setup

        world = setup(w, mailboxes, teams, per_team)
        audience = w.env["GMAIL_PUSH_AUDIENCE"]
        w.gmail.subscribe_push(audience, audience=audience)
        return world

    def processes(self) -> list[str]:
        return []

    def ready(self, stack: Any, world: dict[str, Any]) -> None:
        return None  # the watches were made by setup; Pub/Sub pushes from the first delivery

    def deliver(self, address: str, raw: bytes) -> None:
        assert self.w is not None
        self.w.gmail.deliver(address, raw)

    def pushes(self) -> int:
        assert self.w is not None
        return sum(1 for p in self.w.gmail.pubsub.published if p.delivered_at is not None)

    def syncs(self) -> int:
        assert self.w is not None
        return sum(1 for c in self.w.gmail.calls.all() if c.label == "users.history.list")

    def server_group(self) -> tuple[str, int] | None:
        return None

    def hold_pushes(self, held: bool) -> None:
        assert self.w is not None
        if held:
            self.w.gmail.pubsub.paused.set()
        else:
            self.w.gmail.pubsub.paused.clear()

    def report(self, stack: Any) -> list[str]:
        return []


def modes() -> dict[str, type]:
    """Every mode by name; a mode module that is not there yet is simply not offered."""
    found: dict[str, type] = {"gmail": GmailMode}
    import importlib

    for name, module, cls in (
        ("graph", "bench.scale_graph", "GraphMode"),
        ("imap", "bench.scale_imap", "ImapMode"),
        ("ews", "bench.scale_ews", "EwsMode"),
    ):
        try:
            found[name] = getattr(importlib.import_module(module), cls)
        except ModuleNotFoundError:
            continue
    return found
