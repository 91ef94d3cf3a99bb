"""The Flask application: API v1, health check, sign-in, Live Feed and the web app's pages.

`create_app(config=None)` is the factory (the Flask tutorial's shape). The `web`
process serves it behind the ASGI front door `web.tracking.app` (which answers
the pixel, clicks, the feed stream and the push webhooks itself, and builds this
app once at start-up); `flask --app web …` runs the CLI. The factory imports the blueprints
itself, so that importing any module under web/ stays light (see its comment).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from config import get_settings
from config.logging import configure_logging


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

    # lazy import: this package runs before any module under web/, also in the gunicorn
    # master, which imports web.tracking.serve for its worker class and serves nothing.
    # Blueprints imported at the top cost that master 58 MiB RSS, and the web dyno
    # (master + 2 workers, after 20 s of load) 10 to 15 MiB PSS: 219 MiB, not 204-209.
    from web import app as app_pages
    from web import (
        auth,
        cli,
        connect,
        db,
        documents,
        feed,
        health,
        layout,
        oauth_pages,
        security,
        unsubscribe,
    )
    from web.addons.gmail import routes as gmail_addon
    from web.addons.outlook import pages as outlook_addin
    from web.api import resources as api

    security.init_app(app)  # first: its URL converter applies to the rules added below
    db.init_app(app)
    app.register_blueprint(health.bp)
    api.init_app(app)
    auth.init_app(app)
    app.register_blueprint(feed.bp)
    documents.init_app(app)
    app_pages.init_app(app)
    app.register_blueprint(unsubscribe.bp)
    app.register_blueprint(outlook_addin.bp)
    connect.init_app(app)
    gmail_addon.init_app(app)
    oauth_pages.init_app(app)
    cli.init_app(app)
    layout.init_app(app)  # last: its error pages replace the API's app-wide 404/405
    return app
