"""Converting an upload reaches no network: LibreOffice never fetches what a document links to.

A listener on 127.0.0.1 stands in for anything the worker can reach (a cloud
metadata address, an internal service). Real Office files (ODT, DOCX, PPTX and
DOC made by LibreOffice, then given the references Word, PowerPoint and
LibreOffice write: see tests/fixtures/documents/linked.py) point every way a
document can at paths on it. On the code before this protection, converting
them made LibreOffice fetch a linked image, OLE object, template, slide
background and more from the listener. They go through the API and the real
`documents` job:

- with network isolation off, as on a Heroku dyno: LibreOffice's own settings
  in its profile must be enough — the listener hears nothing;
- with the default (``auto``), on this machine LibreOffice runs in a network
  namespace: a child started that way cannot reach the listener at all;
- with ``required`` on a machine where no namespace can be made, conversion is
  refused with a sentence instead of running unprotected.

The profile's key names are checked against the installed LibreOffice's own
configuration schema, so a renamed key cannot silently stop protecting.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import get_settings
from tests.conftest import create_user
from tests.fixtures.documents import linked
from tests.services.process import in_ci
from worker.documents import isolation
from worker.documents.convert import NETWORK_PROVIDERS, PROFILE
from worker.documents.jobs import process_document_job

pytestmark = pytest.mark.integration
postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
OOR = "{http://openoffice.org/2001/registry}"


class Listener:
    """A TCP port on 127.0.0.1 that records the first line of whatever connects."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        for port in random.sample(range(20000, 60000), 50):  # five digits, like the fixtures'
            try:
                self.socket.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        self.port = self.socket.getsockname()[1]
        self.heard: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.socket.listen(64)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    first = connection.recv(4096).split(b"\r\n", 1)[0]
                    connection.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    first = b"(connected, sent nothing)"
                self.heard.append(first.decode("utf-8", "replace") or "(empty)")

    def close(self) -> None:
        self.socket.close()


@pytest.fixture(scope="module")
def listener_and_files() -> Iterator[tuple[Listener, dict[str, bytes]]]:
    listener = Listener()
    files = {kind: linked.load(kind, listener.base_url) for kind in linked.BUILDERS}
    listener.start()
    yield listener, files
    listener.close()


def upload_and_process(client: FlaskClient, token: str, files: dict[str, bytes]) -> list[Any]:
    """Upload each file through the API, run the real job, return the API's view of each."""
    headers = {"Authorization": f"Bearer {token}"}
    bodies = []
    for kind, data in files.items():
        response = client.post(
            "/api/v1/documents",
            data={"file": (io.BytesIO(data), f"linked.{kind}")},
            headers=headers,
            content_type="multipart/form-data",
        )
        assert response.status_code == 202, response.get_json()
        document_id = response.get_json()["id"]
        process_document_job(document_id)
        bodies.append(client.get(f"/api/v1/documents/{document_id}", headers=headers).get_json())
    return bodies


@pytest.fixture
def token(app: Flask) -> str:
    return create_user(app, "rep@links.test", "Links", "--plan", "team")


def settle(listener: Listener) -> list[str]:
    time.sleep(0.3)  # a connection accepted just now is recorded by the listener's thread
    return list(listener.heard)


def no_namespaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Heroku dyno does: `unshare` and `bwrap` are there, and the kernel says no."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for name in ("unshare", "bwrap"):
        refusing = bare / name
        refusing.write_text(
            f'#!/bin/sh\necho "{name}: unshare failed: Operation not permitted" >&2\nexit 1\n'
        )
        refusing.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bare}:{os.environ['PATH']}")
    isolation.detect.cache_clear()


def use_isolation(monkeypatch: pytest.MonkeyPatch, mode: str, files: str = "auto") -> None:
    monkeypatch.setenv("SIGHTLINE_DOCUMENT_NETWORK_ISOLATION", mode)
    monkeypatch.setenv("SIGHTLINE_DOCUMENT_FILE_ISOLATION", files)
    get_settings.cache_clear()
    isolation.detect.cache_clear()


