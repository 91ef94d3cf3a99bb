"""Pytest fixtures for the fake Salesforce (``-p tests.fakes.salesforce_plugin``).

``fake_salesforce_server`` (session): one TLS server for the whole run.
``fake_salesforce`` (function): that server, reset to a fresh org for the test.
For the test process it points ``REQUESTS_CA_BUNDLE`` at a bundle holding the
fake's CA *and* the bundle configured before (this machine sets one globally,
so other TLS servers keep working); subprocesses the test starts inherit it.
``fake_salesforce.ca_bundle`` is the fake's CA alone.
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


@pytest.fixture(scope="session")
def fake_salesforce_ca_bundle(fake_salesforce_server: FakeSalesforce) -> str:
    """The fake's CA plus the bundle the environment had: a REQUESTS_CA_BUNDLE value."""
    return fake_salesforce_server.combined_ca_bundle()


@pytest.fixture
def fake_salesforce(
    fake_salesforce_server: FakeSalesforce,
    fake_salesforce_ca_bundle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FakeSalesforce]:
    fake_salesforce_server.reset()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake_salesforce_ca_bundle)
    yield fake_salesforce_server
    fake_salesforce_server.faults.clear()


@pytest.fixture
def salesforce_client(fake_salesforce: FakeSalesforce) -> Salesforce:
    return Salesforce(
        instance_url=fake_salesforce.instance_url, session_id=fake_salesforce.access_token
    )
