"""Key=value log lines, one per event, with the RQ job id and no secrets.

`configure_logging()` is called once by every process entry point. On the root
handler ride two filters and a formatter:

- `JobIdFilter` adds `job_id=` from RQ's current job, so every line a job writes
  can be traced to it (the redash habit).
- `RqChatterFilter` reads RQ's INFO lines as DEBUG: a job started, finished,
  "Job OK", its result kept or discarded, each cron and scheduler tick, a worker
  starting and stopping. That was nine lines in ten of an idle `make run`, and
  says nothing a reader of our own lines (`sent`, `inbound_recorded`,
  `salesforce_flush` ...) needs; `LOG_LEVEL=DEBUG` shows them again. RQ's
  warnings and errors (a failed job, a killed work horse) are left as they are.
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


class RqChatterFilter(logging.Filter):
    """RQ's INFO records (loggers `rq.*`) become DEBUG ones, shown only at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("rq."):
            return True
        # RQ sets its loggers to INFO itself (`rq worker --logging_level`), so the
        # records are made; they are relabelled here rather than never made.
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


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
    handler.addFilter(RqChatterFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Libraries that log request URLs or bodies at DEBUG stay quiet.
    for noisy in ("urllib3", "simple_salesforce", "imapclient"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
