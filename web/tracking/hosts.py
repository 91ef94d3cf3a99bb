"""Which team a request's Host belongs to, for the ASGI front door.

Teams' tracking hosts live in the database (`core.tracking_domains`); the edge
must not read it per request. Design note:

- *Keyed by* the Host header's name (lower-cased, no port). The map holds every
  host a team claimed, verified or not: a claimed host never serves the app.
- *Cost on the hot path*: the operator's own host and IP literals never look
  (one string compare); any other name is a dict lookup. The map is re-read in
  a thread: in the background when older than `REFRESH_SECONDS`, and awaited
  (one read shared by every waiting request) when a name is missing and the map
  is older than `MISS_REFRESH_SECONDS`, so a host verified a moment ago is known
  at once and a flood of made-up Host names costs at most one query per window.
- *On failure* (database unreachable) the last map is kept and the error logged;
  a later request tries again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

from core.db import session_scope
from core.tracking_domains import operator_host, registered_hosts, request_host

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0
MISS_REFRESH_SECONDS = 2.0


def _load() -> dict[str, int]:
    with session_scope() as session:
        return registered_hosts(session)


class TeamHosts:
    def __init__(self, load: Callable[[], dict[str, int]] = _load) -> None:
        self.load = load
        self.hosts: dict[str, int] = {}
        self.loaded_at: float | None = None
        self.reading: asyncio.Future[None] | None = None
        self.operator = operator_host()

    async def team_for(self, host_header: str | None) -> int | None:
        """The team whose tracking host this is, or None (the operator's host, unknown)."""
        name = request_host(host_header)
        if not name or name == self.operator or _is_ip(name):
            return None
        now = asyncio.get_running_loop().time()
        age = None if self.loaded_at is None else now - self.loaded_at
        team = self.hosts.get(name)
        if age is None or (team is None and age > MISS_REFRESH_SECONDS):
            await self._refresh()
            return self.hosts.get(name)
        if age > REFRESH_SECONDS and self.reading is None:
            self.reading = asyncio.ensure_future(self._read())
        return team

    async def _refresh(self) -> None:
        if self.reading is None:
            self.reading = asyncio.ensure_future(self._read())
        await asyncio.shield(self.reading)

    async def _read(self) -> None:
        try:
            self.hosts = await asyncio.to_thread(self.load)
        except Exception as exc:  # noqa: BLE001 - keep serving with the last map
            log.error("tracking_hosts_not_read error=%s", type(exc).__name__)
        finally:
            self.loaded_at = asyncio.get_running_loop().time()
            self.reading = None


def _is_ip(name: str) -> bool:
    if not name[-1].isdigit():  # a name's last label starts with a letter; skips a raise
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
