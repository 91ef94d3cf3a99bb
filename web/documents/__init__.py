"""Trackable attachments on the web: the content library, its API, and the viewer.

Three blueprints, registered by `init_app`:

- `library` (signed-in users, CSRF-protected): ``/documents`` — upload, watch
  conversion progress, link settings, seconds-per-page charts per document and
  per recipient. A team not on the team plan sees an explanation instead.
- `documents_api` (bearer token): ``/api/v1/documents…`` and a step's documents;
  403 ``plan_required`` for a team not on the team plan.
- `viewer` (public, authenticated by signed tokens only): ``/d/<token>`` — the
  page images, the beacons that report time per page, downloads.

Must never: show one team's documents, links or views to another team; let
the viewer set a cookie, load anything from another origin, or count the
sender's own device; answer a bad, expired or revoked link with a stack trace.
"""

from __future__ import annotations

from flask import Flask

from web.documents import api, library, viewer


def init_app(app: Flask) -> None:
    app.register_blueprint(library.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(viewer.bp)
