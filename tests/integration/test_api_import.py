"""`POST /api/v1/sequences/{id}/import`: the page's CSV import as one API call.

Through the real app on both databases: a dry run enrols nobody and says what
would happen to each row; the real call enrols what passes (with the file's time
zones and do-not-track) and names the refused rows by line; a second import of
the same file refuses every row as already enrolled; another team's sequence is 404.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from core.db import session_scope
from core.models import Enrollment, Prospect
from tests.conftest import ApiClient, create_user
from tests.integration.test_api import mailbox_body, sequence_body

pytestmark = pytest.mark.integration

CSV = (
    "Email,Name,Company,Time zone,Do not track\n"
    "dana@acme.test,Dana Scully,Acme,Europe/Berlin,yes\n"
    "fox@acme.test,Fox Mulder,Acme,,\n"
    "not-an-address,Nobody,Acme,,\n"
    "gone@acme.test,Opted Out,Acme,,\n"
)


def _upload(api: ApiClient, sequence_id: int, data: bytes | None, **form: str) -> Any:
    fields: dict[str, Any] = dict(form)
    if data is not None:
        fields["file"] = (io.BytesIO(data), "people.csv")
    return api.client.post(
        f"/api/v1/sequences/{sequence_id}/import",
        headers=api._headers(),
        data=fields,
        content_type="multipart/form-data",
    )


def _enrolled(sequence_id: int) -> int:
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Enrollment)
                .where(Enrollment.sequence_id == sequence_id)
            )
            or 0
        )


def test_a_csv_is_checked_then_enrolled_and_each_refused_row_named(
    app: Flask, client: FlaskClient
) -> None:
    api = ApiClient(client, create_user(app, "owner@team-a.test", "Team A"))
    other = ApiClient(client, create_user(app, "owner@team-b.test", "Team B"))
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    sequence_id = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json["id"]
    optout = api.post("/api/v1/opt-outs", {"email": "gone@acme.test", "reason": "asked"})
    assert optout.status_code == 201, optout.json

    preview = _upload(api, sequence_id, CSV.encode(), dry_run="true")
    assert preview.status_code == 200, preview.json
    assert preview.json["dry_run"] is True and preview.json["enrolled"] == 0
    assert preview.json["accepted"] == ["dana@acme.test", "fox@acme.test"]
    refused = {r["line"]: r["reason"] for r in preview.json["refused"]}
    assert set(refused) == {4, 5}, refused
    assert "not-an-address" in refused[4] and "opt" in refused[5].lower()
    assert _enrolled(sequence_id) == 0

    done = _upload(api, sequence_id, CSV.encode())
    assert done.status_code == 200, done.json
    assert done.json["dry_run"] is False and done.json["enrolled"] == 2
    assert _enrolled(sequence_id) == 2
    with session_scope() as session:
        dana = session.scalars(select(Prospect).where(Prospect.email == "dana@acme.test")).one()
        assert (dana.name, dana.do_not_track, dana.time_zone) == (
            "Dana Scully",
            True,
            "Europe/Berlin",
        )

    again = _upload(api, sequence_id, CSV.encode())
    assert again.status_code == 200 and again.json["enrolled"] == 0
    assert all("already enrolled" in r["reason"] for r in again.json["refused"][:2])
    assert _enrolled(sequence_id) == 2

    # Bad input: each with the field named; another team's sequence is not there at all.
    assert _upload(api, sequence_id, None).json["error"]["fields"] == {"file": "required"}
    no_email = _upload(api, sequence_id, b"Name,Company\nDana,Acme\n")
    assert no_email.status_code == 422 and "file" in no_email.json["error"]["fields"]
    maybe = _upload(api, sequence_id, CSV.encode(), dry_run="maybe")
    assert maybe.status_code == 422 and "dry_run" in maybe.json["error"]["fields"]
    assert _upload(other, sequence_id, CSV.encode()).status_code == 404
    assert _enrolled(sequence_id) == 2
