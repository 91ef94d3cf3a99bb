"""Key=value log lines, one per event, with the RQ job id and no secrets.

`configure_logging()` is called once by every process entry point. Two filters
ride on the root handler:

- `JobIdFilter` adds `job_id=` from RQ's current job, so every line a job writes
  can be traced to it (the redash habit).
- `RedactingFormatter` replaces any configured secret value (SECRET_KEY,
  encryption keys, passwords and tokens from settings) with `[redacted]` in the
  finished line, tracebacks included. It is a safety net, not a licence: code
  must not log secrets in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from config.settings import Settings

_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s%(job)s %(message)s"


class JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        job_id = ""
        try:
            from rq import get_current_job

            job = get_current_job()
            if job is not None:
                job_id = f" job_id={job.id}"
        except Exception:  # noqa: BLE001 - outside a job (or without rq) there is no id to add
            job_id = ""
        record.job = job_id
        return True


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = tuple(sorted(set(secrets), key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, "[redacted]")
        return line


def configure_logging(settings: Settings, stream: object = None) -> None:
    """Install the key=value handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sightline", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler._sightline = True  # type: ignore[attr-defined]
    handler.setFormatter(RedactingFormatter(_FORMAT, settings.secrets_to_redact()))
    handler.addFilter(JobIdFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Libraries that log request URLs or bodies at DEBUG stay quiet.
    for noisy in ("urllib3", "simple_salesforce", "imapclient"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
