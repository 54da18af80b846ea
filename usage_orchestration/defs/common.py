"""Small helpers shared by the assets: partition days, run ids, metadata tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from usage_orchestration.defs.partitions import current_partitions, daily_partitions_of
from usage_orchestration.settings import UsageSettings

# Who answers for the assets in the catalog (Dagster owners: an email or "team:<name>").
OWNERS = ["team:finops"]
# The `provider` tag of an asset fed by every enabled provider, or by none (the ledger side).
ALL_PROVIDERS = "all"

CREDIT_LEDGER = AssetKey("credit_ledger")  # external: the platform's ledger, read only
LEDGER_DAILY_USAGE = AssetKey("ledger_daily_usage")
RECONCILIATION = AssetKey("usage_reconciliation")


def daily_asset(
    *,
    kinds: set[str],
    group: str,
    provider: str = ALL_PROVIDERS,
    settings: UsageSettings | None = None,
    **asset_args: Any,
) -> Callable[[Callable[..., Any]], Any]:
    """``@asset`` with what every asset of the pipeline shares: the one daily partitioning
    (from ``settings``, else from those of the definitions being built), a backfill range as
    one run (each asset handles every day of the range and replaces them in one transaction),
    the owners and the ``provider`` tag."""
    return asset(
        partitions_def=daily_partitions_of(settings) if settings else current_partitions(),
        backfill_policy=BackfillPolicy.single_run(),
        kinds=kinds,
        owners=OWNERS,
        tags={"provider": provider},
        group_name=group,
        **asset_args,
    )


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


def _cell(v: Any) -> str | int | float | bool | None:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, Decimal | float):
        return float(v)
    if isinstance(v, date | datetime):
        return v.isoformat()
    return str(v)


def _column_type(values: list[Any]) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds and kinds <= {bool}:
        return "bool"
    if kinds and kinds <= {int}:
        return "int"
    if kinds and kinds <= {int, float, Decimal}:
        return "float"
    return "string"


def table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], limit: int = 20
) -> MetadataValue:
    """A table for the Dagster UI (the first ``limit`` rows), typed per column."""
    shown = list(rows)[:limit]
    schema = TableSchema(
        columns=[TableColumn(c, _column_type([r.get(c) for r in shown])) for c in columns]
    )
    return MetadataValue.table(
        records=[TableRecord({c: _cell(r.get(c)) for c in columns}) for r in shown],
        schema=schema,
    )


def slug(text: str) -> str:
    """A metadata key fragment: lower-case letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()
