"""Pytest fixtures for the mailbox-provider fakes (Gmail, Microsoft Graph, EWS).

At configure time this process (and every subprocess it starts) is made to
trust the fakes' throwaway CA (`tests.fakes.httpfake.trust_provider_ca`), before
any other fixture copies the CA bundle setting.

``fake_gmail`` / ``fake_graph`` / ``fake_ews`` (function): the session's server,
reset, with the settings a deployment would set pointing at it (environment
variables, so worker subprocesses see them too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config import get_settings
from tests.fakes.httpfake import trust_provider_ca


def pytest_configure(config: pytest.Config) -> None:
    trust_provider_ca()


@pytest.fixture(scope="session")
def fake_gmail_server() -> Iterator[Any]:
    from tests.fakes.gmail import FakeGmail

    with FakeGmail() as fake:
        yield fake


@pytest.fixture
def fake_gmail(fake_gmail_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    fake_gmail_server.reset()
    for name, value in fake_gmail_server.environment().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield fake_gmail_server
    fake_gmail_server.store.faults.clear()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def fake_graph_server() -> Iterator[Any]:
    from tests.fakes.graph import FakeGraph

    with FakeGraph() as fake:
        yield fake


@pytest.fixture
def fake_graph(fake_graph_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    fake_graph_server.reset()
    for name, value in fake_graph_server.environment().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield fake_graph_server
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def fake_ews_server() -> Iterator[Any]:
    from tests.fakes.ews import FakeEws

    with FakeEws() as fake:
        yield fake


@pytest.fixture
def fake_ews(fake_ews_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    fake_ews_server.reset()
    monkeypatch.setenv("SIGHTLINE_EXCHANGE_STREAM_MINUTES", "1")
    get_settings.cache_clear()
    yield fake_ews_server
    fake_ews_server.close_streams()
    get_settings.cache_clear()
