"""Holding IMAP IDLE on a selected folder, as steps (`worker.sync.watch_steps`).

Under the listener each IDLE lasts PUSH_ALIVE_SECONDS: ending it (DONE, a tagged
OK back) and starting the next (a continuation) are answers from the server, the
only proof that the connection still holds. A hung TCP connection answers
nothing: DONE times out, the live mark lapses (push_latency.LIVE_TTL_SECONDS)
and the listener reconnects. Merely waiting would keep a dead connection "live"
for the 25 minutes of an IDLE. Cost: two short commands per mailbox per 30 s.

Between those commands the IDLE waits for the server to speak by yielding
`Readable`: the listener parks it on its one selector (`worker.watch_hub`), so an
IDLE costs no thread while it waits. Socket readable but no whole response to
read (the server closed the connection, or sent a TLS record of its own) ends
the round early: DONE's answer, or its failure, says whether the connection holds.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import imapclient

from worker.sync.watch_steps import Readable, Steps


def idle_steps(
    client: imapclient.IMAPClient,
    on_change: Callable[[], None],
    *,
    cycle: float,
    alive: Callable[[], None] | None,
) -> Steps:
    """IDLE in `cycle`-second rounds until closed; `on_change` on new mail, `alive` on
    each IDLE the server confirms. Connection errors are the caller's to handle."""
    sock = client.socket()
    try:
        yield from _rounds(client, sock, on_change, cycle=cycle, alive=alive)
    except GeneratorExit:
        # Let go while idling: LOGOUT sent in IDLE would wait for the server's timeout.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        raise


def _rounds(
    client: imapclient.IMAPClient,
    sock: socket.socket,
    on_change: Callable[[], None],
    *,
    cycle: float,
    alive: Callable[[], None] | None,
) -> Steps:
    while True:
        client.idle()  # returns once the server confirmed IDLE
        if alive is not None:
            alive()
        renew_at = time.monotonic() + cycle
        changed = False
        while (left := renew_at - time.monotonic()) > 0:
            if not (yield Readable(sock, left)):
                break  # the round is over
            responses = client.idle_check(timeout=0)
            if not responses:
                break  # readable, nothing to read: DONE tells whether it still holds
            if _new_mail(responses):
                changed = True
                break
        # Mail that arrived while IDLE was ending is announced in DONE's answer.
        _, after = client.idle_done()
        if changed or _new_mail(after):
            on_change()


def _new_mail(responses: list[Any]) -> bool:
    """True if untagged IMAP responses announce a message (EXISTS, or RECENT)."""
    return any(
        isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses
    )
