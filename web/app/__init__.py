"""The web app a salesperson uses: compose and send, templates, sequences, prospects, reports.

One blueprint per concept, each registered by `init_app`:

    emails       /emails, /emails/<id>                    sent and scheduled, one email
    compose      /emails/new                              write and send (now or later)
    templates    /templates…                              saved subjects and bodies
    sequences    /sequences…                              the list, a sequence's page, steps
    enrolling    /sequences/<id>/enroll, …/import…        enrol by hand, CSV import
    enrollments  /enrollments/<id>…                       history; pause, resume, finish
    prospects    /prospects…                              list, search, one prospect
    reports      /reports…                                funnel by step, seconds per page
    preview      /preview                                 the editors' live preview (JSON)
    imap         /mailboxes/imap                          connect an IMAP mailbox
    optouts      /opt-outs…                               the opt-out list: add, remove
    team_settings /settings                               the team's settings
    account      /account…                                your name, signature, password,
                                                          devices and API tokens
    tracking_host /settings/tracking-host                 the team's own tracking host
    salesforce_page /salesforce                           the team's org: connect, status,
                                                          API use, settings, dead letters
    jobs         /admin/jobs                              failed background work: requeue
    members      /team/members…, /join/<token>            the team's people, invitations (admins)

Pages are server-rendered (Jinja, autoescaped) with a light touch of JavaScript
(`web/static/app/`): the rich-text editor, the live preview, small helpers; every
form works without it. Every page requires sign-in and shows only the signed-in
user's team's rows (`web.app.common.owned`); every state change carries the CSRF
token (`web.auth.protect`); every answer carries the security headers of
`web.app.common.SECURITY_HEADERS`. Bodies written here are sanitized with an
allow-list and previewed only inside sandboxed iframes.

Must never: show one team's data to another, put user data into a page unescaped,
or run a send anywhere but through the workers' claim (`worker.sequences`).
"""

from __future__ import annotations

from flask import Flask

from core.templates import plain_to_html, sanitize_html
from web.app import (
    account,
    compose,
    email_templates,
    emails,
    enrolling,
    enrollments,
    imap,
    jobs,
    members,
    optouts,
    preview,
    prospects,
    reports,
    salesforce_page,
    sequences,
    team_settings,
    tracking_host,
)


def _clean_html(value: str | None) -> str:
    """A body as the editor may load it: what the allow-list keeps (escaped again by Jinja)."""
    return sanitize_html(plain_to_html(value or ""))


def init_app(app: Flask) -> None:
    for module in (
        emails,
        compose,
        email_templates,
        sequences,
        enrolling,
        enrollments,
        prospects,
        reports,
        preview,
        imap,
        optouts,
        team_settings,
        tracking_host,
        account,
        members,
        salesforce_page,
        jobs,
    ):
        app.register_blueprint(module.bp)
    app.jinja_env.filters["clean_html"] = _clean_html
    app.jinja_env.globals["has_endpoint"] = lambda name: name in app.view_functions
