"""`GET /healthz`: database, Redis, live worker count and tracking backlog, as JSON.

503 when the database or Redis does not answer, so a load balancer or Heroku's
router check sees it; zero workers is reported, not an error (web can serve
tracking hits while workers restart). `hits_backlog` is how many tracking hits
wait in the Redis stream for the `events` consumer (it deletes what it has
stored): a number that keeps growing means `events` is down or behind, and the
stream is using Redis memory for it.
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
from core.tracking import hits as hit_stream
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
        body["hits_backlog"] = int(redis.xlen(hit_stream.STREAM))
    except (RedisError, OSError) as exc:
        log.error("healthz_redis_failed error=%s", type(exc).__name__)
        body["redis"] = "unavailable"
        body["workers"] = None
        body["hits_backlog"] = None
        body["status"] = "degraded"
    return jsonify(body), 200 if body["status"] == "ok" else 503
