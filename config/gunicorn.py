"""gunicorn settings for the `web` process (Heroku sets PORT and WEB_CONCURRENCY).

gunicorn manages the processes (Heroku's usual shape: restarts, graceful
SIGTERM, `WEB_CONCURRENCY`); each worker runs uvicorn on uvloop and httptools
(`web.tracking.serve.Worker`), because the pixel and click endpoints are an
ASGI app: a sync WSGI worker reaches only a few per cent of nginx on the pixel
(FIELD-NOTES; `make bench-pixel`).
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "web.tracking.serve.Worker"
# Heroku's router gives up after 30 s; nothing we serve should get close.
timeout = 30
graceful_timeout = 20
keepalive = 5
# No access log: a line per pixel load would cost more than the hit itself and
# would put readers' addresses in the logs. Flask requests log what matters.
accesslog = None
