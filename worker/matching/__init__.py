"""Message-ID parsing, reply matching and inbound-message classification.

Public API (import from the submodules; this package module imports nothing):

- ``worker.matching.msgid``: the canonical Message-ID form the project stores
  and compares, and
    ``parse_msgid_list(value: str | bytes | None) -> list[str]``
    ``normalize_msgid(value: str) -> str | None``
    ``reference_candidates(msg: email.message.Message) -> list[str]``
- ``worker.matching.classify``:
    ``classify_message(raw: bytes) -> Classification`` (never raises), with
    ``Classification`` a frozen dataclass: ``kind``, ``refers_to``,
    ``bounce_recipients``, ``auto_reply_until``, ``text``,
    ``unsubscribe_request``, ``complaint``; ``as_json(path)`` gives the CLI object.
- ``python -m worker.matching classify FILE [FILE...]``: one JSON line per file.

Inside: ``mimetext`` (parsing and decoding), ``dsn`` (RFC 3464 fields, status
codes), ``reasons`` (bounce reason and hard/soft), ``bounce``, ``complaint``,
``autoreply`` (and the return date), ``replytext`` (new text, unsubscribe).
"""
