"""The Salesforce package under salesforce/ declares exactly the fields Sightline writes.

The outbox writes `TASK_FIELDS` and the key field; the fake org models
`COUNTER_FIELDS`; the metadata is what an admin deploys. If one drifts from
the others, a real org would answer INVALID_FIELD where the fake said yes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from config.settings import SalesforceSettings
from tests.fakes.salesforce import COUNTER_FIELDS, EXT_ID_FIELD
from worker.salesforce.engagement import TASK_FIELDS

PACKAGE = Path(__file__).resolve().parents[2] / "salesforce" / "force-app" / "main" / "default"
NS = {"md": "http://soap.sforce.com/2006/04/metadata"}


def fields() -> dict[str, ET.Element]:
    found = {}
    for path in sorted((PACKAGE / "objects" / "Activity" / "fields").glob("*.field-meta.xml")):
        root = ET.parse(path).getroot()
        name = root.findtext("md:fullName", namespaces=NS)
        assert name and path.name == f"{name}.field-meta.xml"
        found[name] = root
    return found


def test_the_package_has_every_field_sightline_writes_and_no_other() -> None:
    declared = set(fields())
    written = {SalesforceSettings().task_key_field, *TASK_FIELDS.values()}
    assert declared == written == {EXT_ID_FIELD, *COUNTER_FIELDS}


def test_field_types_match_what_is_written() -> None:
    for name, root in fields().items():
        kind = root.findtext("md:type", namespaces=NS)
        if name == EXT_ID_FIELD:
            assert kind == "Text"
            assert root.findtext("md:externalId", namespaces=NS) == "true"
            assert root.findtext("md:unique", namespaces=NS) == "true"
            assert int(root.findtext("md:length", namespaces=NS) or 0) >= len("sl-" + "0" * 40)
        elif name.endswith(("Opens__c", "Clicks__c", "Views__c")):
            assert (kind, root.findtext("md:scale", namespaces=NS)) == ("Number", "0")
        else:
            assert kind == "DateTime", name


def test_the_permission_set_grants_edit_on_every_field() -> None:
    root = ET.parse(
        PACKAGE / "permissionsets" / "Sightline_Integration.permissionset-meta.xml"
    ).getroot()
    granted = {
        str(p.findtext("md:field", namespaces=NS))
        for p in root.findall("md:fieldPermissions", NS)
        if p.findtext("md:editable", namespaces=NS) == "true"
    }
    assert granted == {f"Task.{name}" for name in fields()}
