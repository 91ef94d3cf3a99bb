"""Bulk API 2.0 ingest jobs (insert, update, upsert) over CSV.

The job life cycle as Salesforce documents it: ``POST jobs/ingest`` → state
``Open`` → ``PUT jobs/ingest/<id>/batches`` (CSV, 201) → ``PATCH {"state":
"UploadComplete"}`` → the fake processes the rows at once and the job is
``JobComplete`` → ``GET successfulResults/`` (``sf__Id, sf__Created, ...``) and
``failedResults/`` (``sf__Id, sf__Error, ...``; errors as ``CODE:message:fields
--``). Each row is saved like a single record (no allOrNone); ``#N/A`` sets a
field to null, an empty cell leaves it alone. Job ids have the ``750`` prefix.

Not modelled: query jobs, delete/hardDelete, ``Abort`` mid-processing, PK
chunking and parallel processing, the 150 MB / 100 M-record limits, job
listings, the ``InProgress`` delay of a real org (completion is immediate).
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, RecordError, make_id, not_found
from .store import Org, Record, format_datetime

_OPERATIONS = {"insert", "update", "upsert"}


@dataclass
class IngestJob:
    id: str
    object: str
    operation: str
    external_id_field: str | None
    line_ending: str
    column_delimiter: str
    created_date: str
    api_version: str
    state: str = "Open"
    csv_data: str = ""
    successes: list[tuple[str, bool, dict[str, str]]] = field(default_factory=list)
    failures: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def info(self, user_id: str) -> dict[str, Any]:
        processed = len(self.successes) + len(self.failures)
        data: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": user_id,
            "createdDate": self.created_date,
            "systemModstamp": self.created_date,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "jobType": "V2Ingest",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "numberRecordsProcessed": processed,
            "numberRecordsFailed": len(self.failures),
            "retries": 0,
            "totalProcessingTime": 0,
            "apiActiveProcessingTime": 0,
            "apexProcessingTime": 0,
        }
        if self.external_id_field:
            data["externalIdFieldName"] = self.external_id_field
        if self.state == "Open":
            data["contentUrl"] = f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches"
        return data


class BulkIngest:
    """Every ingest job of one org. Thread-safe."""

    def __init__(self, org: Org) -> None:
        self.org = org
        self._jobs: dict[str, IngestJob] = {}
        self._serial = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._jobs.clear()

    def create(self, body: dict[str, Any], version: str) -> dict[str, Any]:
        operation = str(body.get("operation", ""))
        sobject = self.org.sobject(str(body.get("object", "")))
        if operation not in _OPERATIONS:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
        if sobject is None or not sobject.createable:
            raise ApiError(
                400, "INVALIDJOB", f"InvalidJob : Unable to find object: {body.get('object')}"
            )
        ext = body.get("externalIdFieldName")
        if operation == "upsert":
            field_spec = sobject.field(str(ext or ""))
            if field_spec is None or not (field_spec.external_id or field_spec.id_lookup):
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field name provided, {ext} is not an External ID "
                    f"or indexed field for {sobject.name}",
                )
        with self._lock:
            self._serial += 1
            job = IngestJob(
                id=make_id("750", self._serial)[:18],
                object=sobject.name,
                operation=operation,
                external_id_field=str(ext) if ext else None,
                line_ending=str(body.get("lineEnding", "LF")),
                column_delimiter=str(body.get("columnDelimiter", "COMMA")),
                created_date=format_datetime(self.org.now()),
                api_version=version,
            )
            self._jobs[job.id] = job
        return job.info(self.org.user_id)

    def job(self, job_id: str) -> IngestJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise not_found()
        return job

    def upload(self, job_id: str, data: str) -> None:
        job = self.job(job_id)
        if job.state != "Open":
            raise ApiError(
                409, "INVALIDJOBSTATE", f"Job is not open for upload. Current state: {job.state}"
            )
        job.csv_data += data

    def set_state(self, job_id: str, state: str) -> dict[str, Any]:
        job = self.job(job_id)
        if state == "Aborted" and job.state in {"Open", "UploadComplete", "InProgress"}:
            job.state = "Aborted"
        elif state == "UploadComplete" and job.state == "Open":
            job.state = "UploadComplete"
            self._process(job)
        else:
            raise ApiError(
                400, "INVALIDJOBSTATE", f"Invalid state transition from {job.state} to {state}"
            )
        return job.info(self.org.user_id)

    def delete(self, job_id: str) -> None:
        job = self.job(job_id)
        with self._lock:
            del self._jobs[job.id]

    def results(self, job_id: str, kind: str) -> str:
        job = self.job(job_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        if kind == "successfulResults":
            writer.writerow(["sf__Id", "sf__Created", *job.columns])
            for record_id, created, row in job.successes:
                writer.writerow([record_id, str(created).lower(), *(row[c] for c in job.columns)])
        elif kind == "failedResults":
            writer.writerow(["sf__Id", "sf__Error", *job.columns])
            for error, row in job.failures:
                writer.writerow(["", error, *(row[c] for c in job.columns)])
        elif kind == "unprocessedrecords":
            writer.writerow(job.columns)
        else:
            raise not_found()
        return out.getvalue()

    def _process(self, job: IngestJob) -> None:
        delimiter = {
            "COMMA": ",",
            "TAB": "\t",
            "PIPE": "|",
            "SEMICOLON": ";",
            "CARET": "^",
            "BACKQUOTE": "`",
        }.get(job.column_delimiter, ",")
        reader = csv.DictReader(io.StringIO(job.csv_data), delimiter=delimiter)
        job.columns = list(reader.fieldnames or [])
        job.state = "InProgress"
        for row in reader:
            clean = {k: (v or "") for k, v in row.items() if k is not None}
            values: Record = {k: (None if v == "#N/A" else v) for k, v in clean.items() if v != ""}
            try:
                record_id, created = self._save(job, values)
            except (RecordError, ApiError) as exc:
                error = (
                    exc
                    if isinstance(exc, RecordError)
                    else RecordError(exc.error_code, exc.message, exc.fields)
                )
                job.failures.append((error.bulk_text(), clean))
            else:
                job.successes.append((record_id, created, clean))
        job.state = "JobComplete"

    def _save(self, job: IngestJob, values: Record) -> tuple[str, bool]:
        spec = self.org.sobject(job.object)
        assert spec is not None
        typed: Record = {}
        for name, value in values.items():
            field_spec = spec.field(name)
            typed[name] = _from_csv(field_spec.type if field_spec else "string", value)
        if job.operation == "insert":
            return self.org.insert(job.object, typed), True
        if job.operation == "update":
            record_id = str(typed.pop("Id", "") or "")
            self.org.update(job.object, record_id, typed)
            return record_id, False
        ext = str(job.external_id_field)
        key = next((v for k, v in typed.items() if k.lower() == ext.lower()), None)
        if key is None:
            raise RecordError("MISSING_ARGUMENT", f"{ext} not specified", [ext])
        return self.org.upsert(job.object, ext, key, typed)


def _from_csv(kind: str, value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    if kind == "boolean":
        return value.strip().lower() in {"true", "1", "yes"}
    if kind == "double":
        try:
            return float(value)
        except ValueError:
            return value
    return value
