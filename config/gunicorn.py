"""gunicorn settings for the `web` process (Heroku sets PORT and WEB_CONCURRENCY)."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
# Heroku's router gives up after 30 s; a request should never get close.
timeout = 25
graceful_timeout = 20
keepalive = 5
accesslog = "-"
access_log_format = 'method=%(m)s path="%(U)s" status=%(s)s bytes=%(B)s duration_ms=%(M)s'
# Heroku's router is the only way in, from addresses that vary: trust its headers there.
forwarded_allow_ips = os.environ.get(
    "FORWARDED_ALLOW_IPS", "*" if os.environ.get("DYNO") else "127.0.0.1"
)
