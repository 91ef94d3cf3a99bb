"""The Outlook add-in's manifest and its bearer, through the Flask app.

The manifest is parsed as XML and read the way Office reads it: the add-in's Id
stable for one install and different for another, every URL under
`PUBLIC_BASE_URL`, a read and a compose button each opening its pane, the
VersionOverrides 1.0/1.1 nesting, shared folders, Mailbox requirement sets, and
every `resid` defined; while `PUBLIC_BASE_URL` is not https, a sentence saying
so instead. The sign-in dialog issues an add-in token only after the
signed-in person's POST; the token speaks for that user on the operations that
accept it and nowhere else, and stops working when signed out, tampered with,
expired, or when its user leaves the team.
"""

from __future__ import annotations

import re
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import get_settings
from core.db import session_scope
from core.models import Team, User, utcnow
from tests.conftest import create_user
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from web.addons.outlook import tokens

pytestmark = pytest.mark.integration

NS = {
    "o": "http://schemas.microsoft.com/office/appforoffice/1.1",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    "bt": "http://schemas.microsoft.com/office/officeappbasictypes/1.0",
    "v0": "http://schemas.microsoft.com/office/mailappversionoverrides",
    "v1": "http://schemas.microsoft.com/office/mailappversionoverrides/1.1",
}
XSI_TYPE = f"{{{NS['xsi']}}}type"
TOKEN_IN_PAGE = re.compile(r'data-token="(slo_[^"]+)"')


def manifest(client: FlaskClient) -> ET.Element:
    answer = client.get("/addons/outlook/manifest.xml")
    assert answer.status_code == 200
    assert answer.mimetype == "application/xml"
    return ET.fromstring(answer.get_data())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # reads no table
