"""`python -m web.tracking.serve`: the `web` process (uvicorn, binding $PORT).

uvloop and httptools carry the hot paths; `WEB_CONCURRENCY` worker processes
(default 2) share the port. No access log: a line per pixel load would cost more
than the hit itself and would put addresses in the logs; Flask requests are few
and log what matters themselves.
"""

from __future__ import annotations

import uvicorn

from config import get_settings
from config.logging import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    uvicorn.run(
        "web.tracking.app:app",
        host="0.0.0.0",  # noqa: S104 - Heroku routes to the dyno's interface
        port=settings.port,
        workers=settings.web_concurrency,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # client addresses are read by core.tracking.classify.client_ip
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=20,
        log_config=None,
    )


if __name__ == "__main__":
    main()
