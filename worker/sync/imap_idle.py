"""Holding IMAP IDLE on a selected folder, as steps (`worker.sync.watch_steps`).

Under the listener each IDLE lasts PUSH_ALIVE_SECONDS: ending it (DONE, a tagged
OK back) and starting the next (a continuation) are answers from the server, the
only proof that the connection still holds. A hung TCP connection answers
nothing: DONE times out, the live mark lapses (push_latency.LIVE_TTL_SECONDS)
and the listener reconnects. Merely waiting would keep a dead connection "live"
for the 25 minutes of an IDLE. Cost: two short commands per mailbox per 30 s.
New mail announced during an IDLE is passed on at once (`on_change`) and the IDLE
goes on to its round's end; a push costs no command of its own.

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
        yield from _answer(imap, sock, answer_within, "IDLE")
        if (said := imap._get_response()) is not None:
            raise imapclient.exceptions.IMAPClientError(f"unexpected IDLE response: {said!r}")
        if alive is not None:
            alive()
        renew_at = time.monotonic() + cycle
        while (left := renew_at - time.monotonic()) > 0:
            # What came with the continuation (mail Dovecot announces right after
            # "+ idling") is already read off the socket: the selector would not
            # wake for it until the round ended, 30 s late.
            if not _waiting(imap, sock) and not (yield Readable(sock, left)):
                break  # the round is over
            lines = _read_waiting(imap, sock)
            if not lines:
                break  # readable, nothing to read: DONE tells whether it still holds
            if any(_announces_mail(line) for line in lines):
                # Said at once, and the IDLE goes on (RFC 2177: the server keeps
                # announcing): ending it first cost each push a DONE and an IDLE.
                on_change()
        imap.send(b"DONE\r\n")
        yield from _answer(imap, sock, answer_within, "DONE")
        # Mail that arrived while IDLE was ending is announced in DONE's answer.
        _, after = client._consume_until_tagged_response(tag, "IDLE")
        if _new_mail(after):
            on_change()


def _answer(imap: Any, sock: socket.socket, within: float, command: str) -> Steps:
    if not _waiting(imap, sock) and not (yield Readable(sock, within)):
        raise TimeoutError(f"the IMAP server did not answer {command} within {within:.0f} s")


def _waiting(imap: Any, sock: socket.socket) -> bool:
    """True if bytes of a response wait to be read: in imaplib's buffer, TLS's, or the socket."""
    pending = getattr(sock, "pending", None)  # an SSLSocket's decrypted, unread bytes
    if pending is not None and pending() > 0:
        return True
    timeout = sock.gettimeout()
    sock.setblocking(False)  # peek: the buffer's bytes, else one read that does not wait
    try:
        return bool(imap.file.peek(1))
    except OSError:  # a TLS socket with nothing to read says so with an error
        return False
    finally:
        sock.settimeout(timeout)


def _read_waiting(imap: Any, sock: socket.socket) -> list[bytes]:
    """Every response line waiting now (a line begun is read to its end)."""
    lines = []
    while _waiting(imap, sock):
        lines.append(imap._get_line())
    return lines


def _announces_mail(line: bytes) -> bool:
    """True for an untagged `* <n> EXISTS` or `* <n> RECENT`."""
    words = line.split()
    return len(words) == 3 and words[0] == b"*" and words[2].upper() in (b"EXISTS", b"RECENT")


def _new_mail(responses: list[Any]) -> bool:
    """True if untagged IMAP responses announce a message (EXISTS, or RECENT)."""
    return any(
        isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses
    )