def test_the_manifest_describes_this_install_as_office_reads_it(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = client.get("/addons/outlook/manifest.xml")  # the suite's http://localhost:5000
    assert refused.status_code == 409 and refused.mimetype == "text/plain"
    assert "https only" in refused.get_data(as_text=True)
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://sightline.acme.test")
    get_settings.cache_clear()
    base = "https://sightline.acme.test"
    root = manifest(client)
    assert root.tag == f"{{{NS['o']}}}OfficeApp" and root.get(XSI_TYPE) == "MailApp"
    # The basics in the schema's order (Office refuses a manifest whose order differs).
    order = [child.tag.split("}")[1] for child in root]
    assert order == [
        "Id", "Version", "ProviderName", "DefaultLocale", "DisplayName", "Description",
        "IconUrl", "HighResolutionIconUrl", "SupportUrl", "AppDomains", "Hosts",
        "Requirements", "FormSettings", "Permissions", "Rule", "DisableEntityHighlighting",
        "VersionOverrides",
    ]  # fmt: skip
    addin_id = root.findtext("o:Id", namespaces=NS)
    assert addin_id == str(uuid.UUID(addin_id))  # a GUID
    assert manifest(client).findtext("o:Id", namespaces=NS) == addin_id  # stable
    assert root.find("o:Hosts/o:Host", NS).get("Name") == "Mailbox"  # type: ignore[union-attr]
    assert root.find("o:Requirements/o:Sets/o:Set", NS).attrib == {  # type: ignore[union-attr]
        "Name": "Mailbox",
        "MinVersion": "1.1",
    }
    assert root.findtext("o:Permissions", namespaces=NS) == "ReadWriteItem"
    rules = root.findall("o:Rule/o:Rule", NS)
    assert {(r.get("ItemType"), r.get("FormType")) for r in rules} == {
        ("Message", "Read"),
        ("Message", "Edit"),
    }
    assert root.findtext("o:AppDomains/o:AppDomain", namespaces=NS) == base

    outer = root.find("v0:VersionOverrides", NS)
    assert outer is not None and outer.get(XSI_TYPE) == "VersionOverridesV1_0"
    inner = outer.find("v1:VersionOverrides", NS)
    assert inner is not None and inner.get(XSI_TYPE) == "VersionOverridesV1_1"
    assert list(outer)[-1] is inner  # the 1.1 overrides nest last in the 1.0 ones
    for overrides, ns in ((outer, "v0"), (inner, "v1")):
        sets = overrides.find(f"{ns}:Requirements/bt:Sets", NS)
        assert sets is not None and sets.get("DefaultMinVersion") == "1.3"
        host = overrides.find(f"{ns}:Hosts/{ns}:Host", NS)
        assert host is not None and host.get(XSI_TYPE) == "MailHost"
        form = host.find(f"{ns}:DesktopFormFactor", NS)
        assert form is not None
        points = {p.get(XSI_TYPE): p for p in form.findall(f"{ns}:ExtensionPoint", NS)}
        assert set(points) == {"MessageReadCommandSurface", "MessageComposeCommandSurface"}
        urls = {
            u.get("id"): u.get("DefaultValue") for u in overrides.iterfind(".//bt:Urls/bt:Url", NS)
        }
        panes = (("MessageReadCommandSurface", "read"), ("MessageComposeCommandSurface", "compose"))
        for point, pane in panes:
            action = points[point].find(f".//{ns}:Control/{ns}:Action", NS)
            assert action is not None and action.get(XSI_TYPE) == "ShowTaskpane"
            location = action.find(f"{ns}:SourceLocation", NS)
            assert location is not None
            assert urls[location.get("resid")] == f"{base}/addons/outlook/{pane}"
        # Every resid used is defined, as Office checks on upload.
        defined = {e.get("id") for e in overrides.find(f"{ns}:Resources", NS).iter()}  # type: ignore[union-attr]
        used = {e.get("resid") for e in overrides.iter() if e.get("resid")}
        assert used <= defined, used - defined
    shared = "v1:Hosts/v1:Host/v1:DesktopFormFactor/v1:SupportsSharedFolders"
    assert inner.findtext(shared, namespaces=NS) == "true"
    values = [e.get("DefaultValue") or "" for e in root.iter()]
    every_url = [value for value in values if value.startswith("http")]
    assert len(every_url) > 10 and all(u.startswith(base + "/") for u in every_url)
    for icon in {u for u in every_url if u.endswith(".png")}:
        assert client.get(icon.removeprefix(base)).status_code == 200, icon

    # Another install (another public address) is another add-in.
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://sightline.example.org")
    get_settings.cache_clear()
    other = manifest(client)
    assert other.findtext("o:Id", namespaces=NS) not in (None, addin_id)
    assert other.find("o:SupportUrl", NS).get("DefaultValue") == "https://sightline.example.org/"  # type: ignore[union-attr]


def dialog_token(app: Flask, email: str) -> str:
    """Sign in as a person in the dialog would, press Continue, and read the token it hands on."""
    client = app.test_client()
    state = "s" * 24
    started = client.get(f"/addons/outlook/signin?state={state}")
    assert started.status_code == 302 and "/signin?next=" in started.headers["Location"]
    assert sign_in(client, email).status_code == 302
    confirm = client.get(f"/addons/outlook/signin?state={state}")
    assert confirm.status_code == 200
    assert "no-store" in confirm.headers["Cache-Control"]
    assert "frame-ancestors 'none'" in confirm.headers["Content-Security-Policy"]
    assert not TOKEN_IN_PAGE.search(confirm.get_data(as_text=True))  # only the POST issues one
    page = client.post(
        "/addons/outlook/signin",
        data={"state": state, "csrf_token": csrf_from(confirm.get_data(as_text=True))},
    )
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'data-state="{state}"' in html
    found = TOKEN_IN_PAGE.search(html)
    assert found is not None
    return found.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_dialog_issues_a_token_that_works_where_allowed_until_signed_out(
    app: Flask, client: FlaskClient
) -> None:
    create_user(app, "rep@seller.test", "Sellers", "--password", PASSWORD)
    # Without the pane's nonce, or without the person's POST, no token.
    signed = app.test_client()
    sign_in(signed, "rep@seller.test")
    assert signed.get("/addons/outlook/signin").status_code == 400
    no_csrf = signed.post("/addons/outlook/signin", data={"state": "s" * 24})
    assert no_csrf.status_code == 400 and not TOKEN_IN_PAGE.search(no_csrf.get_data(as_text=True))

    token = dialog_token(app, "rep@seller.test")
    session = client.get("/api/v1/outlook/session", headers=bearer(token))
    assert session.status_code == 200
    body = session.get_json()
    assert body["email"] == "rep@seller.test" and body["team"] == "Sellers"
    left = time.mktime(time.strptime(body["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.gmtime()
    )
    assert 11 * 3600 < left <= 12 * 3600

    # Not an API token: the rest of the API refuses it.
    refused = client.get("/api/v1/mailboxes", headers=bearer(token))
    assert refused.status_code == 401

    # A changed character, and a token of another purpose's signature, are refused.
    assert (
        client.get("/api/v1/outlook/session", headers=bearer(token[:-2] + "xx")).status_code == 401
    )
    assert (
        client.get("/api/v1/outlook/session", headers=bearer("slo_" + "a" * 40)).status_code == 401
    )

    assert client.delete("/api/v1/outlook/session", headers=bearer(token)).status_code == 204
    gone = client.get("/api/v1/outlook/session", headers=bearer(token))
    assert gone.status_code == 401 and gone.get_json()["error"]["code"] == "unauthorized"
    # Another sign-in (another device) is not signed out with it.
    again = dialog_token(app, "rep@seller.test")
    assert client.get("/api/v1/outlook/session", headers=bearer(again)).status_code == 200


def test_a_token_ends_with_its_age_and_when_its_user_is_removed_or_leaves_the_team(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(app, "rep@seller.test", "Sellers", "--password", PASSWORD)
    token = dialog_token(app, "rep@seller.test")
    issued = time.time()
    monkeypatch.setattr(time, "time", lambda: issued + tokens.LIFETIME_SECONDS + 5)
    assert client.get("/api/v1/outlook/session", headers=bearer(token)).status_code == 401
    monkeypatch.setattr(time, "time", lambda: issued + 60)
    assert client.get("/api/v1/outlook/session", headers=bearer(token)).status_code == 200

    with session_scope() as session:
        user = session.query(User).filter_by(email="rep@seller.test").one()
        user.removed_at = utcnow()
    assert client.get("/api/v1/outlook/session", headers=bearer(token)).status_code == 401
    with session_scope() as session:
        user = session.query(User).filter_by(email="rep@seller.test").one()
        user.removed_at = None
    assert client.get("/api/v1/outlook/session", headers=bearer(token)).status_code == 200
    with session_scope() as session:
        user = session.query(User).filter_by(email="rep@seller.test").one()
        other = Team(name="Elsewhere")
        session.add(other)
        session.flush()
        user.team_id = other.id
    assert client.get("/api/v1/outlook/session", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # reads no table
def test_the_panes_may_be_framed_by_outlook_only_and_other_pages_by_nobody(
    client: FlaskClient,
) -> None:
    for pane in ("compose", "read", "functions"):
        answer = client.get(f"/addons/outlook/{pane}")
        assert answer.status_code == 200
        policy = answer.headers["Content-Security-Policy"]
        ancestors = policy.split("frame-ancestors")[1].split(";")[0].split()
        assert "https://outlook.office.com" in ancestors and "*" not in ancestors
        assert "X-Frame-Options" not in answer.headers
        assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        html: Any = answer.get_data(as_text=True)
        assert "appsforoffice.microsoft.com/lib/1/hosted/office.js" in html
        assert html.index("office.js") < html.index("addons/office-adapter.js")
    assert client.get("/signin").headers["X-Frame-Options"] == "DENY"
