"""What `make run` prints and passes on: RQ's chatter at DEBUG, the banner first, one web port.

The logging filter and the printer run as they do in the processes: real
`logging` records through `configure_logging`'s handler, honcho's own message
type through `ConsolePrinter`. `tests/integration/test_make_run.py` checks the
same through `make run` itself.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from honcho.printer import Message

from config.logging import configure_logging
from config.settings import load_settings
from core.localrun import ConsolePrinter, banner, process_environment


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[io.StringIO, Path]]:
    stream = io.StringIO()
    yield stream, tmp_path
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_sightline", False):
            logging.getLogger().removeHandler(handler)


def log_lines(stream: io.StringIO, var_dir: Path, level: str) -> list[str]:
    configure_logging(
        load_settings({"SIGHTLINE_VAR_DIR": str(var_dir), "LOG_LEVEL": level}), stream
    )
    logging.getLogger("rq.worker").info("Worker 3926: default: Job OK (edbf07d9)")
    logging.getLogger("rq.cron").info("Enqueued job enqueue_due_steps to queue default")
    logging.getLogger("rq.worker").warning("Moving job to FailedJobRegistry")
    logging.getLogger("worker.sequences.delivering").info("sent sent_id=1 message_id=<a@b>")
    return stream.getvalue().splitlines()


def test_rq_job_chatter_is_not_printed_at_the_default_level(
    console: tuple[io.StringIO, Path],
) -> None:
    lines = log_lines(*console, "INFO")
    assert [line.split(" ", 2)[2] for line in lines] == [
        "level=WARNING logger=rq.worker Moving job to FailedJobRegistry",
        "level=INFO logger=worker.sequences.delivering sent sent_id=1 message_id=<a@b>",
    ]


def test_rq_job_chatter_is_printed_as_debug_at_debug(console: tuple[io.StringIO, Path]) -> None:
    lines = log_lines(*console, "DEBUG")
    assert [line.split(" ", 2)[2].split(" ", 2)[:2] for line in lines] == [
        ["level=DEBUG", "logger=rq.worker"],
        ["level=DEBUG", "logger=rq.cron"],
        ["level=WARNING", "logger=rq.worker"],
        ["level=INFO", "logger=worker.sequences.delivering"],
    ]


def message(name: str, text: str) -> Message:
    return Message(type="line", data=text, time=datetime(2026, 12, 6, 12), name=name, colour=None)


def test_the_banner_is_the_first_line_and_held_lines_follow_it() -> None:
    out = io.StringIO()
    printer = ConsolePrinter(out, verbose=False)
    printer.write(message("system", "web.1 started (pid=10)\n"))
    printer.write(message("events.1", "events_consumer_started\n"))
    printer.announce("Sightline is running: open http://localhost:5000")
    printer.write(message("worker.1", "sent sent_id=1\n"))
    printer.write(message("system", "sending SIGTERM to web.1 (pid 10)\n"))
    printer.write(message("system", "web.1 stopped (rc=-15)\n"))
    assert [line.split("| ")[-1] for line in out.getvalue().splitlines()] == [
        "Sightline is running: open http://localhost:5000",
        "events_consumer_started",
        "sent sent_id=1",
        "web.1 stopped (rc=-15)",
    ]
    assert printer.sessions == {10}  # what is swept for stragglers once honcho is done


def test_a_process_that_stops_before_web_answers_shows_what_was_held() -> None:
    out = io.StringIO()
    printer = ConsolePrinter(out, verbose=True)
    printer.write(message("system", "web.1 started (pid=10)\n"))
    printer.write(message("web.1", "[ERROR] Connection in use: ('0.0.0.0', 5000)\n"))
    assert out.getvalue() == ""
    printer.write(message("system", "web.1 stopped (rc=1)\n"))
    printer.announce("Sightline is running: open http://localhost:5000")  # too late: not printed
    assert [line.split("| ")[-1] for line in out.getvalue().splitlines()] == [
        "web.1 started (pid=10)",
        "[ERROR] Connection in use: ('0.0.0.0', 5000)",
        "web.1 stopped (rc=1)",
    ]


@pytest.mark.parametrize(
    ("given", "port", "public"),
    [
        ({}, "5000", "http://localhost:5000"),
        ({"PORT": "8000"}, "8000", "http://localhost:8000"),
        ({"PUBLIC_BASE_URL": "https://abc.ngrok.app"}, "5000", "https://abc.ngrok.app"),
    ],
)
def test_every_process_gets_the_web_port_and_one_public_url(
    tmp_path: Path, given: dict[str, str], port: str, public: str
) -> None:
    environ = {"SIGHTLINE_VAR_DIR": str(tmp_path), "PATH": "/usr/bin", **given}
    settings = load_settings(environ)
    env = process_environment(environ, settings)
    assert (env["PORT"], env["PUBLIC_BASE_URL"]) == (port, public)
    # What each process then reads: the same public URL whatever honcho would have given it.
    assert load_settings(env).public_base_url == public
    assert banner(settings) == f"Sightline is running: open http://localhost:{port}"
