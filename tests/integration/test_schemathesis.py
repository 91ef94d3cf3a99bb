"""Schemathesis against `/api/v1/openapi.json`: no 5xx, answers that match the schema.

Every operation of the published schema is called with generated requests
(valid ones and, for `negative_data_rejection`, invalid ones) through the real
Flask app on both databases, signed in with a real API token, with the team's
own objects behind ids 1 and up so lookups hit rows as well as misses. The
document is the one the app generates from its routes, so a new operation is
covered the moment it is registered. Checks:

- `not_a_server_error`: whatever is sent, never a 5xx (bad input is a 4xx);
- `status_code_conformance`, `content_type_conformance`,
  `response_schema_conformance`, `response_headers_conformance`: what comes
  back is what the schema promises;
- `negative_data_rejection`: data the schema forbids is refused with a 4xx.

Requests without a token are tests/security/test_routes.py's business (every
route of the URL map, API included).

Bounded for `make test` (`MAX_EXAMPLES` per operation, derandomized, one world
per database for the whole module); the long run:
`SCHEMATHESIS_EXAMPLES=500 python -m pytest tests/integration/test_schemathesis.py`.
Nothing leaves the machine: mailbox checks are switched off in generated
bodies, and Salesforce logins go to an address that refuses at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from config import get_settings
from core.redis import get_redis
from tests.conftest import _clear_caches as clear_caches
from tests.conftest import create_user, empty_database, service_environment
from tests.integration.test_app_pages import build_world
from web import create_app
from web.api.operations import build_document

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))


def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """`not_a_server_error`, except a 502/503/504 the operation documents.

    Those say an upstream (Google's or Microsoft's sign-in) could not be reached:
    not a fault of ours nor of the request, and the client is told so.
    """
    status = response.status_code
    if status < 500:
        return None
    documented = case.operation.definition.raw.get("responses", {})
    if status in (502, 503, 504) and str(status) in documented:
        return None
    where = f"{case.method} {case.formatted_path}"
    raise AssertionError(f"{status} from {where}: {response.text[:500]}")


CHECKS = [
    no_undocumented_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Flask, str]]:
    """The app and a token of a team with one of everything, once per database.

    Every operation's examples run against the same world (a DELETE may leave a
    later operation a 404 to answer, which it must answer just as well): building
    it for each of the ~100 operations cost more than the calls themselves.
    """
    database_url: str = request.getfixturevalue(f"{request.param}_database_url")
    names = service_environment(database_url, redis_url, tmp_path_factory.mktemp("var"))
    # A login attempt must fail fast and locally: nothing listens on port 9 here.
    names["SALESFORCE_LOGIN_URL"] = "https://127.0.0.1:9"
    with mock.patch.dict(os.environ, names):
        for name in ("SALESFORCE_INSTANCE_URL", "SALESFORCE_USERNAME", "DYNO"):
            os.environ.pop(name, None)
        clear_caches()
        empty_database()
        get_redis().flushdb()
        app = create_app({"TESTING": True})
        build_world(app, "Team A", "rep@team-a.test", "dana@acme.test", "ALPHA")
        yield app, create_user(app, "api@team-a.test", "Team A")
    clear_caches()


# The document /api/v1/openapi.json serves, built the same way (test_api.py checks that
# the route serves it). Loaded at import: schemathesis' lazy fixture loader does not work
# with this pytest (it reads a removed Node._nodeid).
# A body over the size limit is refused with 413 (documented on every operation with a
# body) before anything reads it: a refusal like the others (found by the long run).
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


def served_document() -> dict[str, Any]:
    """The document an app built like the fixture's serves (it is generated from its routes).

    Building the app touches neither database nor Redis: settings that name them suffice.
    """
    with tempfile.TemporaryDirectory() as var:
        database = f"sqlite:///{Path(var) / 'unused.db'}"
        names = service_environment(database, "redis://127.0.0.1:6379/15", Path(var))
        with mock.patch.dict(os.environ, names):
            get_settings.cache_clear()
            app = create_app({"TESTING": True})
            with app.app_context():
                document = build_document()
        get_settings.cache_clear()
    return document


schema = schemathesis.openapi.from_dict(
    served_document(),
    config=SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
    ),
)


def _offline(case: Any) -> None:
    """Generated bodies may ask to log in to a mail server: never from a test."""
    if isinstance(case.body, dict) and "verify" in case.body:
        case.body["verify"] = False


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_and_never_fails_on_bad_input(case: Any, world: tuple[Flask, str]) -> None:
    app, api_token = world
    _offline(case)
    headers = {"Authorization": f"Bearer {api_token}"}
    if _drops_the_token(case):
        headers = {}  # the negative case is "no credentials": it must be refused as such
    case.call_and_validate(app=app, headers=headers, checks=CHECKS)


def _drops_the_token(case: Any) -> bool:
    """A negative case whose headers leave out the bearer token the schema requires."""
    meta = case.meta
    if meta is None or not meta.is_negative_at(ParameterLocation.HEADER):
        return False
    return not any(name.lower() == "authorization" for name in case.headers or {})
