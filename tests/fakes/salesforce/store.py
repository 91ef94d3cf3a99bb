"""The org's data: records, the daily API allowance, and Salesforce's save rules.

``Org`` is the single owner of mutable org state; every public method takes its
lock, so the threaded server and the test thread can both call it. Writes run
the checks Salesforce runs before saving a record, and raise the error it would
(``RecordError`` for a record, ``ApiError`` when the JSON itself cannot be read).

Modelled save rules (facts: Salesforce REST API and SOAP StatusCode reference;
shared/FIELD-NOTES.md): unknown field → INVALID_FIELD ("No such column ... on
sobject of type Task"); read-only field, or TaskSubtype on update →
INVALID_FIELD_FOR_INSERT_UPDATE; text over its length → STRING_TOO_LONG; a bad
value for a restricted picklist → INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST; a
reference that is not an id → MALFORMED_ID, an id of the wrong object →
FIELD_INTEGRITY_EXCEPTION, a missing record → INVALID_CROSS_REFERENCE_KEY, a
deleted one → ENTITY_IS_DELETED, a converted Lead → CANNOT_UPDATE_CONVERTED_LEAD;
a second record with the same unique external id → DUPLICATE_VALUE (``fields``
empty, as orgs answer it); a missing
required field → REQUIRED_FIELD_MISSING; a configured validation rule (field
contains a text) → FIELD_CUSTOM_VALIDATION_EXCEPTION. Closing a Task sets IsClosed and
CompletedDateTime, as the platform does.

Not modelled: triggers, validation rules, duplicate rules, sharing, the Recycle
Bin's undelete, field history, currency and multi-currency, time zones of users.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from .errors import ApiError, RecordError, json_parser_error, make_id, normalize_id
from .schema import (
    CLOSED_TASK_STATUSES,
    FieldSpec,
    SObjectSpec,
    build_schema,
    object_for_prefix,
)

Record = dict[str, Any]
DEFAULT_USERNAME = "sightline@example.com"


@dataclass(frozen=True)
class OrgConfig:
    """What differs between the orgs a test wants to play."""

    api_max: int = 15000
    ext_id_field: bool = True
    counter_fields: bool = True
    rotate_refresh_tokens: bool = False
    session_ttl: float | None = None  # seconds an access token lives; None: until expired
    query_batch_size: int = 2000
    max_uri_bytes: int = 16384
    # The statusCode for one external id sent twice in one upsert call. Public client
    # code handles it as DUPLICATE_VALUE "Duplicate external id specified: <key>", while
    # the SOAP StatusCode list documents DUPLICATE_EXTERNAL_ID as "matches more than one
    # record"; unconfirmed against a live org, so a test can play either.
    duplicate_key_code: str = "DUPLICATE_VALUE"
    # Validation rules, as an admin writes them: (sObject, field, text). A record
    # saved with `text` in `field` fails FIELD_CUSTOM_VALIDATION_EXCEPTION.
    validation_rules: tuple[tuple[str, str, str], ...] = ()


def format_datetime(value: datetime) -> str:
    """Salesforce's JSON form: ``2024-05-01T10:00:00.000+0000``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("+0000", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def json_value(spec: FieldSpec, value: Any) -> Any:
    """A stored value as Salesforce writes it in JSON."""
    if value is None:
        return None
    if spec.type == "datetime":
        return format_datetime(value)
    if spec.type == "date":
        return value.isoformat()
    return value


