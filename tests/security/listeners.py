"""A plain TCP listener that records whether anything connected (the security tests).

It stands in for whatever an attacker would aim the server at: an internal
service that answers with something worth stealing (an SSH banner, an HTTP
error page). A test points a team's settings at it and then checks that
`connections` stayed empty and that `SECRET` never came back to the user.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

SECRET = "internal-secret-7c1e"
SSH_BANNER = f"SSH-2.0-OpenSSH_9.2 {SECRET}\r\n".encode()
HTTP_ANSWER = (
    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
    f"Content-Length: {len(SECRET) + 2}\r\nConnection: close\r\n\r\n{SECRET}\r\n"
).encode()


class Listener:
    """Accepts connections on `host` (a free port), greets with `banner`, records each.

    `connections` lists the peer addresses, `received` what each sent first.
    """

    def __init__(self, host: str = "127.0.0.1", banner: bytes = SSH_BANNER, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.listen(16)
        # Set here, not in the serving thread: a block that ends at once closes the
        # socket before that thread's first line (it raised EBADF in a CI run).
        self.sock.settimeout(0.2)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.banner = banner
        self.connections: list[tuple[object, ...]] = []
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="listener", daemon=True)

    @classmethod
    def on_port(cls, host: str, port: int, banner: bytes = SSH_BANNER) -> Listener:
        """A listener on `host` at a given port (OSError if it is taken)."""
        return cls(host, banner, port)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(tuple(peer))
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.sendall(self.banner)  # an HTTP client reads it after its request
                    self.received.append(conn.recv(4096))
