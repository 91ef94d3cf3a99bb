"""Message-ID parsing, reply matching and inbound-message classification.

Public API (import from the submodules; this package imports nothing heavy):

- ``worker.matching.msgid``: ``parse_msgid_list``, ``normalize_msgid``,
  ``reference_candidates`` and the canonical Message-ID form the project uses.
"""
