"""A mailbox's own skipped folders: set on the API and the mailboxes page, honoured by the sync.

The API through the Flask test client with a team token; the page signed in
with CSRF; the sync is the real provider against the fake Exchange (EWS),
whose folders a rule files replies into.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from config import Settings
from core.db import session_scope
from core.models import Mailbox
from tests.conftest import ApiClient
from tests.fakes.ews import FakeEws
from tests.integration.provider_harness import ExchangeHarness
from tests.integration.test_provider_contract import (
    inbound,
    make_seller,
    send_first_step,
    state_of,
)
from tests.integration.test_provider_pages import CSRF, row_of, sign_in
from worker.sync.engine import sync_mailbox


def _skip(mailbox_id: int) -> list[str] | None:
    with session_scope() as session:
        return session.get_one(Mailbox, mailbox_id).skip_folders


def _patch(api: ApiClient, path: str, body: object) -> Any:
    return api.client.patch(
        path, data=json.dumps(body), headers=api._headers(), content_type="application/json"
    )


def test_the_api_sets_checks_and_resets_a_mailboxs_skipped_folders(
    env: Settings, api: ApiClient, fake_ews: FakeEws
) -> None:
    seller = make_seller(ExchangeHarness(fake_ews), "Team A")  # the token's team
    mailbox_id = seller.mailbox_id
    path = f"/api/v1/mailboxes/{mailbox_id}"
    shown = api.get(path).json
    assert (shown["skip_folders"], shown["skip_folders_in_force"]) == (
        None,
        ["Sent", "Drafts", "Trash", "Junk"],
    )
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(mailbox_id)

    answer = _patch(
        api, path, {"skip_folders": ["Sent", " Drafts ", "Trash", "Junk", "Customers", "customers"]}
    )
    assert answer.status_code == 200, answer.json
    own = ["Sent", "Drafts", "Trash", "Junk", "Customers"]
    assert answer.json["skip_folders"] == answer.json["skip_folders_in_force"] == own
    assert answer.json["daily_cap"] is None  # the other settings are kept
    reply = inbound("dana@acme.test", seller.address, dana_id)
    fake_ews.file_into(seller.address, reply, "Customers")
    assert sync_mailbox(mailbox_id).listed == 0 and state_of(dana)[0] == "active"

    for bad, said in (
        (["Sent", ""], "a folder name can't be empty"),
        (["Sent, Junk"], "a folder name can't contain a comma"),
        (["Cust\nomers"], "can't contain control characters"),
        (["x" * 201], "at most 200 characters"),
        ([f"F{i}" for i in range(51)], "50"),
        ("Sent", "list"),
    ):
        refused = _patch(api, path, {"skip_folders": bad})
        assert refused.status_code == 422, bad
        assert said in refused.json["error"]["fields"]["skip_folders"], refused.json
    assert _skip(mailbox_id) == own  # nothing refused was stored

    back = _patch(api, path, {"skip_folders": None})
    assert (back.json["skip_folders"], back.json["skip_folders_in_force"]) == (
        None,
        ["Sent", "Drafts", "Trash", "Junk"],
    )
    assert sync_mailbox(mailbox_id).outcomes == {"recorded": 1}
    assert state_of(dana)[0] == "replied"


def test_the_page_names_the_folders_not_read_and_refuses_bad_ones_in_words(
    env: Settings, app: Flask, client: FlaskClient, fake_ews: FakeEws
) -> None:
    sign_in(app, client)
    seller = make_seller(ExchangeHarness(fake_ews), "Team A")
    page = client.get("/mailboxes").get_data(as_text=True)
    row = row_of(page, seller.mailbox_id)
    assert "Folders not read: Sent, Drafts, Trash, Junk" in row
    token = CSRF.search(row)
    assert token is not None
    url = f"/mailboxes/{seller.mailbox_id}/folders"

    saved = client.post(
        url,
        data={
            "csrf_token": token.group(1),
            "skip_folders": "Sent, Drafts,, Trash, Junk, Newsletters",
        },
    )
    assert saved.status_code == 302
    message = html.unescape(client.get(saved.headers["Location"]).get_data(as_text=True))
    assert f"{seller.address} does not read: Sent, Drafts, Trash, Junk, Newsletters." in message
    assert _skip(seller.mailbox_id) == ["Sent", "Drafts", "Trash", "Junk", "Newsletters"]

    refused = client.post(
        url, data={"csrf_token": token.group(1), "skip_folders": "Sent, " + "x" * 201}
    )
    text = html.unescape(refused.get_data(as_text=True))
    assert refused.status_code == 422
    assert (
        f"The folders for {seller.address} were not saved: a folder name is at most 200 characters."
        in text
    )
    assert _skip(seller.mailbox_id) == ["Sent", "Drafts", "Trash", "Junk", "Newsletters"]
    assert re.search(r'name="default" value="1"', row_of(text, seller.mailbox_id))

    reset = client.post(
        url, data={"csrf_token": token.group(1), "default": "1", "skip_folders": ""}
    )
    assert reset.status_code == 302 and _skip(seller.mailbox_id) is None
    everything = client.post(url, data={"csrf_token": token.group(1), "skip_folders": " "})
    assert everything.status_code == 302 and _skip(seller.mailbox_id) == []
