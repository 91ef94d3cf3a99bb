"""EWS streaming for the `listener`: new mail in the synced folders at once, on an honest stream.

An open GetStreamingEvents response is a run of SOAP envelopes ([MS-OXWSNTIF]),
each a GetStreamingEventsResponseMessage whose ConnectionStatus says whether
the connection goes on::

    OK + Notifications   events (NewMailEvent, CreatedEvent, …)
    OK alone             a keep-alive while nothing happens (gromox: OK + a StatusEvent)
    Closed               the request's ConnectionTimeout is up: the next one follows

Exchange writes often enough that Microsoft's own client (the EWS Managed API,
GetStreamingEventsRequest.HeartbeatFrequencyDefault) expects a frame every
45 s and drops a connection silent for twice that; gromox writes every 45 s.
So, here::

    a frame with ConnectionStatus OK ──▶ push_alive()   the mailbox's live mark
                                         (worker.sync.push_latency: it lapses 90 s
                                         after the last frame)
    NewMailEvent / CreatedEvent      ──▶ on_change()    the listener's request_sync(pushed=True):
                                         the sync measures how late the push was
    no frame for twice SIGHTLINE_EXCHANGE_KEEPALIVE_SECONDS
                                     ──▶ the read times out: ProviderError; the listener
                                         clears the mark at once, reconnects, and syncs
                                         what the dead connection may have swallowed

Never live on a thread or a socket alone: a hung TCP connection looks open for
as long as the operating system lets it, and the fresh-before-send rule
(worker.sequences.freshness) sends follow-up steps on the strength of the mark.
exchangelib hands its caller notifications only, never a keep-alive, so
`_LiveStreamingEvents` reports each frame from where exchangelib reads its
ConnectionStatus.

Cost: one Redis SET per frame (a keep-alive every 45 s per mailbox), one thread
per mailbox blocked on its stream, and one for all streams that wakes each second
(`worker.sync.stopper`) to end those the listener stops.

Must never: touch the database, or mark live before the server has written.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from exchangelib import Account
from exchangelib.properties import CreatedEvent, DistinguishedFolderId, FolderId, NewMailEvent
from exchangelib.services import GetStreamingEvents, SubscribeToStreaming, Unsubscribe
from exchangelib.util import DummyResponse

from config import get_settings
from worker.sync.base import ProviderError
from worker.sync.exchange_errors import EWS_FAILURES, ews_call, ews_error
from worker.sync.stopper import Stopper

# A SOAP envelope's start and end tags, whatever the namespace prefix.
_ENVELOPE_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?Envelope[\s>]")
_ENVELOPE_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?Envelope\s*>")
_DECLARATION = b"<?xml version='1.0' encoding='utf-8'?>\n"


class _LiveStreamingEvents(GetStreamingEvents):  # type: ignore[misc]
    """GetStreamingEvents that reports every frame saying ConnectionStatus OK, keep-alives too.

    Each read may wait `silence_seconds` at most, not the whole ConnectionTimeout
    exchangelib allows: a server that writes at least every keep-alive interval
    and has been silent for longer is gone.
    """

    def __init__(
        self,
        *,
        account: Account,
        on_ok: Callable[[], None],
        silence_seconds: int,
        on_open: Callable[[], None],
    ) -> None:
        super().__init__(account=account)
        self._on_ok = on_ok
        self._on_open = on_open
        self._silence_seconds = silence_seconds
        self.last_frame = time.monotonic()

    def call(self, subscription_ids: list[str], connection_timeout: int) -> Any:
        notifications = super().call(
            subscription_ids=subscription_ids, connection_timeout=connection_timeout
        )
        # call() set the timeout and returned a generator: nothing is sent until it is read.
        self.timeout = self._silence_seconds
        return notifications

    def _get_soap_messages(self, body: Any) -> Iterator[Any]:
        """GetStreamingEvents' own, reading the stream a chunk at a time where exchangelib
        reads a byte at a time (a Python call per byte of every keep-alive, for every stream
        the listener holds). A stream not sent chunked is still read a byte at a time: a
        bigger read would wait for bytes a quiet stream never sends."""
        self._on_open()  # Exchange answered: the stream is set up
        chunk_size = None if getattr(body.raw, "chunked", False) else 1
        for document in envelopes(body.iter_content(chunk_size)):
            try:
                _, soap = super(GetStreamingEvents, self)._get_soap_parts(
                    response=DummyResponse(content=document)
                )
            except Exception:
                body.close()
                raise
            yield from super(GetStreamingEvents, self)._get_soap_messages(body=soap)
            if self.connection_status == self.CLOSED:
                break  # do not wait for the server to close the connection

    def _get_element_container(self, message: Any, name: Any = None) -> Any:
        container = super()._get_element_container(message=message, name=name)
        self.last_frame = time.monotonic()
        if self.connection_status == self.OK:
            self._on_ok()
        return container


def envelopes(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Each SOAP envelope in a stream of chunks, as soon as its end tag has arrived."""
    buffer = b""
    searched = 0  # no end tag before this offset
    for chunk in chunks:
        buffer += chunk
        while (end := _ENVELOPE_END.search(buffer, searched)) is not None:
            start = _ENVELOPE_START.search(buffer, 0, end.start())
            if start is not None:
                yield _DECLARATION + buffer[start.start() : end.end()]
            buffer, searched = buffer[end.end() :], 0
        searched = max(0, len(buffer) - 64)  # an end tag may be cut between chunks


