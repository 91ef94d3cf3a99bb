"""The team's Salesforce page: ``/salesforce`` (admins).

    GET  /salesforce                      status, API use, settings, dead letters
    POST /salesforce/connect              start the OAuth flow (production, sandbox or
                                          My Domain login host) → the start link
    POST /salesforce/disconnect           forget the team's own org (writes are held)
    POST /salesforce/settings             budget share, create leads
    POST /salesforce/dead-letters/retry   one dead letter (`outbox_id`) or all (`all`)
    POST /salesforce/usage/refresh        ask a worker to read the org's /limits

Everything here goes through the services the API uses: the status and its
reasons (`worker.salesforce.org_status`), the flow (`web.salesforce_connect`,
then `web.oauth_pages` asks the admin to confirm the org), settings and
disconnect (`worker.salesforce.connections`), replay
(`worker.salesforce.outbox_replay`). The page never calls Salesforce: the
org's /limits are read by a job it queues when its reading is stale.

The login host a person gives passes the one policy for Salesforce hosts
(`worker.salesforce.hosts`, through `connections.authorize_link`): Salesforce's
own login hosts and My Domains, or the operator's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from web.app.common import FormErrors, app_blueprint, form_str, team_id, user
from web.app.salesforce_chart import usage_bar_svg
from web.auth import login_required
from web.db import db
from web.roles import admin_required
from web.salesforce_connect import start_flow
from worker.salesforce.org_status import OrgStatus, org_status, request_limits_refresh
from worker.salesforce.outbox_replay import dead_letters, replay_failed

bp = app_blueprint("salesforce_page", __name__)
log = logging.getLogger(__name__)

DEAD_LETTERS_SHOWN = 100
SANDBOX_LOGIN = "https://test.salesforce.com"
LOGIN_HOSTS = (
    ("production", "Production (login.salesforce.com)"),
    ("sandbox", "Sandbox (test.salesforce.com)"),
    ("my_domain", "My Domain"),
)


def _render(errors: FormErrors | None = None, values: dict[str, Any] | None = None) -> Any:
    status = org_status(db(), team_id())
    if status.profile.ready and status.usage_stale:
        request_limits_refresh(team_id())  # at most one waiting per team
    chart = None
    if status.usage is not None:
        chart = usage_bar_svg(
            status.usage.used,
            status.usage.max,
            status.calls_today,
            status.profile.budget_share,
        )
    letters = dead_letters(db(), team_id(), limit=DEAD_LETTERS_SHOWN)
    errors = errors or FormErrors()
    return (
        render_template(
            "app/salesforce.html",
            status=status,
            chart=chart,
            dead_letters=letters,
            errors=errors,
            values=values or {"login_host": "production", "my_domain": ""},
            login_hosts=LOGIN_HOSTS,
            usage_at=datetime.fromtimestamp(status.usage.at, UTC) if status.usage else None,
        ),
        422 if errors else 200,
    )


@bp.get("/salesforce")
@login_required
@admin_required
def index() -> ResponseReturnValue:
    page: ResponseReturnValue = _render()
    return page


def login_url_of(choice: str, my_domain: str) -> str | None:
    """The login URL a choice stands for (None: the operator's, login.salesforce.com by default).

    Raises:
        ValueError: an unknown choice, or My Domain chosen without a domain.
    """
    if choice == "production":
        return None
    if choice == "sandbox":
        return SANDBOX_LOGIN
    if choice != "my_domain":
        raise ValueError("login_host: choose production, sandbox or My Domain")
    domain = my_domain.strip()
    if not domain:
        raise ValueError("my_domain: give your My Domain, such as acme.my.salesforce.com")
    return domain if domain.startswith(("https://", "http://")) else f"https://{domain}"


@bp.post("/salesforce/connect")
@login_required
@admin_required
def connect() -> ResponseReturnValue:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (web.api.salesforce).
    from worker.salesforce.connections import ConnectError

    values = {"login_host": form_str("login_host"), "my_domain": form_str("my_domain", limit=500)}
    errors = FormErrors()
    try:
        login_url = login_url_of(values["login_host"], values["my_domain"])
        link = start_flow(team_id(), user().id, login_url)
    except ValueError as exc:  # ConnectError is a ValueError: "<field>: <reason>"
        field, _, reason = str(exc).partition(": ")
        if isinstance(exc, ConnectError):
            field, reason = exc.field, exc.reason
        errors.add("my_domain" if field == "login_url" else field, reason or str(exc))
        page: ResponseReturnValue = _render(errors, values)
        return page
    log.info("salesforce_connect_started team_id=%s user_id=%s", team_id(), user().id)
    return redirect(link, code=303)


@bp.post("/salesforce/disconnect")
@login_required
@admin_required
def disconnect() -> ResponseReturnValue:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (web.api.salesforce).
    from worker.salesforce.connections import disconnect as forget_org

    if forget_org(team_id()):
        flash(
            "Salesforce is disconnected. Activities wait, none is lost: they are written "
            "once an org is connected again.",
            "success",
        )
    else:
        flash("This team has no org of its own to disconnect.", "error")
    return redirect(url_for("salesforce_page.index"), code=303)


def _budget_share(raw: str) -> int:
    try:
        share = int(raw)
    except ValueError:
        raise ValueError("a whole number of percent, from 1 to 100") from None
    if not 1 <= share <= 100:
        raise ValueError("a whole number of percent, from 1 to 100")
    return share


@bp.post("/salesforce/settings")
@login_required
@admin_required
def settings() -> ResponseReturnValue:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (web.api.salesforce).
    from worker.salesforce.connections import update_settings

    errors = FormErrors()
    raw = form_str("budget_share", limit=20)
    try:
        share = _budget_share(raw)
    except ValueError as exc:
        errors.add("budget_share", f"Budget share: {exc}.")
        page: ResponseReturnValue = _render(
            errors, {"login_host": "production", "budget_share": raw}
        )
        return page
    create_leads = request.form.get("create_leads") == "on"
    update_settings(team_id(), budget_share=share, create_leads=create_leads)
    log.info(
        "salesforce_settings_saved team_id=%s budget_share=%s create_leads=%s",
        team_id(),
        share,
        create_leads,
    )
    flash("Salesforce settings saved.", "success")
    return redirect(url_for("salesforce_page.index"), code=303)


@bp.post("/salesforce/dead-letters/retry")
@login_required
@admin_required
def retry() -> ResponseReturnValue:
    ids: list[int] | None = None
    if request.form.get("all") != "1":
        raw = form_str("outbox_id")
        if not raw.isdigit() or not 1 <= int(raw) <= 2**63 - 1:
            flash("Choose a dead letter to retry.", "error")
            return redirect(url_for("salesforce_page.index"), code=303)
        ids = [int(raw)]
    replayed = replay_failed(db(), team_id(), ids)
    db().commit()
    if replayed:
        flash(
            f"{replayed} activit{'y is' if replayed == 1 else 'ies are'} queued again: "
            "written with the next flush.",
            "success",
        )
    else:
        flash("Nothing to retry: it was retried already, or is not this team's.", "error")
    return redirect(url_for("salesforce_page.index"), code=303)


@bp.post("/salesforce/usage/refresh")
@login_required
@admin_required
def refresh_usage() -> ResponseReturnValue:
    status: OrgStatus = org_status(db(), team_id())
    if not status.profile.ready:
        flash("Connect Salesforce first: its API use can only be read from a working org.", "error")
    elif request_limits_refresh(team_id()):
        flash("Asked Salesforce for the org's API use: reload in a moment.", "success")
    else:
        flash("Already asking Salesforce for the org's API use: reload in a moment.", "success")
    return redirect(url_for("salesforce_page.index"), code=303)
