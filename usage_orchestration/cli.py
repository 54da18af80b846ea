"""``usage-orchestration``: the sandbox, the demo, and operator commands.

Other modules add sub-commands through ``COMMAND_MODULES``: each exposes
``register(subparsers)`` that adds its parsers with ``set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "usage_orchestration.sandbox.cli",
    "usage_orchestration.demo",
    "usage_orchestration.alerts.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usage-orchestration", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
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
