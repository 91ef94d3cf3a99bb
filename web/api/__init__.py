"""REST API v1: JSON in and out, `Authorization: Bearer <token>`.

One blueprint, `web.api.common.bp` (with the errors, body and query parsing and
token check every resource shares); each resource module registers its routes
on it with `web.api.operations.operation`, which also records what the route
takes and answers, and resources.py imports them and registers the blueprint
(`create_app` calls it). The mailbox connect routes (`web/connect/api.py`) and
the content library's (`web/documents/api.py`) are blueprints of their own
under the same prefix, registered with the same decorator. openapi.py serves
the document `operations.build_document` generates from the URL map.

This package imports nothing itself: modules elsewhere import `web.api.common`
and `web.api.schemas`, which runs this file first, and the resources import them
back (tests/unit/test_architecture.py counts that as a cycle).
"""
