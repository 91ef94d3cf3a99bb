"""Signed tokens in document viewer URLs.

- Link token ``/d/<token>``: ``[link id, document id, sent message id, recipient]``.
  It ties a view to the sent message and the recipient it was made for; the
  link row (expiry, revocation, download permission) is read on every use.
- Visit token (in the viewer page, sent back with every beacon):
  ``[visit id, link id]``. Beacons need nothing else to find their visit.

Both are signed with SECRET_KEY under their own salt (`core.tokens`); anything
forged, truncated or swapped between purposes reads as None.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.tokens import sign, unsign

LINK_PURPOSE = "document.link"
VISIT_PURPOSE = "document.visit"


@dataclass(frozen=True)
class LinkRef:
    link_id: int
    document_id: int
    sent_message_id: int
    recipient: int


@dataclass(frozen=True)
class VisitRef:
    visit_id: int
    link_id: int


def _ints(payload: object, count: int) -> list[int] | None:
    if not isinstance(payload, list) or len(payload) != count:
        return None
    if not all(type(v) is int and v >= 0 for v in payload):
        return None
    return payload


def link_token(link_id: int, document_id: int, sent_message_id: int, recipient: int) -> str:
    return sign(LINK_PURPOSE, [link_id, document_id, sent_message_id, recipient])


def read_link_token(token: str) -> LinkRef | None:
    values = _ints(unsign(LINK_PURPOSE, token), 4)
    return LinkRef(*values) if values else None


def visit_token(visit_id: int, link_id: int) -> str:
    return sign(VISIT_PURPOSE, [visit_id, link_id])


def read_visit_token(token: str) -> VisitRef | None:
    values = _ints(unsign(VISIT_PURPOSE, token), 2)
    return VisitRef(*values) if values else None
