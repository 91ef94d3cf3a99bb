"""REST API v1: JSON in and out, `Authorization: Bearer <token>`.

One blueprint, `web.api.common.bp` (with the errors, body parsing and token check
every resource shares); the resources add their routes to it: routes.py
(mailboxes, sequences, enrollments, messages, events), salesforce.py (the team's
org, usage, dead letters) and openapi.py (the OpenAPI document, and the query
parameters each operation accepts). The mailbox connect routes
(`web/connect/api.py`) and the content library's (`web/documents/api.py`) are
blueprints of their own under the same prefix.
"""

from __future__ import annotations

from flask import Flask

from web.api import openapi, routes, salesforce
from web.api.common import bp

# Importing them added their routes to `bp`; it is registered after, once.
RESOURCES = (routes, salesforce, openapi)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
