"""``python -m tests.fakes.salesforce --port N --state-dir D``: the fake as a process.

Writes ``D/ca.pem`` (trust it with ``REQUESTS_CA_BUNDLE``) and ``D/server.json``
(``instance_url``, ``port``, ``ca_bundle``, ``pid``) once it listens, then
serves until SIGTERM/SIGINT. Steer it through ``/__fake__/`` (see
``server.AdminClient``).
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from .server import FakeSalesforce
from .store import OrgConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.salesforce")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state-dir", required=True, help="where ca.pem and server.json go")
    parser.add_argument("--api-max", type=int, default=OrgConfig.api_max)
    parser.add_argument("--rotate-refresh-tokens", action="store_true")
    parser.add_argument(
        "--no-ext-id-field",
        action="store_true",
        help="play an org without the Sightline package's external id field",
    )
    args = parser.parse_args(argv)
    config = OrgConfig(
        api_max=args.api_max,
        rotate_refresh_tokens=args.rotate_refresh_tokens,
        ext_id_field=not args.no_ext_id_field,
    )
    fake = FakeSalesforce(host=args.host, port=args.port, state_dir=args.state_dir, config=config)

    def shutdown(_signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return: never call it on that thread.
        threading.Thread(target=fake.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(
        f"fake salesforce listening instance_url={fake.instance_url} ca_bundle={fake.ca_bundle}",
        flush=True,
    )
    fake.serve_forever()


if __name__ == "__main__":
    main()
