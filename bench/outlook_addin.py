"""What the Outlook add-in costs: its bearer per API call, the manifest, the pane's bytes.

Reproduce: `python -m bench.outlook_addin` (`--calls 2000`).

On a fresh PostgreSQL database (the test suite's helper), migrated to head, with
one user: `GET /api/v1/outlook/session` through the Flask app (test client, no
network), `--calls` times with an add-in token (signature, age, one Redis EXISTS
for revocation, the user by primary key) and as many with an API token (SHA-256,
one indexed lookup, its once-a-minute touch), to show what the add-in's bearer
adds per call; then the manifest's render time and size, and the bytes a pane
loads from us (HTML, our scripts and stylesheets; Office.js is Microsoft's).
Prints medians; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent
PANE_ASSETS = (
    "app.css",
    "addons/pane.css",
    "addons/office-adapter.js",
    "addons/pane.js",
    "addons/read.js",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    load = load_average()

    from tests.services import postgres

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": tempfile.mkdtemp(prefix="sightline-bench-"),
            "DATABASE_URL": database.url,
            "REDIS_URL": "redis://127.0.0.1:6379/15",
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "PUBLIC_BASE_URL": "https://sightline.example.com",
            "LOG_LEVEL": "WARNING",
        }
    )
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")

    from core.db import session_scope
    from core.models import ApiToken, Team, User
    from core.tokens import display_prefix, hash_api_token, new_api_token
    from web import create_app
    from web.addons.outlook import tokens

    try:
        with session_scope() as session:
            team = Team(name="Bench")
            session.add(team)
            session.flush()
            user = User(team_id=team.id, email="rep@bench.test")
            session.add(user)
            session.flush()
            api_token = new_api_token()
            session.add(
                ApiToken(
                    user_id=user.id,
                    token_hash=hash_api_token(api_token),
                    prefix=display_prefix(api_token),
                )
            )
            addin_token = tokens.issue(user)
        client = create_app({"TESTING": True}).test_client()

        def per_call_ms(token: str) -> float:
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get("/api/v1/outlook/session", headers=headers).status_code == 200
            times = []
            for _ in range(args.calls):
                started = time.perf_counter()
                client.get("/api/v1/outlook/session", headers=headers)
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000

        addin_ms = per_call_ms(addin_token)
        api_ms = per_call_ms(api_token)
        manifest_times = []
        for _ in range(200):
            started = time.perf_counter()
            manifest = client.get("/addons/outlook/manifest.xml").get_data()
            manifest_times.append(time.perf_counter() - started)
        pane = len(client.get("/addons/outlook/read").get_data())
        assets = sum(len(client.get(f"/static/{name}").get_data()) for name in PANE_ASSETS)
    finally:
        database.drop()

    print(f"GET /api/v1/outlook/session, median of {args.calls} calls (Flask test client):")
    print(f"  add-in token: {addin_ms:.2f} ms   API token: {api_ms:.2f} ms")
    print(
        f"manifest: {len(manifest):,} bytes, "
        f"{statistics.median(manifest_times) * 1000:.2f} ms to render (median of 200)"
    )
    print(f"read pane from us: {pane:,} bytes of HTML + {assets:,} bytes of CSS and scripts")
    print(load_note(load))


if __name__ == "__main__":
    main()
