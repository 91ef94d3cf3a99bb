"""The hit stream: what the web edge appends and the events worker drains.

One Redis stream, `sightline:hits`, one entry per pixel load or click, with short
field names (they are repeated in every entry)::

    k  o | c              open or click
    s  sent message id    t  team id      r  recipient index
    i  issued at (unix)   l  link index   u  destination (clicks)
    m  HTTP method        a  client address   g  user agent (≤ 500 chars)
    p  1 if a prefetch/preview header was present
    d  device public id from a valid device cookie, e  that device's team id

The entry id (``<ms>-<seq>``) is the hit's time and its natural key. The edge
never reads the database; everything the worker needs to label a hit is here
or looked up by id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from core.tracking.tokens import ClickToken, DeviceRef, OpenToken

STREAM = "sightline:hits"
GROUP = "events"
FEED_NUDGE_CHANNEL = "sightline:feed:nudge"
# A nudge naming one Live Feed item that changed in place ("update:<event id>").
FEED_UPDATE_PREFIX = "update:"
MAX_USER_AGENT = 500


def feed_update(item_id: int) -> str:
    """The nudge that says Live Feed item `item_id` changed (a document visit read on)."""
    return f"{FEED_UPDATE_PREFIX}{int(item_id)}"


def feed_updated_item(message: bytes | str) -> int | None:
    """The item a nudge names as changed, else None (a plain "something new" nudge)."""
    text = message.decode("ascii", "replace") if isinstance(message, bytes) else message
    rest = text.removeprefix(FEED_UPDATE_PREFIX)
    return int(rest) if rest != text and rest.isdigit() and len(rest) < 20 else None


class MalformedHitError(ValueError):
    """A stream entry that our edge did not write (or that was damaged)."""


@dataclass(frozen=True)
class Hit:
    stream_id: str
    kind: str  # open, click
    sent_message_id: int
    team_id: int
    recipient: int
    issued_at: int
    link: int | None
    url: str | None
    method: str
    ip: str | None
    user_agent: str
    prefetch: bool
    device_id: str | None
    device_team_id: int | None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(int(self.stream_id.split("-", 1)[0]) / 1000, UTC)


def encode(
    token: OpenToken,
    *,
    method: str,
    ip: str | None,
    user_agent: str,
    prefetch: bool,
    device: DeviceRef | None,
) -> dict[str, str]:
    fields = {
        "k": "c" if isinstance(token, ClickToken) else "o",
        "s": str(token.sent_message_id),
        "t": str(token.team_id),
        "r": str(token.recipient),
        "i": str(token.issued_at),
        "m": method,
        "a": ip or "",
        "g": user_agent[:MAX_USER_AGENT],
    }
    if isinstance(token, ClickToken):
        fields["l"] = str(token.link)
        fields["u"] = token.url
    if prefetch:
        fields["p"] = "1"
    if device is not None:
        fields["d"] = device.device_id
        fields["e"] = str(device.team_id)
    return fields


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def decode(stream_id: bytes | str, raw: Mapping[bytes | str, bytes | str]) -> Hit:
    """The hit in a stream entry. Raises MalformedHitError for anything else."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    try:
        kind = {"o": "open", "c": "click"}[fields["k"]]
        link = int(fields["l"]) if kind == "click" else None
        url = fields["u"] if kind == "click" else None
        return Hit(
            stream_id=_text(stream_id),
            kind=kind,
            sent_message_id=int(fields["s"]),
            team_id=int(fields["t"]),
            recipient=int(fields["r"]),
            issued_at=int(fields["i"]),
            link=link,
            url=url,
            method=fields.get("m", "GET")[:10],
            ip=fields.get("a") or None,
            user_agent=fields.get("g", "")[:MAX_USER_AGENT],
            prefetch=fields.get("p") == "1",
            device_id=fields.get("d") or None,
            device_team_id=int(fields["e"]) if fields.get("e") else None,
        )
    except (KeyError, ValueError) as exc:
        raise MalformedHitError(f"stream entry {_text(stream_id)}: {exc!r}") from None
