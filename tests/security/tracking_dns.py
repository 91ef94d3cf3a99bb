"""A DNS zone for tests of teams' tracking hosts, answered through the system resolver's API.

`socket.getaddrinfo` is replaced (as in test_outbound_pinning.py) by `Zone`,
which answers the names under the domains it holds as a resolver would with
those records: a CNAME is followed to its canonical name (given back when
AI_CANONNAME is asked for), a name with neither record fails with EAI_NONAME.
Every other name goes to the real resolver (localhost, the test databases).
Nothing of ours is replaced. The addresses are public ones nobody connects to.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

OPERATOR = "app.sightline-demo.com"
OPERATOR_URL = f"http://{OPERATOR}"  # http: the test client sends no Secure cookie
OPERATOR_ADDRESSES = ["52.20.1.10", "52.20.1.11", "2600:1f18::10"]

# name → a CNAME target (str) or addresses (list)
RECORDS: dict[str, str | list[str]] = {
    OPERATOR: "lb-7.sightline-demo-edge.net",
    "lb-7.sightline-demo-edge.net": OPERATOR_ADDRESSES,
    "track.acme-sales.com": OPERATOR,  # the CNAME the README asks for
    "links.beta-sales.com": OPERATOR,
    "go.acme-sales.com": ["52.20.1.11"],  # an A record copied from ours
    "mail.acme-sales.com": ["93.184.215.14"],  # somewhere else
    "inside.acme-sales.com": ["10.20.0.5"],  # a private address
    "half.acme-sales.com": ["52.20.1.10", "192.168.1.20"],
}
DOMAINS = ("sightline-demo.com", "sightline-demo-edge.net", "acme-sales.com", "beta-sales.com")


class Zone:
    def __init__(self, records: dict[str, str | list[str]]) -> None:
        self.records = records
        self.real: Callable[..., Any] = socket.getaddrinfo

    def __call__(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = str(host).lower().rstrip(".")
        if not any(name == d or name.endswith(f".{d}") for d in DOMAINS):
            return self.real(host, port, family, type, proto, flags)
        seen = 0
        while isinstance(self.records.get(name), str) and seen < 8:
            name = str(self.records[name])
            seen += 1
        addresses = self.records.get(name)
        if not isinstance(addresses, list):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = []
        for index, address in enumerate(addresses):
            kind = socket.AF_INET6 if ":" in address else socket.AF_INET
            canonical = name if flags & socket.AI_CANONNAME and index == 0 else ""
            sockaddr = (
                (address, int(port or 0), 0, 0) if ":" in address else (address, int(port or 0))
            )
            answers.append((kind, socket.SOCK_STREAM, socket.IPPROTO_TCP, canonical, sockaddr))
        return answers


def use_zone(monkeypatch: pytest.MonkeyPatch) -> Zone:
    zone = Zone(dict(RECORDS))
    monkeypatch.setattr(socket, "getaddrinfo", zone)
    return zone
