"""Message-ID parsing, reply matching and inbound-message classification.

Public API (import from the submodules; this package module imports nothing):

- ``worker.matching.msgid``: the canonical Message-ID form the project stores
  and compares, and
    ``parse_msgid_list(value: str | bytes | None) -> list[str]``
    ``normalize_msgid(value: str) -> str | None``
    ``reference_candidates(msg: email.message.Message) -> list[str]``
- ``worker.matching.classify``:
    ``classify_message(raw: bytes, *, budget=1.5) -> Classification``, with
    ``Classification`` a frozen dataclass: ``kind``, ``refers_to``,
    ``bounce_recipients``, ``auto_reply_until``, ``text``,
    ``unsubscribe_request``, ``complaint``, ``reason``; ``as_json(path)`` gives
    the CLI object. Over its time budget, or on bytes the parsers cannot read,
    the kind is ``quarantined`` with a ``reason``; nothing broader is caught (an
    RQ job timeout propagates).
- ``python -m worker.matching classify [--budget S] FILE [FILE...]``: one JSON
  line per file.

Inside: ``mimetext`` (parsing and decoding, input caps), ``htmltext`` (HTML to
text, linear), ``budget`` (the time budget), ``dsn`` (RFC 3464 fields, status
codes), ``reasons`` (bounce reason and hard/soft), ``bounce``, ``complaint``,
``autoreply`` (and the return date), ``replytext`` (new text, unsubscribe).
Every pattern runs in linear time (tests/unit/matching/test_regex_linear.py).
"""
