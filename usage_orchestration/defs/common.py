"""Small helpers shared by the assets: asset keys, partition days, run ids, metadata tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import Boolean, Date, DateTime, Integer, String, Table, Text

from usage_orchestration.core.money import CONTEXT, credits_metadata
from usage_orchestration.defs.partitions import (
    building_settings,
    current_partitions,
    daily_partitions_of,
)
from usage_orchestration.providers.registry import ProviderSpec
from usage_orchestration.settings import UsageSettings
from usage_orchestration.settings.alerts import AlertSettings
from usage_orchestration.warehouse.schema import metadata as warehouse_metadata
from usage_orchestration.warehouse.types import ExactDecimal

_SHOWN = Decimal("0.000001")
# The `provider` tag of an asset fed by every enabled provider, or by none (the ledger side).
ALL_PROVIDERS = "all"

CREDIT_LEDGER = dg.AssetKey("credit_ledger")  # external: the platform's ledger, read only
LEDGER_DAILY_USAGE = dg.AssetKey("ledger_daily_usage")
RECONCILIATION = dg.AssetKey("usage_reconciliation")
BUDGET_STATUS = dg.AssetKey("budget_status")
PROVIDER_CAP_STATUS = dg.AssetKey("provider_cap_status")


def provider_key(spec: ProviderSpec) -> dg.AssetKey:
    """The asset of a provider's usage (``provider_usage`` rows of that provider)."""
    return dg.AssetKey(spec.asset_key)


def provider_deps(
    specs: Iterable[ProviderSpec], partition_mapping: dg.PartitionMapping | None = None
) -> list[dg.AssetDep]:
    """Deps on the usage assets of ``specs`` (the default mapping: the same day)."""
    return [dg.AssetDep(provider_key(s), partition_mapping=partition_mapping) for s in specs]


def files_dir(settings: UsageSettings, name: str) -> Path:
    """Where an asset's files go (``<state_dir>/<name>``): beside the other shared files of the
    deployment."""
    return Path(settings.state_dir) / name


def owners(settings: UsageSettings | None = None) -> list[str]:
    """Who answers for the assets in the catalog: ``alerts.owner``, the owner every page names
    (of ``settings``, else of the definitions being built)."""
    chosen = settings or building_settings()
    return [chosen.alerts.owner if chosen else AlertSettings.model_fields["owner"].default]


def daily_asset(
    *,
    kinds: set[str],
    group: str,
    provider: str = ALL_PROVIDERS,
    settings: UsageSettings | None = None,
    table: Table | str | None = None,
    **asset_args: Any,
) -> Callable[[Callable[..., Any]], Any]:
    """``@asset`` with what every asset of the pipeline shares: the one daily partitioning
    (from ``settings``, else from those of the definitions being built), a backfill range as
    one run (each asset handles every day of the range and replaces them in one transaction),
    the owners and the ``provider`` tag. ``table``: the warehouse table the asset writes, whose
    columns the catalog then shows (``dagster/column_schema``), or its name."""
    if isinstance(table, str):
        table = warehouse_metadata.tables[table]
    if table is not None:
        asset_args["metadata"] = {
            **asset_args.get("metadata", {}),
            **column_schema_metadata(table),
        }
    return dg.asset(
        partitions_def=daily_partitions_of(settings) if settings else current_partitions(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds=kinds,
        owners=owners(settings),
        tags={"provider": provider},
        group_name=group,
        **asset_args,
    )


def column_schema(table: Table) -> dg.TableSchema:
    """The catalog's column schema of a warehouse table, read from its SQLAlchemy definition
    (the one place the columns are declared): name, type, nullability and the primary key."""
    pk = [c.name for c in table.primary_key.columns]
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                _sql_type(c.type),
                constraints=dg.TableColumnConstraints(nullable=bool(c.nullable)),
            )
            for c in table.columns
        ],
        constraints=dg.TableConstraints(other=[f"primary key ({', '.join(pk)})"]) if pk else None,
    )


def column_schema_metadata(table: Table) -> dict[str, Any]:
    """Definition metadata for an asset writing ``table``: its column schema and its name."""
    return {
        "dagster/column_schema": column_schema(table),
        "dagster/table_name": table.name,
    }


# The catalog's name of each column type, most specific first (Text is a String).
_SQL_TYPES: tuple[tuple[type, str], ...] = (
    (ExactDecimal, "decimal(38,12)"),
    (DateTime, "datetime"),
    (Date, "date"),
    (Boolean, "bool"),
    (Integer, "int"),
    (Text, "text"),
)


def _sql_type(t: Any) -> str:
    for sql_type, name in _SQL_TYPES:
        if isinstance(t, sql_type):
            return name
    if isinstance(t, String):
        return f"string({t.length})" if t.length else "string"
    return str(t).lower()


