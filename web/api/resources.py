"""The API's resources on its one blueprint: what `create_app` installs.

Importing a module of RESOURCES adds its routes to `web.api.common.bp` (each
registered with `web.api.operations.operation`, which also describes it in the
OpenAPI document); `init_app` registers the blueprint after that, once. A new
API module is imported here and named in RESOURCES.
"""

from __future__ import annotations

from flask import Flask

from web.addons.outlook import api as outlook_addin
from web.api import (
    account,
    addons,
    emails,
    enrollments,
    imports,
    jobs,
    members,
    openapi,
    optouts,
    preview,
    privacy,
    prospects,
    routes,
    salesforce,
    salesforce_admin,
    sequences,
    templates,
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
    enrollments,
    prospects,
    templates,
    emails,
    sequences,
    imports,
    preview,
    openapi,
)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
