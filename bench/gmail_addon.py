"""What a Gmail add-on call costs the web process: proving it is Google's, and each card.

Reproduce: `python -m bench.gmail_addon` (`--calls 200`).

On a fresh PostgreSQL database (the test suite's helper), migrated to head: the
tests' world (tests/integration/gmail_addon_support.py: a team on the team plan,
a rep, a sequence with Dana enrolled, a ready document) and a fake Google
serving a test key as its certificates (tests/fakes/google_certs). Timed, with
the Flask test client, `--calls` times each after a warm-up:

    verify      web.addons.gmail.auth.verify_call alone: two RS256 ID tokens
                (the service account's, the user's) against the cached certificates
    homepage    POST /addons/gmail/homepage: verify, find the user, 20 feed items, card
    message     POST /addons/gmail/message with the thread's addresses in the event
                (no Gmail call): verify, the prospect panel, card
    compose     POST /addons/gmail/compose: verify, content choices, card

and the resident memory the Gmail API client adds when the message trigger
first reads a message (the lazy import in web/addons/gmail/routes.py). Prints
medians and 95th percentiles in milliseconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else 0.0


def timed(label: str, calls: int, run: Callable[[], object]) -> str:
    for _ in range(10):
        run()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    return (
        f"{label:<9} median {statistics.median(samples) * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    from tests.fakes.httpfake import trust_provider_ca
    from tests.services import postgres

    trust_provider_ca()
    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": tempfile.mkdtemp(prefix="sightline-bench-"),
            "DATABASE_URL": database.url,
            "REDIS_URL": "redis://127.0.0.1:6379/15",
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "PUBLIC_BASE_URL": "http://localhost:5000",
            "LOG_LEVEL": "WARNING",
        }
    )
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")

    from config import get_settings
    from tests.fakes.google_certs import FakeGoogleCerts
    from tests.integration.gmail_addon_support import (
        BASE,
        CLIENT_ID,
        SERVICE_ACCOUNT,
        event,
        world,
    )
    from web import create_app
    from web.addons.gmail.auth import verify_call

    with FakeGoogleCerts() as certs:
        os.environ.update(
            {
                "GMAIL_ADDON_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
                "GMAIL_ADDON_OAUTH_CLIENT_ID": CLIENT_ID,
                "GMAIL_ADDON_CERTS_URL": certs.certs_url,
            }
        )
        get_settings.cache_clear()
        app = create_app({"TESTING": True})
        w = world(app)
        url = BASE + "/homepage"
        system = certs.system_token(url, SERVICE_ACCOUNT)
        body = event(user_id_token=certs.user_token(w.rep, CLIENT_ID), system_token=system)
        header = f"Bearer {system}"
        thread = {"toRecipients": [w.prospect, "walter@acme.test"]}

        def poster(path: str, gmail: dict[str, Any] | None = None) -> Callable[[], object]:
            """One call as Google makes it, its tokens signed once (Google's cost, not ours)."""
            token = certs.system_token(BASE + path, SERVICE_ACCOUNT)
            payload = event(
                user_id_token=certs.user_token(w.rep, CLIENT_ID), system_token=token, gmail=gmail
            )
            headers = {"Authorization": f"Bearer {token}"}

            def post() -> object:
                response = client.post("/addons/gmail" + path, json=payload, headers=headers)
                assert response.status_code == 200 and "error" not in response.get_json()
                return response

            return post

        client = app.test_client()
        load = load_average()
        lines = []
        with app.test_request_context():
            lines.append(timed("verify", args.calls, lambda: verify_call(header, body, [url])))
        lines.append(timed("homepage", args.calls, poster("/homepage")))
        lines.append(timed("message", args.calls, poster("/message", thread)))
        lines.append(timed("compose", args.calls, poster("/compose")))
        before = rss_mib()
        started = time.perf_counter()
        import worker.sync.gmail_open_message  # noqa: F401 - what the lazy import costs

        lines.append(
            f"gmail api client  +{rss_mib() - before:.1f} MiB RSS, "
            f"{time.perf_counter() - started:.2f} s, once per web process"
        )
    for line in lines:
        print(line)
    print(f"calls {args.calls} each, {load_note(load)}")
    database.drop()


if __name__ == "__main__":
    main()