class Org:
    """One Salesforce org: schema, records, users and the API allowance."""

    def __init__(self, config: OrgConfig | None = None) -> None:
        self.lock = threading.RLock()
        self._clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.reset(config or OrgConfig())

    # -- lifecycle and configuration -------------------------------------------------

    def reset(self, config: OrgConfig | None = None) -> None:
        with self.lock:
            self._clock = lambda: datetime.now(UTC)
            self.config = config or OrgConfig()
            self.schema = build_schema(
                ext_id_field=self.config.ext_id_field, counter_fields=self.config.counter_fields
            )
            self.records: dict[str, dict[str, Record]] = {s.name: {} for s in self.schema.values()}
            self._serials: dict[str, int] = {}
            self.api_used = 0
            self.org_id = make_id("00D", 1)
            self.user_id = self._new_record(
                "User",
                {
                    "Username": DEFAULT_USERNAME,
                    "Email": DEFAULT_USERNAME,
                    "IsActive": True,
                },
            )

    def configure(self, **changes: Any) -> OrgConfig:
        """Change the org's configuration, keeping its records (schema follows)."""
        with self.lock:
            self.config = replace(self.config, **changes)
            self.schema = build_schema(
                ext_id_field=self.config.ext_id_field, counter_fields=self.config.counter_fields
            )
            return self.config

    def set_clock(self, clock: Callable[[], datetime] | None) -> None:
        """Make CreatedDate & co. deterministic; None returns to the wall clock."""
        with self.lock:
            self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self._clock()

    # -- the daily API allowance -----------------------------------------------------

    def charge_api_call(self) -> bool:
        """Count one API request; False if the daily allowance is already used up."""
        with self.lock:
            if self.api_used >= self.config.api_max:
                return False
            self.api_used += 1
            return True

    def limit_info(self) -> str:
        with self.lock:
            return f"api-usage={self.api_used}/{self.config.api_max}"

    def set_api_usage(self, used: int, maximum: int | None = None) -> None:
        with self.lock:
            self.api_used = used
            if maximum is not None:
                self.config = replace(self.config, api_max=maximum)

    # -- schema lookups --------------------------------------------------------------

    def sobject(self, name: str) -> SObjectSpec | None:
        return self.schema.get(name.lower())

    def type_of(self, record_id: str) -> SObjectSpec | None:
        return object_for_prefix(self.schema, record_id[:3])

    # -- transactions (allOrNone) ----------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Callable[[], None]]:
        """Yield a ``rollback()`` that puts records back as they were on entry."""
        with self.lock:
            saved_records = copy.deepcopy(self.records)
            saved_serials = dict(self._serials)

            def rollback() -> None:
                self.records = saved_records
                self._serials = saved_serials

            yield rollback

    # -- reads -----------------------------------------------------------------------

    def get(self, record_id: str) -> Record | None:
        """The stored record (deleted ones too), or None."""
        full = normalize_id(record_id)
        spec = self.type_of(full) if full else None
        if not full or not spec:
            return None
        with self.lock:
            return self.records[spec.name].get(full)

    def rows(self, sobject: str, *, include_deleted: bool = False) -> list[Record]:
        with self.lock:
            rows = list(self.records[self.schema[sobject.lower()].name].values())
        return [copy.copy(r) for r in rows if include_deleted or not r["IsDeleted"]]

    def as_json(self, sobject: str, record: Record, fields: list[str] | None = None) -> Record:
        spec = self.schema[sobject.lower()]
        names = fields or [f.name for f in spec.fields.values()]
        out: Record = {}
        for name in names:
            field_spec = spec.field(name)
            if field_spec:
                out[field_spec.name] = json_value(field_spec, record.get(field_spec.name))
        return out

    # -- seeding (tests' view; no API call is charged) -------------------------------

    def add_contact(
        self,
        email: str,
        *,
        first_name: str | None = None,
        last_name: str = "Prospect",
        account_id: str | None = None,
        **fields: Any,
    ) -> str:
        """A Contact; `fields` sets others by API name (MailingCountry="Germany", Phone=...)."""
        return self._new_record(
            "Contact",
            {
                "Email": email,
                "FirstName": first_name,
                "LastName": last_name,
                "AccountId": account_id,
                **fields,
            },
        )

    def add_lead(
        self,
        email: str,
        *,
        converted_to: str | None = None,
        first_name: str | None = None,
        last_name: str = "Prospect",
        company: str = "Prospect Co",
        **fields: Any,
    ) -> str:
        values: Record = {
            "Email": email,
            "FirstName": first_name,
            "LastName": last_name,
            "Company": company,
            "Status": "Open - Not Contacted",
            "IsConverted": False,
            **fields,
        }
        if converted_to is not None:
            contact_id = normalize_id(converted_to)
            if not contact_id or not contact_id.startswith("003"):
                raise ValueError(f"converted_to must be a Contact id, got {converted_to!r}")
            values.update(
                IsConverted=True,
                ConvertedContactId=contact_id,
                Status="Closed - Converted",
                ConvertedDate=self.now().date(),
            )
        return self._new_record("Lead", values)

    def add_account(self, name: str) -> str:
        return self._new_record("Account", {"Name": name})

    def delete(self, record_id: str) -> None:
        """Delete a record; later references to it get ENTITY_IS_DELETED."""
        with self.lock:
            record = self.get(record_id)
            if record is None:
                raise KeyError(record_id)
            self._mark_deleted(record)

    def tasks(self, *, include_deleted: bool = False) -> list[Record]:
        return [self.as_json("Task", r) for r in self.rows("Task", include_deleted=include_deleted)]

    # -- writes through the API ------------------------------------------------------

    def check_payload(self, spec: SObjectSpec, values: Record) -> Record:
        """Read a JSON record as Salesforce deserialises it: field names and JSON types.

        Raises ApiError (the whole request fails) for an unknown field or a value
        that cannot be read as the field's type.
        """
        coerced: Record = {}
        for name, raw in values.items():
            if name == "attributes":
                continue
            field_spec = spec.field(name)
            if field_spec is None:
                raise ApiError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {spec.name}"
                )
            coerced[field_spec.name] = _coerce(field_spec, raw)
        return coerced

    def insert(self, sobject: str, values: Record) -> str:
        spec = self._writable_object(sobject)
        with self.lock:
            coerced = self.check_payload(spec, values)
            if "Id" in coerced:
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"]
                )
            self._validate(spec, coerced, existing=None)
            return self._new_record(spec.name, coerced)

    def update(self, sobject: str, record_id: str, values: Record) -> None:
        spec = self._writable_object(sobject)
        with self.lock:
            coerced = self.check_payload(spec, values)
            coerced.pop("Id", None)
            record = self._existing(spec, record_id)
            self._validate(spec, coerced, existing=record)
            self._apply(spec, record, coerced)

    def upsert(self, sobject: str, ext_field: str, key: Any, values: Record) -> tuple[str, bool]:
        """Create or update by external id; returns (id, created)."""
        spec = self._writable_object(sobject)
        with self.lock:
            coerced = self.check_payload(spec, values)
            field_name = spec.fields[ext_field.lower()].name
            coerced.pop(field_name, None)
            match = self.find_by_external_id(spec, field_name, key)
            if match is None:
                coerced[field_name] = _coerce(spec.fields[ext_field.lower()], key)
                self._validate(spec, coerced, existing=None)
                return self._new_record(spec.name, coerced), True
            self._validate(spec, coerced, existing=match)
            self._apply(spec, match, coerced)
            return match["Id"], False

    def delete_via_api(self, record_id: str) -> None:
        with self.lock:
            record = self.get(record_id)
            if record is None:
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
            if record["IsDeleted"]:
                raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
            self._mark_deleted(record)

    def find_by_external_id(self, spec: SObjectSpec, field_name: str, key: Any) -> Record | None:
        wanted = str(key).lower()
        with self.lock:
            for record in self.records[spec.name].values():
                value = record.get(field_name)
                if not record["IsDeleted"] and value is not None and str(value).lower() == wanted:
                    return record
        return None

    # -- internals -------------------------------------------------------------------

    def _writable_object(self, sobject: str) -> SObjectSpec:
        spec = self.sobject(sobject)
        if spec is None or not spec.createable:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return spec

    def _existing(self, spec: SObjectSpec, record_id: str) -> Record:
        full = normalize_id(record_id)
        if full is None:
            raise RecordError("MALFORMED_ID", f"malformed id {record_id}", ["Id"])
        record = self.records[spec.name].get(full)
        if record is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        if record["IsDeleted"]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _new_record(self, sobject: str, values: Record) -> str:
        spec = self.schema[sobject.lower()]
        with self.lock:
            serial = self._serials.get(spec.key_prefix, 0) + 1
            self._serials[spec.key_prefix] = serial
            record_id = make_id(spec.key_prefix, serial)
            now = self.now()
            record: Record = {f.name: None for f in spec.fields.values()}
            record.update(
                Id=record_id,
                IsDeleted=False,
                CreatedDate=now,
                LastModifiedDate=now,
                SystemModstamp=now,
            )
            if "ownerid" in spec.fields:
                record["OwnerId"] = getattr(self, "user_id", None)
                record["CreatedById"] = getattr(self, "user_id", None)
            if spec.name == "Task":
                record.update(
                    Status="Not Started", Priority="Normal", TaskSubtype="Task", IsClosed=False
                )
            if spec.name == "Lead":
                record["IsConverted"] = False
            self._apply(spec, record, values, touch=False)
            self.records[spec.name][record_id] = record
            return record_id

    def _apply(self, spec: SObjectSpec, record: Record, values: Record, touch: bool = True) -> None:
        was_closed = bool(record.get("IsClosed"))
        record.update(values)
        if spec.name == "Task":
            record["IsClosed"] = record.get("Status") in CLOSED_TASK_STATUSES
            if record["IsClosed"] and not was_closed:
                record["CompletedDateTime"] = self.now()
        if touch:
            record["LastModifiedDate"] = record["SystemModstamp"] = self.now()

    def _mark_deleted(self, record: Record) -> None:
        record["IsDeleted"] = True
        record["SystemModstamp"] = self.now()

    def _validate(self, spec: SObjectSpec, values: Record, existing: Record | None) -> None:
        creating = existing is None
        locked = [
            name
            for name in values
            if not (
                spec.fields[name.lower()].createable
                if creating
                else spec.fields[name.lower()].updateable
            )
        ]
        if locked:
            raise RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(locked)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                locked,
            )
        merged = dict(existing or {})
        merged.update(values)
        missing = [
            f.name
            for f in spec.fields.values()
            if (f.required_on_create or not f.nillable)
            and f.createable
            and merged.get(f.name) in (None, "")
            and f.name not in {"OwnerId", "Status", "Priority"}
        ]
        if missing:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        for name, value in values.items():
            self._validate_value(spec, spec.fields[name.lower()], value, existing)
        self._run_validation_rules(spec, merged)

    def _run_validation_rules(self, spec: SObjectSpec, merged: Record) -> None:
        for sobject, field_name, text in self.config.validation_rules:
            field_spec = spec.field(field_name)
            if sobject.lower() != spec.name.lower() or field_spec is None:
                continue
            if text.lower() in str(merged.get(field_spec.name) or "").lower():
                raise RecordError(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    f"{field_spec.label} may not contain '{text}' (validation rule)",
                    [],
                )

    def _validate_value(
        self, spec: SObjectSpec, field_spec: FieldSpec, value: Any, existing: Record | None
    ) -> None:
        if value is None:
            if not field_spec.nillable:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{field_spec.name}]",
                    [field_spec.name],
                )
            return
        if field_spec.is_text and field_spec.length and len(value) > field_spec.length:
            shown = value if len(value) <= 80 else value[:77] + "..."
            raise RecordError(
                "STRING_TOO_LONG",
                f"{field_spec.label}: data value too large: {shown} "
                f"(max length={field_spec.length})",
                [field_spec.name],
            )
        if field_spec.restricted and value not in field_spec.picklist:
            raise RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{field_spec.label}: bad value for restricted picklist field: {value}",
                [field_spec.name],
            )
        if field_spec.type == "reference":
            self._validate_reference(field_spec, value)
        if field_spec.unique:
            match = self.find_by_external_id(spec, field_spec.name, value)
            if match is not None and (existing is None or match["Id"] != existing["Id"]):
                raise RecordError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {field_spec.name} duplicates value on record "
                    f"with id: {match['Id']}",
                    [],
                )

    def _validate_reference(self, field_spec: FieldSpec, value: str) -> None:
        full = normalize_id(value)
        if full is None:
            raise RecordError(
                "MALFORMED_ID",
                f"{field_spec.label}: id value of incorrect type: {value}",
                [field_spec.name],
            )
        target = self.type_of(full)
        if target is not None and target.name not in field_spec.reference_to:
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"{field_spec.label}: id value of incorrect type: {value}",
                [field_spec.name],
            )
        record = self.records[target.name].get(full) if target else None
        if record is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        if record["IsDeleted"]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
        if target is not None and target.name == "Lead" and record.get("IsConverted"):
            raise RecordError("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead")


def _coerce(field_spec: FieldSpec, raw: Any) -> Any:
    """A JSON value as the field's type, or the JSON_PARSER_ERROR Salesforce answers."""
    if raw is None:
        return None
    kind = field_spec.type
    ok: Any = None
    if kind == "boolean":
        ok = raw if isinstance(raw, bool) else None
    elif kind == "double":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            ok = float(raw)
    elif kind == "datetime":
        ok = parse_datetime(raw) if isinstance(raw, str) else None
    elif kind == "date":
        if isinstance(raw, str):
            try:
                ok = date.fromisoformat(raw[:10])
            except ValueError:
                ok = None
    elif kind in {"reference", "id"} and isinstance(raw, str):
        ok = normalize_id(raw) or raw  # a 15-character id is stored in its 18-character form
    elif isinstance(raw, str):
        ok = raw
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        ok = str(raw)
    if ok is None:
        token = "VALUE_STRING" if isinstance(raw, str) else type(raw).__name__.upper()
        raise json_parser_error(
            f"Cannot deserialize instance of {kind} from {token} value {raw} or request may be "
            "missing a required field at [line:1, column:1]"
        )
    return ok
