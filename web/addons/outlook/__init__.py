"""The Outlook add-in: manifest, task panes, sign-in dialog, and the pane's bearer.

- `manifest`: the add-in only XML manifest for this install's `PUBLIC_BASE_URL`.
- `pages`: ``/addons/outlook/…``: the manifest, the compose and read panes, the
  function file, and the sign-in dialog that hands the pane its token.
- `tokens`: the add-in token (signed, short-lived, revocable); `bearer`: the
  decorator by which an API operation accepts it; `api`: the pane's session
  (who am I, sign out) on API v1.

What the panes show and do (prospects, sequences, the library, draft links, the
Live Feed) is `web.addons.service`, reached through API v1. Office.js is called
from one script only, web/static/addons/office-adapter.js. This `__init__` imports
nothing (its modules import each other through it); `create_app` registers `pages.bp`.
"""
