"""``usage-orchestration sandbox``: serve every simulated API on loopback until interrupted.

``--port 0`` picks a free port; the first line printed is ``sandbox listening on <url>`` so a
parent process (the end-to-end test, the demo) can read the address. A port already taken (by
another sandbox or anything else) is refused with exit status 1, never shared.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from usage_orchestration.sandbox.core import Sandbox
from usage_orchestration.sandbox.server import PortTakenError, SandboxServer


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox", help="serve the provider, ledger, PagerDuty and Slack sandboxes on loopback"
    )
    p.add_argument("--host", default=None, help="loopback address (default: settings sandbox.host)")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="port, 0 for any free one (default: settings sandbox.port)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the deterministic data (default: settings sandbox.seed)",
    )
    p.add_argument(
        "--ledger-url",
        default=None,
        help="SQLAlchemy URL of the ledger the Usage Reporting API serves",
    )
    p.add_argument(
        "--check-port",
        action="store_true",
        help="only check that the port is free (exit 1 naming who holds it), then exit",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usage_orchestration.settings import load_settings

    settings = load_settings()
    host = args.host or settings.sandbox.host
    port = settings.sandbox.port if args.port is None else args.port
    seed = settings.sandbox.seed if args.seed is None else args.seed
    ledger_url = args.ledger_url or settings.ledger.database_url
    try:
        server = SandboxServer(Sandbox(seed=seed, ledger_url=ledger_url), host=host, port=port)
    except PortTakenError as exc:
        print(f"error: sandbox: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    if args.check_port:
        server.httpd.server_close()
        print(f"sandbox: {server.url} is free", flush=True)
        return 0
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    print(f"sandbox listening on {server.url} (seed {seed})", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        print("sandbox stopped", file=sys.stderr, flush=True)
    return 0
