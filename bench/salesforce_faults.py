"""The Salesforce fault run at full size: 5,000 activities through 10 % faults and killed workers.

Reproduce: `make bench-salesforce-faults`
(or `python -m bench.salesforce_faults --activities 5000`).

The same run as tests/integration/test_salesforce_faults.py (`fault_run`),
bigger: a fresh PostgreSQL database and Redis database from the test suite's
service helpers, the TLS fake org in this process, two Procfile `worker`
processes and `cron`. Prints what happened and whether every promise held
(each activity once, dead letters exactly the blocked ones, engagement counts
exact); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet

from bench.machine import load_average, load_note

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--activities", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    args = parser.parse_args()
    load = load_average()  # before this bench's own work: how busy the machine already was

    from tests.conftest import service_environment
    from tests.fakes.salesforce import FakeSalesforce
    from tests.integration.test_salesforce_faults import FAST, fault_run
    from tests.services import postgres
    from tests.services import redis as test_redis

    database = postgres.TemporaryDatabase(postgres.find_server()).create()
    server_url = test_redis.find_server()
    private = None
    if server_url is None:
        private = test_redis.PrivateRedisServer().start()
        claimed = test_redis.ClaimedDatabase(private.url(db=9), lock_fd=None)
    else:
        claimed = test_redis.claim_database(server_url)
    fake = FakeSalesforce().start()
    var_dir = Path(tempfile.mkdtemp(prefix="sightline-bench-faults-"))
    environment = {
        **service_environment(database.url, claimed.url, var_dir),
        "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "SALESFORCE_LOGIN_URL": fake.instance_url,
        "SALESFORCE_CLIENT_ID": fake.oauth["client_id"],
        "SALESFORCE_CLIENT_SECRET": fake.oauth["client_secret"],
        "SALESFORCE_USERNAME": fake.oauth["username"],
        "SALESFORCE_PASSWORD": fake.oauth["password"],
        "SALESFORCE_SECURITY_TOKEN": fake.oauth["security_token"],
        "REQUESTS_CA_BUNDLE": fake.combined_ca_bundle(),
    }
    os.environ.update({**environment, **FAST, "LOG_LEVEL": "WARNING"})
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    try:
        result = fault_run(
            fake,
            environment,
            var_dir / "logs",
            activities=args.activities,
            seed=args.seed,
            drain_timeout=args.drain_timeout,
        )
    finally:
        fake.stop()
        claimed.release()
        database.drop()
        if private is not None:
            private.stop()

    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(result.faults.items()))
    print(f"activities: {result.activities} in {result.seconds:.0f} s (2 workers + cron)")
    print(f"workers SIGKILLed and restarted: {result.kills}")
    print(f"faults injected: {sum(result.faults.values())} ({faults})")
    print(f"API calls charged by the org: {result.api_calls}")
    print(f"Tasks in the org: {result.tasks}")
    print(f"dead letters: {result.dead_letters} (blocked by the validation rule: {result.blocked})")
    print(f"broken promises: {len(result.problems)}")
    for problem in result.problems[:20]:
        print(f"  {problem}")
    verdict = "held" if not result.problems else "BROKEN"
    print(
        f"salesforce faults: {result.activities} activities, every promise {verdict}, "
        f"{load_note(load)}"
    )


if __name__ == "__main__":
    main()