# A range run over more than this many days (a year's backfill, not a normal daily run or a
# month's) keeps its table previews on its last day only: Dagster stores every partition's
# metadata, and a table per asset per day was most of a year's event volume.
PREVIEW_EVERY_DAY_MAX_DAYS = 31


def preview_days(days: Sequence[date]) -> set[date]:
    """The days of a run whose partitions carry table previews (``MetadataValue.table``): every
    day of a run of up to ``PREVIEW_EVERY_DAY_MAX_DAYS`` days, the last day of a longer one."""
    if len(days) <= PREVIEW_EVERY_DAY_MAX_DAYS:
        return set(days)
    return {max(days)}


def preview_elsewhere(last: date) -> dg.MetadataValue:
    """What a day without its preview shows in the table's place: where the preview is."""
    return dg.MetadataValue.text(
        f"not kept for this day: a range run over {PREVIEW_EVERY_DAY_MAX_DAYS} days keeps table "
        f"previews on its last day only ({last.isoformat()}); the warehouse table has every row"
    )


def without_previews(meta: Mapping[str, Any], last: date) -> dict[str, Any]:
    """``meta`` with each table preview replaced by ``preview_elsewhere(last)`` (every number
    and text kept)."""
    note = preview_elsewhere(last)
    return {k: note if isinstance(v, dg.TableMetadataValue) else v for k, v in meta.items()}


def record_days(
    context: dg.AssetExecutionContext,
    figures: Callable[[date], Mapping[str, Any]],
) -> None:
    """Give every partition of the run its own metadata: ``figures(day)`` for each day.

    A single-run backfill records one materialization per partition; metadata returned in the
    ``MaterializeResult`` goes to all of them alike (so every day would show the range's
    totals and plots over time would be flat). Partition-scoped metadata
    (``add_asset_metadata(partition_key=...)``) is merged over it, day by day, so keep only
    what is true of every day in the result and the figures here.

    Every figure is kept on every day (the UI's plots over time); table previews only on the
    days of ``preview_days`` (a long range: its last day), the others say where it is."""
    days = partition_days(context)
    shown = preview_days(days)
    last = max(days) if days else None
    for day in days:
        meta = dict(figures(day))
        if day not in shown and last is not None:
            meta = without_previews(meta, last)
        context.add_asset_metadata(meta, partition_key=day.isoformat())


def run_metadata(context: dg.AssetExecutionContext, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``MaterializeResult`` metadata of a run whose ``meta`` is true of the whole run.

    Dagster copies it into every partition's materialization; on a range with previews on its
    last day only (``preview_days``), its tables go to that day alone, like ``record_days``'
    (the other days keep the key, saying where the table is)."""
    days = partition_days(context)
    if len(preview_days(days)) == len(days):
        return dict(meta)
    last = max(days)
    tables = {k: v for k, v in meta.items() if isinstance(v, dg.TableMetadataValue)}
    if tables:
        context.add_asset_metadata(tables, partition_key=last.isoformat())
    return without_previews(meta, last)


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """Every day of the run's partition range (a single-run backfill covers many days: each one
    must be handled, not only the window's start)."""
    return [date.fromisoformat(k) for k in context.partition_keys]


def load_id(context: dg.AssetExecutionContext) -> str:
    return context.run.run_id


def day_span(days: Sequence[date]) -> str:
    if not days:
        return "no days"
    lo, hi = min(days), max(days)
    return lo.isoformat() if lo == hi else f"{lo.isoformat()}..{hi.isoformat()} ({len(days)} days)"


# Table columns holding credits (shown at 2 decimals); every other decimal shows 6 at most.
_MONEY_WORDS = ("credits", "cost", "budget", "overrun", "forecast_month_end", "pool")


def is_money_column(name: str) -> bool:
    return any(w in name for w in _MONEY_WORDS) and "percent" not in name and "pct" not in name


def _cell(v: Any, money: bool = False) -> str | int | float | bool | None:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, Decimal):
        # people read rounded figures; storage keeps the exact ones (core/money.py)
        return credits_metadata(v) if money else float(v.quantize(_SHOWN, context=CONTEXT))
    if isinstance(v, float):
        return round(v, 2) if money else v
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
) -> dg.MetadataValue:
    """A table for the Dagster UI (the first ``limit`` rows), typed per column."""
    shown = list(rows)[:limit]
    schema = dg.TableSchema(
        columns=[dg.TableColumn(c, _column_type([r.get(c) for r in shown])) for c in columns]
    )
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({c: _cell(r.get(c), is_money_column(c)) for c in columns}) for r in shown
        ],
        schema=schema,
    )


def slug(text: str) -> str:
    """A metadata key fragment: lower-case letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()
