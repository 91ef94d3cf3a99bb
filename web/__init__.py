"""The Flask application: API v1, health check, sign-in, Live Feed (and, as issues land, UI).

`create_app(config=None)` is the factory (the Flask tutorial's shape). The `web`
process serves it behind the ASGI front door `web.tracking.app` (which answers
the pixel, clicks and the feed stream itself); `flask --app web …` runs the CLI.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from config import get_settings
from config.logging import configure_logging
from web import (
    api,
    auth,
    cli,
    connect,
    db,
    documents,
    feed,
    health,
    oauth_flow,
    security,
    webhooks,
)
from web import app as app_pages


def create_app(config: dict[str, Any] | None = None) -> Flask:
    settings = get_settings()
    configure_logging(settings)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Sessions and CSRF tokens signed with a former key stay valid after a rotation.
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),
        MAX_CONTENT_LENGTH=10 * 1024 * 1024,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_base_url.startswith("https://"),
    )
    if config:
        app.config.update(config)

    security.init_app(app)  # first: its URL converter applies to the rules added below
    db.init_app(app)
    app.register_blueprint(health.bp)
    api.init_app(app)
    auth.init_app(app)
    app.register_blueprint(feed.bp)
    documents.init_app(app)
    app_pages.init_app(app)
    app.register_blueprint(webhooks.bp)
    connect.init_app(app)
    oauth_flow.init_app(app)
    cli.init_app(app)
    return app
