"""A held IDLE counts as live push only while the server answers on it.

`worker.sequences.freshness` sends a follow-up step without a sync when the
mailbox's push is live and measured prompt, so "live" must mean the server
still answers. Before, IDLE marked itself live on a 30 s timer while it waited
for the server: a connection that hung (a NAT that dropped it, a server that
stopped answering) stayed "live" for the 25 minutes of an IDLE, and a reply in
that time could not stop a step.

Here a TCP relay between the provider and a real Dovecot stops passing bytes:
the live marks stop, and `watch()` fails so the listener reconnects. And mail
that arrives while one IDLE ends and the next begins is still announced.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import worker.sync.imap as imap_module
from tests.integration.test_imap_provider import credentials, inbound
from tests.services.dovecot import DovecotServer, unique_address
from tests.services.relay import TcpRelay
from worker.sync.base import ProviderError
from worker.sync.imap import ImapProvider
from worker.sync.watch_steps import Steps
from worker.watch_hub import WatchHub

CYCLE = 1.0  # seconds per IDLE, instead of PUSH_ALIVE_SECONDS, so the test takes seconds
DONE_TIMEOUT = 2.0  # the socket timeout, instead of TIMEOUT_SECONDS


@pytest.fixture
def fast_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap_module, "PUSH_ALIVE_SECONDS", CYCLE)
    monkeypatch.setattr(imap_module, "TIMEOUT_SECONDS", DONE_TIMEOUT)


@pytest.fixture
def relay(dovecot: DovecotServer) -> Iterator[TcpRelay]:
    running = TcpRelay((dovecot.host, dovecot.imap_port))
    yield running
    running.close()


def watching(provider: ImapProvider) -> tuple[threading.Event, list[Any], list[float]]:
    """Run `provider.watch` in a thread; return its stop event, outcome and live marks."""
    stop = threading.Event()
    outcome: list[Any] = []  # "stopped", or the ProviderError watch raised
    marks: list[float] = []
    changes: list[float] = []
    provider.push_alive = lambda: marks.append(time.monotonic())

    def run() -> None:
        try:
            provider.watch(stop, lambda: changes.append(time.monotonic()))
            outcome.append("stopped")
        except ProviderError as exc:
            outcome.append(exc)

    threading.Thread(target=run, daemon=True).start()
    provider.changes_seen = changes  # type: ignore[attr-defined]
    return stop, outcome, marks


def relayed(dovecot: DovecotServer, smtp_server: Any, relay: TcpRelay) -> ImapProvider:
    """A provider for a new Dovecot user, its IMAP through `relay`."""
    user = unique_address()
    dovecot.ensure_user(user)
    settings = credentials(dovecot, smtp_server, user)
    settings["imap"]["port"] = relay.port
    return ImapProvider(user, settings)


def test_a_hung_idle_stops_being_live_and_fails_so_the_listener_reconnects(
    dovecot: DovecotServer, smtp_server: Any, relay: TcpRelay, fast_idle: None
) -> None:
    provider = relayed(dovecot, smtp_server, relay)
    stop, outcome, marks = watching(provider)
    try:
        time.sleep(4 * CYCLE)
        assert len(marks) >= 3, marks  # a mark per answered IDLE while the path holds
        relay.passing.clear()
        stalled_at = time.monotonic()
        deadline = stalled_at + CYCLE + DONE_TIMEOUT + 3
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.05)
        # No mark once the server stopped answering (one may land from an IDLE that
        # was confirmed just before), and watch() gave up within a cycle plus DONE's
        # timeout instead of holding a dead connection.
        assert [m for m in marks if m > stalled_at + 0.5] == []
        assert outcome and isinstance(outcome[0], ProviderError), outcome
    finally:
        stop.set()
        relay.close()
        provider.close()


def test_mail_delivered_across_idle_renewals_is_announced(
    dovecot: DovecotServer, smtp_server: Any, fast_idle: None
) -> None:
    user = unique_address()
    dovecot.ensure_user(user)
    provider = ImapProvider(user, credentials(dovecot, smtp_server, user))
    stop, outcome, marks = watching(provider)
    try:
        time.sleep(1.5 * CYCLE)
        for n in range(6):  # some land while an IDLE ends and the next starts
            dovecot.deliver(user, inbound(f"p{n}@acme.test", user))
            time.sleep(CYCLE / 3)
        deadline = time.monotonic() + 5
        while not provider.changes_seen and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.05)
        assert provider.changes_seen, "new mail was never announced"  # type: ignore[attr-defined]
        assert not outcome, outcome
        assert len(marks) >= 3, marks  # live all along: each renewal was answered
    finally:
        stop.set()
        provider.close()


def test_new_mail_is_announced_at_once_and_the_idle_goes_on(
    dovecot: DovecotServer,
    smtp_server: Any,
    relay: TcpRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A push used to end its IDLE (DONE) and start another before telling anyone: two
    # commands per message at the server and a round trip later. Now it is said at once.
    monkeypatch.setattr(imap_module, "PUSH_ALIVE_SECONDS", 60.0)  # one round here
    provider = relayed(dovecot, smtp_server, relay)
    user = provider.email
    stop, outcome, marks = watching(provider)
    try:
        deadline = time.monotonic() + 5
        while not marks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marks, "IDLE was never confirmed"
        for n in range(3):
            dovecot.deliver(user, inbound(f"p{n}@acme.test", user))
            seen = len(provider.changes_seen)  # type: ignore[attr-defined]
            deadline = time.monotonic() + 5
            while len(provider.changes_seen) == seen and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.02)
        assert len(provider.changes_seen) >= 3, provider.changes_seen  # type: ignore[attr-defined]
        dones = [line for line in relay.client_lines() if line.upper() == b"DONE"]
        assert dones == [] and len(marks) == 1  # the same IDLE all along
        assert not outcome, outcome
    finally:
        stop.set()
        relay.close()
        provider.close()


def test_a_hung_server_holds_no_thread_of_the_listener_hub(
    dovecot: DovecotServer,
    smtp_server: Any,
    relay: TcpRelay,
    fast_idle: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listener's IDLEs share a few threads (`worker.watch_hub`): waiting on a hung
    server's answer to DONE must not hold one, or every other IDLE's rounds stop."""
    answer_within = 4 * CYCLE  # longer than a round: a thread held that long shows
    monkeypatch.setattr(imap_module, "TIMEOUT_SECONDS", answer_within)
    hub = WatchHub(connects=2, holds=1, name="hung")  # one thread for every round
    hung_user, healthy_user = unique_address(), unique_address()
    outcome: list[Any] = []
    healthy_marks: list[float] = []
    providers = []
    try:
        for user, port, marks in (
            (hung_user, relay.port, []),
            (healthy_user, dovecot.imap_port, healthy_marks),
        ):
            dovecot.ensure_user(user)
            settings = credentials(dovecot, smtp_server, user)
            settings["imap"]["port"] = port
            provider = ImapProvider(user, settings)
            provider.push_alive = lambda marks=marks: marks.append(time.monotonic())
            providers.append(provider)

        def hung_watch() -> Steps:
            try:
                yield from providers[0].watch_steps(lambda: None)
            except ProviderError as exc:
                outcome.append(exc)

        hub.start("hung", hung_watch())
        hub.start("healthy", providers[1].watch_steps(lambda: None))
        time.sleep(2 * CYCLE)
        relay.passing.clear()  # the hung server's DONE goes unanswered
        stalled_at = time.monotonic()
        time.sleep(CYCLE + answer_within + 1)
        during = [stalled_at, *(m for m in healthy_marks if m > stalled_at), time.monotonic()]
        gaps = [b - a for a, b in itertools.pairwise(during)]
        assert max(gaps) < 2 * CYCLE + 0.5, gaps  # the healthy IDLE's rounds went on
        assert outcome and isinstance(outcome[0], ProviderError), outcome  # and the hung one failed
    finally:
        relay.close()
        hub.close(timeout=5)
        for provider in providers:
            provider.close()
