"""`GET /healthz`: database, Redis and live worker count, as JSON.

503 when the database or Redis does not answer, so a load balancer or Heroku's
router check sees it; zero workers is reported, not an error (web can serve
tracking hits while workers restart).
"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from core.redis import get_redis
from web.db import db

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    body: dict[str, object] = {"status": "ok"}
    try:
        db().execute(text("SELECT 1"))
        body["database"] = "ok"
    except SQLAlchemyError as exc:
        log.error("healthz_database_failed error=%s", type(exc).__name__)
        body["database"] = "unavailable"
        body["status"] = "degraded"
    try:
        redis = get_redis()
        redis.ping()
        body["redis"] = "ok"
        body["workers"] = Worker.count(connection=redis)
    except (RedisError, OSError) as exc:
        log.error("healthz_redis_failed error=%s", type(exc).__name__)
        body["redis"] = "unavailable"
        body["workers"] = None
        body["status"] = "degraded"
    return jsonify(body), 200 if body["status"] == "ok" else 503
