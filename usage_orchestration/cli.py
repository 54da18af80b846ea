"""``usage-orchestration``: the sandbox, the demo, and operator commands.

Each command module exposes ``register(subparsers)`` that adds its parsers with
``set_defaults(func=...)``. The CLI is the one place that offers the sandbox's commands (``demo``,
``sandbox``) beside the operator commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from usage_orchestration.alerts import cli as alerts_cli
from usage_orchestration.sandbox import cli as sandbox_cli
from usage_orchestration.sandbox import demo

COMMAND_MODULES = (sandbox_cli, demo, alerts_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usage-orchestration", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # operator-facing: one clear line, not a traceback
        from usage_orchestration.settings import SettingsError

        if isinstance(exc, SettingsError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
