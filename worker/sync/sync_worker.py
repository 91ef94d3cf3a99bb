"""The Procfile `sync` process's RQ worker: a SimpleWorker that heartbeats less often.

A push sync costs 15-20 ms of CPU, and rq's SimpleWorker spends a good part of
that on bookkeeping around the job (python -m bench.sync_cpu --profile). Between
two jobs it sends the same plain worker heartbeat three times within a
millisecond (after the job, before the dequeue, after it), each an HSET and two
EXPIREs. At 10,000 Gmail mailboxes (~170 syncs/s) the two repeats are ~1,000
Redis commands a second that say nothing new.

This class drops a plain heartbeat (no timeout, no pipeline) that follows another
plain one within `HEARTBEAT_MIN_INTERVAL` seconds. The worker's key never expires
earlier than rq would have let it, give or take that interval: every heartbeat
rq sends with its own timeout or inside a pipeline (a job's start, a forking
worker's monitoring loop) still goes out, and the plain one after it too; a plain
one sets the key to `worker_ttl + 60` seconds, while the longest wait between two
heartbeats (a blocking dequeue) is `worker_ttl - 15`.
"""

from __future__ import annotations

import time
from typing import Any

from rq.worker import SimpleWorker

HEARTBEAT_MIN_INTERVAL = 5.0


class SyncWorker(SimpleWorker):
    """SimpleWorker without the back-to-back plain heartbeats between jobs."""

    _last_plain_heartbeat: float | None = None

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if timeout is None and pipeline is None:
            now = time.monotonic()
            last = self._last_plain_heartbeat
            if last is not None and now - last < HEARTBEAT_MIN_INTERVAL:
                return
            self._last_plain_heartbeat = now
        else:
            # A heartbeat with rq's own timeout (a job starting) may shorten the key's
            # life below a plain one's: the next plain heartbeat must go out.
            self._last_plain_heartbeat = None
        super().heartbeat(timeout, pipeline=pipeline)
