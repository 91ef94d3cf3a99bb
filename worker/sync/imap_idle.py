"""Holding IMAP IDLE on a selected folder, as steps (`worker.sync.watch_steps`).

Under the listener each IDLE lasts PUSH_ALIVE_SECONDS: ending it (DONE, a tagged
OK back) and starting the next (a continuation) are answers from the server, the
only proof that the connection still holds. A hung TCP connection answers
nothing: DONE times out, the live mark lapses (push_latency.LIVE_TTL_SECONDS)
and the listener reconnects. Merely waiting would keep a dead connection "live"
for the 25 minutes of an IDLE. Cost: two short commands per mailbox per 30 s.

Every wait, for the server to announce mail or to answer IDLE and DONE, is a
yielded `Readable`: the listener parks it on its one selector (`worker.watch_hub`),
so an IDLE costs no thread while it waits, and a hung server holds none either.
Socket readable but no whole response to read (the server closed the
connection, or sent a TLS record of its own) ends the round early: DONE's
answer, or its failure, says whether the connection holds.
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
    answer_within: float,
) -> Steps:
    """IDLE in `cycle`-second rounds until closed; `on_change` on new mail, `alive` on
    each IDLE the server confirms. The server must answer IDLE and DONE within
    `answer_within` seconds. Connection errors are the caller's to handle."""
    sock = client.socket()
    try:
        yield from _rounds(client, sock, on_change, cycle, alive, answer_within)
    except BaseException:
        # Let go (closed, or the connection failed): LOGOUT sent inside IDLE, or on a
        # dead connection, would hold a thread of the hub until the socket's timeout.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        raise


def _rounds(
    client: imapclient.IMAPClient,
    sock: socket.socket,
    on_change: Callable[[], None],
    cycle: float,
    alive: Callable[[], None] | None,
    answer_within: float,
) -> Steps:
    # imapclient's idle() and idle_done() each send a command and block for the
    # answer; here the waits for IDLE's continuation and DONE's tagged OK are
    # yielded, so a server that hangs holds no thread (imapclient is pinned: these
    # are its imaplib and its DONE's reader, unchanged since 2.x).
    imap = client._imap
    while True:
        tag = imap._command("IDLE")
        yield from _answer(sock, answer_within, "IDLE")
        if (said := imap._get_response()) is not None:
            raise imapclient.exceptions.IMAPClientError(f"unexpected IDLE response: {said!r}")
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
        imap.send(b"DONE\r\n")
        yield from _answer(sock, answer_within, "DONE")
        # Mail that arrived while IDLE was ending is announced in DONE's answer.
        _, after = client._consume_until_tagged_response(tag, "IDLE")
        if changed or _new_mail(after):
            on_change()


def _answer(sock: socket.socket, within: float, command: str) -> Steps:
    if not (yield Readable(sock, within)):
        raise TimeoutError(f"the IMAP server did not answer {command} within {within:.0f} s")


def _new_mail(responses: list[Any]) -> bool:
    """True if untagged IMAP responses announce a message (EXISTS, or RECENT)."""
    return any(
        isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses
    )
