"""Deterministic fault injection: what goes wrong, on which request, how often.

A test arms faults; each incoming API request asks ``Faults.pick`` whether one
applies. Armed faults are consumed in the order they were added; a probability
mode (``rate``) draws from a seeded ``random.Random`` so a chaos run replays.

Kinds (wire shapes are Salesforce's, see ``app.py``):

``http_503``                 503 ``SERVER_UNAVAILABLE`` before the request is served
``http_500``                 500 ``UNKNOWN_EXCEPTION`` before the request is served
``http_502``                 502 Bad Gateway from the edge (HTML, not charged, no limit info)
``unable_to_lock_row``       per-item ``UNABLE_TO_LOCK_ROW`` in sObject Collections
                             (``items``: which indexes; default all), 400 for other calls
``invalid_session``          401 ``INVALID_SESSION_ID``
``request_limit_exceeded``   403 ``REQUEST_LIMIT_EXCEEDED`` (use ``count`` or ``duration``)
``latency``                  sleep ``seconds`` first, then serve normally
``commit_then_hang``         apply the write, then hold the answer ``seconds`` (the client
                             times out not knowing the write happened)
``commit_then_drop``         apply the write, then close the connection without answering

By default a fault applies to REST API requests (``/services/data/``); ``match``
narrows it (substring of the path, e.g. ``"composite"``), or widens it to OAuth
(``match="oauth2/token"``); ``method`` narrows by HTTP method.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = (
    "http_503",
    "http_500",
    "http_502",
    "unable_to_lock_row",
    "invalid_session",
    "request_limit_exceeded",
    "latency",
    "commit_then_hang",
    "commit_then_drop",
)
_DEFAULT_SECONDS = {"latency": 1.0, "commit_then_hang": 30.0}
API_PREFIX = "/services/data/"


@dataclass
class Fault:
    kind: str
    remaining: int | None  # None: until removed (or until ``expires_at``)
    match: str | None = None
    method: str | None = None
    seconds: float = 0.0
    expires_at: float | None = None  # time.monotonic() deadline
    items: tuple[int, ...] | None = None
    skip: int = 0  # matching requests to let through before the fault starts
    id: int = 0

    def applies_to(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.match is None:
            return path.startswith(API_PREFIX)
        return self.match in path

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["items"] = list(self.items) if self.items is not None else None
        return data


@dataclass
class _Rate:
    probability: float
    kinds: tuple[str, ...]
    rng: random.Random
    match: str | None
    seconds: float


@dataclass
class Faults:
    """The armed faults of one fake server. Thread-safe."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _armed: list[Fault] = field(default_factory=list)
    _rate: _Rate | None = None
    _next_id: int = 1
    fired: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, method, path)

    def add(
        self,
        kind: str,
        count: int | None = 1,
        *,
        match: str | None = None,
        method: str | None = None,
        seconds: float | None = None,
        duration: float | None = None,
        items: list[int] | tuple[int, ...] | None = None,
        skip: int = 0,
    ) -> Fault:
        """Arm ``kind`` for the next ``count`` matching requests.

        Args:
            count: how many requests it hits; None for every request until
                ``duration`` runs out or ``clear()``.
            match: substring of the request path; default: any REST API path.
            method: only requests with this HTTP method.
            seconds: sleep of ``latency`` / hold time of ``commit_then_hang``.
            duration: seconds from now after which the fault no longer applies.
            items: for ``unable_to_lock_row`` in a collection, which record
                indexes fail (default: all of them).
            skip: let this many matching requests through first (e.g. the
                reads of a flush, to hit its write).

        Raises:
            ValueError: unknown kind or a count below 1.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(KINDS)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None for 'until cleared')")
        if count == 1 and duration is not None:
            count = None
        with self._lock:
            fault = Fault(
                kind=kind,
                remaining=count,
                match=match,
                method=method,
                seconds=seconds if seconds is not None else _DEFAULT_SECONDS.get(kind, 0.0),
                expires_at=time.monotonic() + duration if duration is not None else None,
                items=tuple(items) if items is not None else None,
                skip=skip,
                id=self._next_id,
            )
            self._next_id += 1
            self._armed.append(fault)
            return fault

    def rate(
        self,
        probability: float,
        kinds: list[str] | tuple[str, ...] = ("http_503", "http_500", "unable_to_lock_row"),
        *,
        seed: int = 0,
        match: str | None = None,
        seconds: float = 0.5,
    ) -> None:
        """Hit each matching request with probability ``probability`` (0 turns it off)."""
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not 0.0 <= probability <= 1.0:
            raise ValueError(f"bad rate: probability={probability} unknown kinds={unknown}")
        with self._lock:
            self._rate = (
                _Rate(probability, tuple(kinds), random.Random(seed), match, seconds)
                if probability > 0
                else None
            )

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
            self._rate = None
            self.fired.clear()

    def armed(self) -> list[Fault]:
        with self._lock:
            self._drop_expired()
            return list(self._armed)

    def fired_list(self) -> list[tuple[str, str, str]]:
        """Every fault that fired so far: (kind, method, path)."""
        with self._lock:
            return list(self.fired)

    def fired_count(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for k, _, _ in self.fired if kind is None or k == kind)

    def pick(self, method: str, path: str) -> Fault | None:
        """The fault this request meets, consuming one use of it; None if none."""
        with self._lock:
            self._drop_expired()
            for fault in self._armed:
                if fault.applies_to(method, path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._armed.remove(fault)
                    self.fired.append((fault.kind, method, path))
                    return fault
            rate = self._rate
            if rate is not None:
                probe = Fault(kind="", remaining=None, match=rate.match)
                if probe.applies_to(method, path) and rate.rng.random() < rate.probability:
                    kind = rate.rng.choice(rate.kinds)
                    self.fired.append((kind, method, path))
                    return Fault(kind=kind, remaining=None, seconds=rate.seconds)
            return None

    def _drop_expired(self) -> None:
        now = time.monotonic()
        self._armed = [f for f in self._armed if f.expires_at is None or f.expires_at > now]
