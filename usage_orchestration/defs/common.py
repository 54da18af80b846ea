"""Small helpers shared by the assets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from dagster import AssetExecutionContext, MetadataValue


def partition_days(context: AssetExecutionContext) -> list[date]:
    """Every day of the run's partition range (a single-run backfill covers many days: each one
    must be handled, not only the window's start)."""
    return [date.fromisoformat(k) for k in context.partition_keys]


def load_id(context: AssetExecutionContext) -> str:
    return context.run.run_id


def day_span(days: Sequence[date]) -> str:
    if not days:
        return "no days"
    lo, hi = min(days), max(days)
    return lo.isoformat() if lo == hi else f"{lo.isoformat()}..{hi.isoformat()} ({len(days)} days)"


def md_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], limit: int = 20
) -> MetadataValue:
    """A markdown table for the Dagster UI (first ``limit`` rows)."""
    rows = list(rows)
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| " + " | ".join(_cell(r.get(c)) for c in columns) + " |\n" for r in rows[:limit]
    )
    more = f"\n… and {len(rows) - limit} more" if len(rows) > limit else ""
    return MetadataValue.md(head + body + more if rows else "_none_")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.4f}"
    return str(v).replace("|", "\\|")
