"""Holding IMAP IDLE on a selected folder: the listener's loop for one mailbox.

Under the listener each IDLE lasts PUSH_ALIVE_SECONDS: ending it (DONE, a tagged
OK back) and starting the next (a continuation) are answers from the server, the
only proof that the connection still holds. A hung TCP connection answers
nothing: DONE times out, the live mark lapses (push_latency.LIVE_TTL_SECONDS)
and the listener reconnects. Merely waiting would keep a dead connection "live"
for the 25 minutes of an IDLE. Cost: two short commands per mailbox per 30 s.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import imapclient

from worker.sync.stopper import Stopper


def hold_idle(
    client: imapclient.IMAPClient,
    stop: threading.Event,
    on_change: Callable[[], None],
    *,
    cycle: float,
    alive: Callable[[], None] | None,
) -> None:
    """IDLE in `cycle`-second rounds until `stop`; `on_change` on new mail, `alive` on
    each IDLE the server confirms. Connection errors are the caller's to handle."""
    sock = client.socket()
    _STOPPER.watch(sock, stop)
    try:
        while not stop.is_set():
            client.idle()  # returns once the server confirmed IDLE
            if alive is not None:
                alive()
            renew_at = time.monotonic() + cycle
            changed = False
            # Blocked until the server speaks or the cycle ends (the stopper shuts
            # the socket on `stop`): waking every second cost a listener holding
            # 10,000 IDLEs 10,000 wake-ups a second.
            while not stop.is_set() and (left := renew_at - time.monotonic()) > 0:
                if _new_mail(client.idle_check(timeout=left)):
                    changed = True
                    break
            # Mail that arrived while IDLE was ending is announced in DONE's answer.
            _, after = client.idle_done()
            if changed or _new_mail(after):
                on_change()
    finally:
        _STOPPER.forget(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing to wake
        sock.shutdown(socket.SHUT_RDWR)


# Shuts the socket of each held IDLE whose `stop` is set, so its blocked read returns.
_STOPPER: Stopper[socket.socket] = Stopper("idle-stop", _shut)


def _new_mail(responses: list[Any]) -> bool:
    """True if untagged IMAP responses announce a message (EXISTS, or RECENT)."""
    return any(
        isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses
    )
