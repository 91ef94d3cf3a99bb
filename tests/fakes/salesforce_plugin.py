"""Pytest fixtures for the fake Salesforce (``-p tests.fakes.salesforce_plugin``).

``fake_salesforce_server`` (session): one TLS server for the whole run.
``fake_salesforce`` (function): that server, reset to a fresh org for the test,
with ``REQUESTS_CA_BUNDLE`` pointing at its CA for this process (subprocesses
started by the test inherit it; ``fake_salesforce.ca_bundle`` is the path).
``salesforce_client`` (function): a real ``simple_salesforce.Salesforce`` bound
to the fake with the default access token.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simple_salesforce.api import Salesforce

from tests.fakes.salesforce import FakeSalesforce


@pytest.fixture(scope="session")
def fake_salesforce_server() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as fake:
        yield fake


@pytest.fixture
def fake_salesforce(
    fake_salesforce_server: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeSalesforce]:
    fake_salesforce_server.reset()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake_salesforce_server.ca_bundle)
    yield fake_salesforce_server
    fake_salesforce_server.faults.clear()


@pytest.fixture
def salesforce_client(fake_salesforce: FakeSalesforce) -> Salesforce:
    return Salesforce(
        instance_url=fake_salesforce.instance_url, session_id=fake_salesforce.access_token
    )
