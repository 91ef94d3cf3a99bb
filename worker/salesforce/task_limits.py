"""Salesforce's limits on a Task's text: what every module that writes one cuts to.

Subject at most 255 characters, Description at most 32,000 (Salesforce's field
lengths): text is cut before it is sent, so STRING_TOO_LONG cannot happen.

A module of its own, importing nothing, because the modules that build a
Task's text (the inbound message, the rules, the sent message's record) run in
the web process too, which must not load simple-salesforce for two numbers
(simple-salesforce with worker.salesforce.connections: 8 MiB RSS there,
measured after create_app).
"""

from __future__ import annotations

SUBJECT_LIMIT = 255
DESCRIPTION_LIMIT = 32_000
