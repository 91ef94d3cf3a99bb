"""Which of a history page's new messages a Gmail sync reads, and how SENT ones are read.

Replies are read by their headers (`GmailProvider._summaries`). A SENT message is
read only for an add-on's tokens (`worker.sync.sent_mail`).

History lists a SENT message with its id, thread and labels: that is its summary
(no metadata call). `GmailProvider.read_sent` then asks for it once with
``format=full``, which hands the text parts over transfer-decoded and
attachments as ids only (never downloaded): 5 quota units a message, and only
while the team has a draft from an add-on waiting to be recognised.
"""

from __future__ import annotations

import base64
import codecs
import re
from typing import Any

from worker.sync.base import HeaderSummary, SentCopy
from worker.sync.sent_copy import MAX_TEXT_CHARS, TEXT_TYPES, from_headers, in_sent

_CHARSET = re.compile(r"charset=\"?([A-Za-z0-9_.:-]{1,40})", re.IGNORECASE)


def sent_copy(message: dict[str, Any]) -> SentCopy:
    """A `messages.get(format=full)` answer as a SentCopy."""
    payload = message.get("payload") or {}
    headers = [
        (str(h.get("name", "")), str(h.get("value", ""))) for h in payload.get("headers") or []
    ]
    thread_id = str(message.get("threadId") or "") or None
    return from_headers(headers, _part_texts(payload), thread_id)


def sent_by_user(message: dict[str, Any]) -> bool:
    """Sent by the user (from Gmail itself, or by us): SENT, not a draft or a chat."""
    labels = set(message.get("labelIds") or [])
    return "SENT" in labels and not labels & {"DRAFT", "CHAT"}


def sent_summary(message: dict[str, Any]) -> HeaderSummary:
    """A SENT message as history lists it (its id, its thread)."""
    message_id = str(message["id"])
    return in_sent(message_id, message_id, str(message.get("threadId") or "") or None)


def _part_texts(payload: dict[str, Any]) -> str:
    """The decoded text/html and text/plain leaves of a format=full part tree, bounded."""
    texts: list[str] = []
    size = 0
    stack = [payload]
    while stack and size < MAX_TEXT_CHARS:
        part = stack.pop(0)
        stack.extend(part.get("parts") or [])
        data = (part.get("body") or {}).get("data")
        if part.get("mimeType") not in TEXT_TYPES or part.get("filename") or not data:
            continue
        text = base64.urlsafe_b64decode(str(data) + "==")[: MAX_TEXT_CHARS * 4].decode(
            _charset(part), errors="replace"
        )
        texts.append(text)
        size += len(text)
    return "\n".join(texts)[:MAX_TEXT_CHARS]


def _charset(part: dict[str, Any]) -> str:
    for header in part.get("headers") or []:
        if str(header.get("name", "")).lower() == "content-type":
            found = _CHARSET.search(str(header.get("value", "")))
            if found:
                try:
                    codecs.lookup(found.group(1))
                    return found.group(1)
                except LookupError:
                    break
    return "utf-8"


def added_messages(
    records: list[dict[str, Any]], seen: set[str], skipped: set[str]
) -> tuple[list[str], list[HeaderSummary]]:
    """The history page's new messages: ids to read headers of, and SENT messages
    (read for an add-on's tokens only). `seen` grows."""
    ids: list[str] = []
    sent: list[HeaderSummary] = []
    for record in records:
        for added in record.get("messagesAdded") or []:
            message = added.get("message") or {}
            message_id = str(message.get("id", ""))
            if not message_id or message_id in seen:
                continue
            if worth_reading(message, skipped):
                seen.add(message_id)
                ids.append(message_id)
            elif sent_by_user(message):
                seen.add(message_id)
                sent.append(sent_summary(message))
    return ids, sent


def worth_reading(message: dict[str, Any], skipped: set[str]) -> bool:
    labels = set(message.get("labelIds") or [])
    if labels & ({"DRAFT", "CHAT"} | (skipped - {"SENT"})):
        return False
    # Our own sends (and the user's): the engine would call them "own" anyway.
    # A message labelled SENT and INBOX (written to oneself) is read.
    return not ("SENT" in labels and "INBOX" not in labels)