def hold_stream(
    account: Account,
    folders: list[DistinguishedFolderId | FolderId],
    stop: threading.Event,
    on_change: Callable[[], None],
    push_alive: Callable[[], None] | None,
    on_open: Callable[[], None] | None = None,
) -> None:
    """Subscribe to `folders` and hold their stream until `stop`; see the module docstring.

    `on_open` is called when Exchange's answer to GetStreamingEvents begins (the stream
    is set up; its first frame may come later). Raises ProviderError when the stream
    fails or falls silent (the caller reconnects).
    """
    providers = get_settings().providers
    silence = 2 * providers.exchange_keepalive_seconds
    subscription = ews_call(
        "subscribing to new mail",
        lambda: SubscribeToStreaming(account=account).get(
            folders=folders, event_types=("NewMailEvent", "CreatedEvent")
        ),
    )
    try:
        while not stop.is_set():
            service = _LiveStreamingEvents(
                account=account,
                on_ok=push_alive or _nothing,
                silence_seconds=silence,
                on_open=on_open or _nothing,
            )
            _read_stream(service, subscription, providers.exchange_stream_minutes, stop, on_change)
    finally:
        with contextlib.suppress(Exception):
            Unsubscribe(account=account).get(subscription_id=subscription)


def _nothing() -> None:
    """No one asked to hear that the stream is alive (a one-off watch, not the listener)."""


def _read_stream(
    service: _LiveStreamingEvents,
    subscription: str,
    minutes: int,
    stop: threading.Event,
    on_change: Callable[[], None],
) -> None:
    """One GetStreamingEvents request, read until Exchange closes it or `stop`."""
    _STOPPER.watch(service, stop)
    try:
        for notification in service.call(
            subscription_ids=[subscription], connection_timeout=minutes
        ):
            if stop.is_set():
                return
            if any(isinstance(e, NewMailEvent | CreatedEvent) for e in notification.events):
                on_change()
    except EWS_FAILURES as exc:
        if stop.is_set():
            return
        silent = time.monotonic() - service.last_frame
        if silent >= 0.9 * service.timeout:  # the read timed out (or failed after as long)
            raise ProviderError(
                f"the Exchange stream fell silent: {silent:.0f} s without a frame, "
                "not even a keep-alive"
            ) from exc
        raise ews_error(exc, "streaming new-mail events") from exc
    except AttributeError:
        if stop.is_set():  # the stream was closed under exchangelib by stop
            return
        raise
    finally:
        _STOPPER.forget(service)


def _end(service: GetStreamingEvents) -> None:
    """Shut the stream's socket: the read blocked on it returns at once."""
    response = getattr(service, "_streaming_response", None)
    connection = getattr(getattr(response, "raw", None), "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        service.stop_streaming()


# One thread for every stream of the process (closing the response alone does not
# unblock its read): a listener holding 10,000 streams would otherwise run 10,000
# more threads, each waking every second.
_STOPPER: Stopper[GetStreamingEvents] = Stopper("ews-stream-stop", _end)