@postgres_only
def test_libreoffices_own_settings_alone_fetch_nothing_a_document_links_to(
    client: FlaskClient,
    token: str,
    listener_and_files: tuple[Listener, dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener, files = listener_and_files
    use_isolation(monkeypatch, "off", files="off")  # what a Heroku dyno gets: no namespaces
    listener.heard.clear()
    bodies = upload_and_process(client, token, files)
    assert settle(listener) == [], "LibreOffice fetched what the documents link to"
    for body in bodies:
        assert body["status"] == "ready", body
        assert "sample" in body["pages"][0]["text"], body["pages"][0]["text"]


def test_a_child_in_the_namespace_cannot_reach_loopback(
    listener_and_files: tuple[Listener, dict[str, bytes]],
) -> None:
    listener, _files = listener_and_files
    isolation.detect.cache_clear()
    found = isolation.detect()
    if not found.network:
        message = f"no network namespace can be made here: {found.network_reason}"
        if in_ci():
            pytest.fail(message + " (CI runs as root on Debian 12: it must work there)")
        pytest.skip(message)
    probe = [
        sys.executable,
        "-c",
        "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 3)"
        ".sendall(b'probe')",
        str(listener.port),
    ]
    listener.heard.clear()
    outside = subprocess.run(
        isolation.without_network(probe, "off"), capture_output=True, check=False
    )
    assert outside.returncode == 0, outside.stderr  # the probe itself can connect...
    assert settle(listener) == ["probe"]
    listener.heard.clear()
    inside = subprocess.run(
        isolation.without_network(probe, "auto"), capture_output=True, check=False
    )
    assert inside.returncode != 0  # ...and cannot from inside the namespace
    assert b"Network is unreachable" in inside.stderr, inside.stderr
    assert settle(listener) == []


@postgres_only
def test_by_default_conversion_runs_without_network_and_still_succeeds(
    client: FlaskClient,
    token: str,
    listener_and_files: tuple[Listener, dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener, files = listener_and_files
    use_isolation(monkeypatch, "auto")
    listener.heard.clear()
    with caplog.at_level("INFO", logger="worker.documents.isolation"):
        bodies = upload_and_process(client, token, {"pptx": files["pptx"]})
    assert settle(listener) == []
    assert [body["status"] for body in bodies] == ["ready"]
    said = [r.getMessage() for r in caplog.records if "document_isolation" in r.getMessage()]
    assert len(said) == 1, said  # found out and logged once per process, not per job
    if isolation.detect().network:
        assert "network=namespace" in said[0]


@postgres_only
def test_required_isolation_refuses_to_convert_where_none_can_be_made(
    client: FlaskClient,
    token: str,
    listener_and_files: tuple[Listener, dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    listener, files = listener_and_files
    no_namespaces(tmp_path, monkeypatch)
    use_isolation(monkeypatch, "required")
    listener.heard.clear()
    [refused] = upload_and_process(client, token, {"docx": files["docx"]})
    assert refused["status"] == "failed"
    assert "only without network access" in refused["error"], refused["error"]
    assert "NETWORK_ISOLATION=required" in refused["error"]

    use_isolation(monkeypatch, "auto")  # the default converts there, the settings protecting it
    [converted] = upload_and_process(client, token, {"docx": files["docx"]})
    assert converted["status"] == "ready", converted
    assert settle(listener) == []


def installed_registry() -> list[ET.Element]:
    soffice = shutil.which("soffice")
    assert soffice is not None, "LibreOffice is missing: run scripts/test-prereqs.sh office"
    registry = Path(os.path.realpath(soffice)).parent.parent / "share" / "registry"
    roots = [ET.parse(path).getroot() for path in sorted(registry.glob("*.xcd"))]
    assert roots, f"no configuration found in {registry}"
    return roots


def schema_properties(roots: list[ET.Element]) -> set[str]:
    """Every property path the installed LibreOffice's configuration schema defines."""
    found: set[str] = set()

    def walk(element: ET.Element, path: str) -> None:
        for child in element:
            tag = child.tag.rsplit("}", 1)[-1]
            name = child.get(f"{OOR}name")
            if tag == "templates":
                continue
            if name is None:
                walk(child, path)
                continue
            if tag == "prop":
                found.add(f"{path}/{name}")
            walk(child, f"{path}/{name}")

    for root in roots:
        for schema in root.iter(f"{OOR}component-schema"):
            walk(schema, f"/{schema.get(f'{OOR}package')}.{schema.get(f'{OOR}name')}")
    return found


def test_the_profile_uses_keys_the_installed_libreoffice_defines() -> None:
    roots = installed_registry()
    profile = ET.fromstring(PROFILE)
    known = schema_properties(roots)
    for item in profile:
        for prop in item.findall("prop"):
            path = f"{item.get(f'{OOR}path')}/{prop.get(f'{OOR}name')}"
            assert path in known, f"{path} is not a setting of the installed LibreOffice"
    # Every content provider that reaches the network is one the profile removes.
    network_services = (
        "com.sun.star.ucb.WebDAVContentProvider",
        "com.sun.star.ucb.FTPContentProvider",
        "com.sun.star.ucb.CmisContentProvider",
    )
    reaching = set()
    for root in roots:
        for node in root.iter("node"):
            service = node.find("prop[@{http://openoffice.org/2001/registry}name='ServiceName']")
            if service is not None and (service.findtext("value") or "") in network_services:
                reaching.add(node.get(f"{OOR}name"))
    assert reaching, "found no network content providers: the registry format changed"
    assert reaching <= set(NETWORK_PROVIDERS), reaching - set(NETWORK_PROVIDERS)
