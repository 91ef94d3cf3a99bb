"""The API's resources on its one blueprint: what `create_app` installs.

Importing routes.py, salesforce.py, privacy.py, optouts.py, tracking_host.py and
openapi.py adds their routes to
`web.api.common.bp`; `init_app` registers the blueprint after that, once.
"""

from __future__ import annotations

from flask import Flask

from web.addons.outlook import api as outlook_addin
from web.api import (
    account,
    addons,
    jobs,
    members,
    openapi,
    optouts,
    privacy,
    routes,
    salesforce,
    salesforce_admin,
    tracking_host,
)
from web.api.common import bp

RESOURCES = (
    routes,
    salesforce,
    privacy,
    optouts,
    tracking_host,
    members,
    account,
    salesforce_admin,
    jobs,
    outlook_addin,
    addons,
    openapi,
)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
