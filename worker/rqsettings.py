"""Settings module for RQ's command line (`rq worker -c worker.rqsettings`, `rq cron`).

RQ reads the upper-case names. Importing this starts the embedded Redis server
when REDIS_URL is unset, and installs Sightline's key=value logging.
"""

import gc

from config import get_settings, queues
from config.logging import configure_logging
from core.redis import client_url

_settings = get_settings()
configure_logging(_settings)

REDIS_URL = client_url(_settings)
QUEUES = list(queues.ALL)

# Imported once in the worker's parent process so each forked job starts warm
# (otherwise every job pays for importing SQLAlchemy and the vendor SDKs).
import worker.documents.pipeline  # noqa: E402
import worker.salesforce.outbox  # noqa: E402
import worker.sequences.jobs  # noqa: E402
import worker.sync.engine  # noqa: E402
import worker.sync.push  # noqa: E402, F401

# The provider modules and their SDKs (google-api-python-client, exchangelib, msal)
# cost ~150 ms to import and the Gmail client ~10 ms to build: once here, not per job.
from worker.sync import exchange, gmail, gmail_api, graph, imap  # noqa: E402, F401

gmail_api.warm()

# What SQLAlchemy does lazily on first use would otherwise be done again in every
# forked job: importing the database driver (create_engine) and configuring the
# mappers. With IMAP's module, ~300 ms of each send job under load (py-spy, in
# the chaos run). The engine opens no connection here, so forked jobs share none.
from sqlalchemy.orm import configure_mappers  # noqa: E402

from core.db import get_engine  # noqa: E402

get_engine()
configure_mappers()

# Forked jobs share these pages copy-on-write; a garbage collection in the child
# would touch (and so copy) every object. Freezing them leaves them alone.
gc.freeze()
