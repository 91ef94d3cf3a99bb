"""The sObjects the fake knows, their fields, and their describe output.

Modelled: Contact (003), Lead (00Q), Task (00T), Account (001) and User (005,
read-only, for OwnerId), with the standard fields Sightline touches, their
types, lengths and create/update permissions as a standard org reports them;
Task's custom fields are switchable so a test can play an org where the
Sightline package is not installed (``ext_id_field=False``) or only partly.

Not modelled: record types, field-level security per profile, formula fields,
compound fields (Name, Address), relationship names, other sObjects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXT_ID_FIELD = "Sightline_Key__c"
# The engagement summary fields of salesforce/ (Number(18,0) counters, DateTimes).
COUNTER_FIELDS = (
    "Sightline_Opens__c",
    "Sightline_Clicks__c",
    "Sightline_Document_Views__c",
    "Sightline_First_Opened__c",
    "Sightline_Last_Opened__c",
    "Sightline_First_Clicked__c",
    "Sightline_Last_Clicked__c",
    "Sightline_First_Viewed__c",
    "Sightline_Last_Viewed__c",
)
TASK_STATUSES = ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred")
CLOSED_TASK_STATUSES = frozenset({"Completed"})


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    label: str
    length: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    external_id: bool = False
    id_lookup: bool = False
    unique: bool = False
    custom: bool = False
    reference_to: tuple[str, ...] = ()
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    required_on_create: bool = False

    @property
    def is_text(self) -> bool:
        return self.type in {"string", "textarea", "email", "phone", "url", "combobox", "picklist"}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "length": self.length,
            "createable": self.createable,
            "updateable": self.updateable,
            "nillable": self.nillable,
            "externalId": self.external_id,
            "idLookup": self.id_lookup,
            "unique": self.unique,
            "custom": self.custom,
            "filterable": True,
            "sortable": self.type != "textarea",
            "referenceTo": list(self.reference_to),
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
            "defaultedOnCreate": self.name in {"OwnerId", "Status", "Priority", "CreatedDate"},
        }


@dataclass(frozen=True)
class SObjectSpec:
    name: str
    key_prefix: str
    label: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)  # keyed by lower-case name
    createable: bool = True

    def field(self, name: str) -> FieldSpec | None:
        return self.fields.get(name.lower())

    def describe(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": self.createable,
            "updateable": self.createable,
            "deletable": self.createable,
            "queryable": True,
            "fields": [f.describe() for f in self.fields.values()],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def summary(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "keyPrefix": self.key_prefix,
            "createable": self.createable,
            "queryable": True,
            "urls": {"sobject": base, "describe": f"{base}/describe"},
        }


def _system_fields() -> list[FieldSpec]:
    return [
        FieldSpec(
            "Id",
            "id",
            "Record ID",
            18,
            createable=False,
            updateable=False,
            nillable=False,
            id_lookup=True,
        ),
        FieldSpec(
            "IsDeleted", "boolean", "Deleted", createable=False, updateable=False, nillable=False
        ),
        FieldSpec(
            "CreatedDate",
            "datetime",
            "Created Date",
            createable=False,
            updateable=False,
            nillable=False,
        ),
        FieldSpec(
            "CreatedById",
            "reference",
            "Created By ID",
            18,
            createable=False,
            updateable=False,
            reference_to=("User",),
        ),
        FieldSpec(
            "LastModifiedDate", "datetime", "Last Modified Date", createable=False, updateable=False
        ),
        FieldSpec(
            "SystemModstamp", "datetime", "System Modstamp", createable=False, updateable=False
        ),
        FieldSpec("OwnerId", "reference", "Owner ID", 18, nillable=False, reference_to=("User",)),
    ]


def _index(fields: list[FieldSpec]) -> dict[str, FieldSpec]:
    return {f.name.lower(): f for f in fields}


def build_schema(*, ext_id_field: bool, counter_fields: bool) -> dict[str, SObjectSpec]:
    """Every sObject the fake serves, keyed by lower-case name."""
    contact = SObjectSpec(
        "Contact",
        "003",
        "Contact",
        _index(
            [
                *_system_fields(),
                FieldSpec("FirstName", "string", "First Name", 40),
                FieldSpec(
                    "LastName", "string", "Last Name", 80, nillable=False, required_on_create=True
                ),
                FieldSpec("Email", "email", "Email", 80, id_lookup=True),
                FieldSpec("AccountId", "reference", "Account ID", 18, reference_to=("Account",)),
                FieldSpec("Title", "string", "Title", 128),
                FieldSpec("Phone", "phone", "Business Phone", 40),
                FieldSpec("MailingCity", "string", "Mailing City", 40),
                FieldSpec("MailingState", "string", "Mailing State/Province", 80),
                FieldSpec("MailingCountry", "string", "Mailing Country", 80),
            ]
        ),
    )
    lead = SObjectSpec(
        "Lead",
        "00Q",
        "Lead",
        _index(
            [
                *_system_fields(),
                FieldSpec("FirstName", "string", "First Name", 40),
                FieldSpec(
                    "LastName", "string", "Last Name", 80, nillable=False, required_on_create=True
                ),
                FieldSpec(
                    "Company", "string", "Company", 255, nillable=False, required_on_create=True
                ),
                FieldSpec("Email", "email", "Email", 80, id_lookup=True),
                FieldSpec("Phone", "phone", "Phone", 40),
                FieldSpec("City", "string", "City", 40),
                FieldSpec("State", "string", "State/Province", 80),
                FieldSpec("Country", "string", "Country", 80),
                FieldSpec(
                    "Status",
                    "picklist",
                    "Status",
                    255,
                    picklist=(
                        "Open - Not Contacted",
                        "Working - Contacted",
                        "Closed - Converted",
                        "Closed - Not Converted",
                    ),
                ),
                FieldSpec(
                    "IsConverted",
                    "boolean",
                    "Converted",
                    createable=False,
                    updateable=False,
                    nillable=False,
                ),
                FieldSpec(
                    "ConvertedContactId",
                    "reference",
                    "Converted Contact ID",
                    18,
                    createable=False,
                    updateable=False,
                    reference_to=("Contact",),
                ),
                FieldSpec(
                    "ConvertedAccountId",
                    "reference",
                    "Converted Account ID",
                    18,
                    createable=False,
                    updateable=False,
                    reference_to=("Account",),
                ),
                FieldSpec(
                    "ConvertedDate", "date", "Converted Date", createable=False, updateable=False
                ),
            ]
        ),
    )
    account = SObjectSpec(
        "Account",
        "001",
        "Account",
        _index(
            [
                *_system_fields(),
                FieldSpec(
                    "Name", "string", "Account Name", 255, nillable=False, required_on_create=True
                ),
            ]
        ),
    )
    user = SObjectSpec(
        "User",
        "005",
        "User",
        _index(
            [
                FieldSpec(
                    "Id", "id", "User ID", 18, createable=False, updateable=False, nillable=False
                ),
                FieldSpec("Username", "string", "Username", 80, createable=False, updateable=False),
                FieldSpec("Email", "email", "Email", 128, createable=False, updateable=False),
                FieldSpec("IsActive", "boolean", "Active", createable=False, updateable=False),
            ]
        ),
        createable=False,
    )
    task_fields = [
        *_system_fields(),
        FieldSpec("Subject", "combobox", "Subject", 255),
        FieldSpec("Description", "textarea", "Description", 32000),
        FieldSpec(
            "Status",
            "picklist",
            "Status",
            40,
            nillable=False,
            picklist=TASK_STATUSES,
            restricted=True,
        ),
        FieldSpec(
            "Priority",
            "picklist",
            "Priority",
            40,
            nillable=False,
            picklist=("High", "Normal", "Low"),
            restricted=True,
        ),
        FieldSpec("ActivityDate", "date", "Due Date Only"),
        FieldSpec("WhoId", "reference", "Name ID", 18, reference_to=("Contact", "Lead")),
        FieldSpec("WhatId", "reference", "Related To ID", 18, reference_to=("Account",)),
        FieldSpec("Type", "picklist", "Type", 40, picklist=("Call", "Email", "Meeting", "Other")),
        FieldSpec(
            "TaskSubtype",
            "picklist",
            "Task Subtype",
            40,
            updateable=False,
            picklist=("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"),
        ),
        FieldSpec(
            "IsClosed", "boolean", "Closed", createable=False, updateable=False, nillable=False
        ),
        FieldSpec(
            "CompletedDateTime",
            "datetime",
            "Completed Date Time",
            createable=False,
            updateable=False,
        ),
    ]
    if ext_id_field:
        task_fields.append(
            FieldSpec(
                EXT_ID_FIELD,
                "string",
                "Sightline Key",
                80,
                external_id=True,
                id_lookup=True,
                unique=True,
                custom=True,
            )
        )
    if counter_fields:
        task_fields += [
            FieldSpec(
                name,
                "double" if name.endswith(("Opens__c", "Clicks__c", "Views__c")) else "datetime",
                name.removesuffix("__c").replace("_", " "),
                custom=True,
            )
            for name in COUNTER_FIELDS
        ]
    task = SObjectSpec("Task", "00T", "Task", _index(task_fields))
    return {s.name.lower(): s for s in (contact, lead, account, user, task)}


def object_for_prefix(schema: dict[str, SObjectSpec], prefix: str) -> SObjectSpec | None:
    for spec in schema.values():
        if spec.key_prefix == prefix:
            return spec
    return None
