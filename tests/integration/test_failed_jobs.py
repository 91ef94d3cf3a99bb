"""Failed work: real jobs failing on the real Redis, listed, requeued and deleted (page and CLI).

A team's job (reading the org's /limits) fails because the fake Salesforce
answers 503; a job of no team fails quoting the secret it was handed. An RQ
worker (in this process, on the real Redis) runs them. The team's admin sees
their job only, with the safe fields; another team's admin cannot touch it;
the operator's command line sees both, the secret blanked. Requeued once the
fake answers again, the job succeeds.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from rq import SimpleWorker
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from config import Settings, get_settings, queues
from core.db import session_scope
from core.models import Team
from core.redis import get_redis
from tests.conftest import create_user
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.oauth_browsers import Browser
from tests.integration.test_feed import PASSWORD, csrf_from
from worker.queueing import enqueue, get_queue
from worker.salesforce.budget import OrgBudget
from worker.salesforce.org_status import request_limits_refresh

ADMIN = "admin@team-a.test"
OTHER = "admin@team-b.test"
SECRET = "sl_live_0123456789abcdef"


def leak(secret: str) -> None:
    """A job of no team whose error quotes what it was handed."""
    raise ValueError(f"the provider refused {secret} for mailbox 7")


@pytest.fixture
def org(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", fake_salesforce.instance_url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", fake_salesforce.access_token)
    get_settings.cache_clear()
    return fake_salesforce


def work() -> None:
    queues_ = [get_queue(name) for name in queues.ALL]
    SimpleWorker(queues_, connection=get_redis()).work(burst=True)


def failed_ids() -> set[str]:
    ids: set[str] = set()
    for name in queues.ALL:
        ids.update(FailedJobRegistry(queue=get_queue(name)).get_job_ids())
    return ids


def team_id(name: str) -> int:
    with session_scope() as session:
        return int(session.scalars(select(Team.id).where(Team.name == name)).one())


def press(browser: Browser, path: str, data: dict[str, str]) -> str:
    token = csrf_from(browser.client.get("/admin/jobs").get_data(as_text=True))
    answer = browser.client.post(path, data={"csrf_token": token, **data})
    assert answer.status_code == 303
    return str(browser.follow(answer).get_data(as_text=True))


def rows(page: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)">', page)


def api(app: Flask, token: str, method: str, path: str) -> Any:
    return app.test_client().open(path, method=method, headers={"Authorization": f"Bearer {token}"})


def cli(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=["jobs", *args])
    return result


def test_a_failed_job_is_listed_safely_requeued_and_succeeds(
    app: Flask, org: FakeSalesforce
) -> None:
    token = create_user(app, ADMIN, "Team A", "--password", PASSWORD)
    other_token = create_user(app, OTHER, "Team B", "--password", PASSWORD)
    org.faults.add("http_503", None, match="limits")
    assert request_limits_refresh(team_id("Team A"))
    enqueue(queues.DEFAULT, "tests.integration.test_failed_jobs.leak", SECRET, retry=None)
    work()
    assert len(failed_ids()) == 2

    admin = Browser(app, ADMIN)
    page = admin.client.get("/admin/jobs").get_data(as_text=True)
    [job_id] = rows(page)  # the team's job only: the other has no team
    assert "Salesforce limits read" in page and '<td data-label="Queue">salesforce</td>' in page
    assert "SalesforceError" in page and SECRET not in page

    # Another team's admin: not listed, and pressing Requeue with its id does nothing.
    other = Browser(app, OTHER)
    assert rows(other.client.get("/admin/jobs").get_data(as_text=True)) == []
    assert "no longer in the failed list" in press(other, "/admin/jobs/requeue", {"job_id": job_id})
    assert job_id in failed_ids()

    # The API says the same to each team's admin; another team's id is as absent as none.
    listed_api = api(app, token, "GET", "/api/v1/jobs/failed").json["jobs"]
    assert [(j["id"], j["function"], j["queue"]) for j in listed_api] == [
        (job_id, "Salesforce limits read", "salesforce")
    ]
    assert api(app, other_token, "GET", "/api/v1/jobs/failed").json == {"jobs": []}
    for method, path in [
        ("POST", f"/api/v1/jobs/failed/{job_id}/requeue"),
        ("DELETE", f"/api/v1/jobs/failed/{job_id}"),
    ]:
        refused = api(app, other_token, method, path)
        assert refused.status_code == 404 and refused.json["error"]["code"] == "not_found"
    assert api(app, other_token, "POST", "/api/v1/jobs/failed/requeue").json == {"requeued": 0}
    assert job_id in failed_ids()

    # The operator sees both; the secret the job was handed is blanked.
    listed = cli(app, "failed", "--json")
    assert listed.exit_code == 0, listed.output
    shown = {job["func_name"]: job for job in json.loads(listed.output)}
    assert set(shown) == {
        "worker.salesforce.limits.refresh_limits_job",
        "tests.integration.test_failed_jobs.leak",
    }
    assert shown["tests.integration.test_failed_jobs.leak"]["error"] == (
        "ValueError: the provider refused [redacted] for mailbox 7"
    )
    assert SECRET not in listed.output and "args" not in listed.output
    table = cli(app, "failed")
    assert table.output.splitlines()[0].split() == ["id", "job", "queue", "failed", "UTC", "error"]
    assert SECRET not in table.output

    # The org answers again: requeued from the page, the job runs and reads the limits.
    org.faults.clear()
    org.set_api_usage(5_000, 15_000)
    assert "is queued again" in press(admin, "/admin/jobs/requeue", {"job_id": job_id})
    work()
    usage = OrgBudget("default").usage()
    assert usage is not None and (usage.used, usage.max) == (5_001, 15_000)
    assert job_id not in failed_ids()
    assert rows(admin.client.get("/admin/jobs").get_data(as_text=True)) == []

    # Failing again, the admin deletes it from the page: gone for good.
    org.faults.add("http_503", None, match="limits")
    assert request_limits_refresh(team_id("Team A"))
    work()
    [again] = rows(admin.client.get("/admin/jobs").get_data(as_text=True))
    assert "is deleted" in press(admin, "/admin/jobs/delete", {"job_id": again})
    assert again not in failed_ids()

    # The operator requeues the rest, it fails again, and is deleted for good.
    assert cli(app, "requeue", "--all").output.strip() == "requeued 1 job"
    work()
    [leak_id] = failed_ids()
    assert cli(app, "delete", leak_id).exit_code == 0
    assert failed_ids() == set()
    assert cli(app, "requeue", leak_id).exit_code == 1
    assert cli(app, "failed").output.strip() == "no failed jobs"
    refused = cli(app, "requeue")
    assert refused.exit_code == 2 and "give a JOB_ID" in refused.output
