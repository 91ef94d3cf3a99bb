"""The listener stops on SIGTERM however many arrive, and however close together.

Heroku, honcho and our own test stacks may each send one: a second SIGTERM whose
handler runs while the first handler is inside `threading.Event.set` used to wait
for the lock that first handler held, in the same thread, for ever.
"""

from __future__ import annotations

import threading

from worker.listener import Listener


def test_a_stop_that_lands_inside_another_returns_at_once() -> None:
    listener = Listener(shard=0, shards=1)

    def two_signals() -> None:
        listener.stop()
        # Where a nested handler runs: the first one's Event.set holds the event's lock.
        with listener.stopping._cond:  # type: ignore[attr-defined]
            listener.stop()

    handlers = threading.Thread(target=two_signals, daemon=True)
    handlers.start()
    handlers.join(timeout=5)
    assert not handlers.is_alive(), "the second stop waited for the first's lock"
    assert listener.stopping.is_set()
