"""Connecting, reconnecting and disconnecting mailboxes on the web.

- `web.connect.api`: `/api/v1/mailboxes/...` (bearer token): start an OAuth
  connect or reconnect, connect an Exchange mailbox, reconnect one with new
  credentials, disconnect one.
- `web.connect.page`: `/mailboxes` (signed-in users): the mailboxes page with the
  same actions as forms (CSRF-protected).
- `web.connect.oauth`: Gmail and Microsoft 365, the mailbox `FlowKind` of
  `web.oauth_flow` (which binds a consent to the browser and person who started
  it, and owns the callbacks and the confirm step).

What a connect stores and starts, and what disconnecting does, is
`worker.sync.connecting`'s, shared with `POST /api/v1/mailboxes` and the IMAP
form (`web.app.imap`): credentials encrypted, the first sync queued, push
started; disconnecting marks the mailbox `disabled` at once and leaves the rest
to a job (stop the watch or subscription, give the grant back, wipe the tokens),
keeping the mailbox row and everything it recorded.
"""

from __future__ import annotations

from flask import Flask

from web.connect.api import api
from web.connect.page import pages


def init_app(app: Flask) -> None:
    app.register_blueprint(api)
    app.register_blueprint(pages)
