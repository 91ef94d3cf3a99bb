"""How the `web` process serves the ASGI front door: gunicorn with uvicorn workers.

The Procfile runs `gunicorn --config config/gunicorn.py web.tracking.app:app`;
`Worker` is the gunicorn worker class: uvicorn on uvloop and httptools, no
access log, no server header, and no proxy-header rewriting (client addresses
are read by core.tracking.classify.client_ip, which knows which hops to trust).
`python -m web.tracking.serve` runs the same app under plain uvicorn, for
debugging without gunicorn.
"""

from __future__ import annotations

from typing import Any, ClassVar

import uvicorn
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from config import get_settings
from config.logging import configure_logging


class Worker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }


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
