"""REST API v1: JSON in and out, `Authorization: Bearer <token>`.

One blueprint, `web.api.common.bp` (with the errors, body parsing and token check
every resource shares); the resources add their routes to it: routes.py
(mailboxes, sequences, enrollments, messages, events), salesforce.py (the team's
org, usage, dead letters) and openapi.py (the OpenAPI document, and the query
parameters each operation accepts); resources.py registers the blueprint once they
have (`create_app` calls it). The mailbox connect routes (`web/connect/api.py`) and the content
library's (`web/documents/api.py`) are blueprints of their own under the same
prefix.

This package imports nothing itself: modules elsewhere import `web.api.common`
and `web.api.schemas`, which runs this file first, and the resources import them
back (tests/unit/test_architecture.py counts that as a cycle).
"""
