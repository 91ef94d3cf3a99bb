"""The `web` process's ASGI app (`web.tracking.app`), called in-process as uvicorn calls it.

For what Flask's test client cannot reach: the routes the ASGI app answers
itself (the push webhooks). The app runs on its own event loop in a thread, as
under uvicorn, so a fake provider's delivery thread and the test's own thread
may both post; each call waits for its answer.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from web.tracking.app import SightlineAsgi

CHUNK = 65536


def http_scope(
    method: str, target: str, headers: list[tuple[str, str]], *, client: str
) -> dict[str, Any]:
    """The HTTP scope uvicorn hands an ASGI app for `target` (a path and query)."""
    parts = urlsplit(target)
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": parts.path,
        "raw_path": parts.path.encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": (client, 50000),
        "server": ("127.0.0.1", 5000),
    }


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: dict[str, str]  # lower-case names
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode()

    @property
    def mimetype(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip()


class AsgiClient:
    """Requests to a started `SightlineAsgi`, from any thread."""

    def __init__(self) -> None:
        self.app = SightlineAsgi()
        self.app.start()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def post(
        self,
        target: str,
        data: bytes = b"",
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Answer:
        """POST `target` (path and query). `chunked`: no Content-Length, the body in pieces."""
        body = jsonlib.dumps(json).encode() if json is not None else data
        named = {k.lower(): v for k, v in (headers or {}).items()}
        if json is not None:
            named.setdefault("content-type", "application/json")
        if chunked:
            named["transfer-encoding"] = "chunked"
        else:
            named["content-length"] = str(len(body))
        call = self._call("POST", target, named, body, chunked)
        return asyncio.run_coroutine_threadsafe(call, self.loop).result(timeout=60)

    async def _call(
        self, method: str, target: str, headers: dict[str, str], body: bytes, chunked: bool
    ) -> Answer:
        scope = http_scope(method, target, list(headers.items()), client="198.51.100.7")
        size = CHUNK if chunked else max(len(body), 1)
        pieces = [body[at : at + size] for at in range(0, len(body), size)] or [b""]
        messages: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            if not pieces:
                return {"type": "http.disconnect"}
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

        async def send(message: MutableMapping[str, Any]) -> None:
            messages.append(dict(message))

        await self.app(scope, receive, send)
        start = messages[0]
        return Answer(
            status_code=int(start["status"]),
            headers={bytes(k).decode().lower(): bytes(v).decode() for k, v in start["headers"]},
            data=b"".join(bytes(m.get("body", b"")) for m in messages[1:]),
        )

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
