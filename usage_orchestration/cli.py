"""``usage-orchestration``: the sandbox, the demo, and operator commands.

Each command module exposes ``register(subparsers)`` that adds its parsers with
``set_defaults(func=...)``. The CLI is the one place that offers the sandbox's commands (``demo``,
``sandbox``) beside the operator commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from usage_orchestration.alerts import cli as alerts_cli
from usage_orchestration.sandbox import cli as sandbox_cli
from usage_orchestration.sandbox import demo
from usage_orchestration.warehouse import cli as db_cli

COMMAND_MODULES = (sandbox_cli, demo, alerts_cli, db_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usage-orchestration", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


# Commands that run Dagster on an instance: without DAGSTER_HOME they would use a throwaway one.
INSTANCE_COMMANDS = frozenset({"demo"})


def _instance_note(command: str) -> None:
    if command in INSTANCE_COMMANDS and not os.environ.get("DAGSTER_HOME"):
        print(
            f"note: DAGSTER_HOME is not set: `{command}` keeps its runs in ./.dagster (not your "
            "instance); set DAGSTER_HOME to the instance's directory to use it",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _instance_note(args.command)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # operator-facing: one clear line, not a traceback
        from usage_orchestration.sandbox.server import PortTakenError
        from usage_orchestration.settings import SettingsError
        from usage_orchestration.settings.secrets import redact

        if isinstance(exc, SettingsError | alerts_cli.OperatorError):
            print(f"error: {redact(str(exc))}", file=sys.stderr)
            return 2
        if isinstance(exc, PortTakenError):
            print(f"error: sandbox: {exc.strerror}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
