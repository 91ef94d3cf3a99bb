"""A TCP relay on 127.0.0.1 between a client under test and a real server.

It passes bytes both ways, keeps every line the client sent (to count commands
on the wire: LIST, DONE), and can stop passing (`passing.clear()`), as a hung
path or server does: the sockets stay open, nothing more arrives.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpRelay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.passing = threading.Event()
        self.passing.set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._sockets: list[socket.socket] = [self.server]
        self._lines: list[bytes] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def client_lines(self) -> list[bytes]:
        """Every whole line the client sent so far (CRLF removed)."""
        with self._lock:
            return list(self._lines)

    def forget(self) -> None:
        with self._lock:
            self._lines.clear()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
                self._sockets += [client, upstream]
                for a, b, keep in ((client, upstream, True), (upstream, client, False)):
                    threading.Thread(target=self._pump, args=(a, b, keep), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, keep: bool) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if keep:
                    *lines, pending = (pending + data).split(b"\r\n")
                    with self._lock:
                        self._lines += lines
                self.passing.wait()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.passing.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
