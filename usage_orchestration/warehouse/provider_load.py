"""Writing a provider fetch into the warehouse: mapped rows and day coverage, atomically."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select

from usage_orchestration.core.mapping import MappingError, resolve_mapping, to_ledger_quantity
from usage_orchestration.providers.records import FetchResult, UsageRow
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse


def _naive_utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def usage_record(
    row: UsageRow, settings: UsageSettings, load_id: str, fetched_at: datetime
) -> dict[str, Any]:
    """A provider_usage row: the normalized usage plus its mapping and list cost (credits)."""
    mapping = resolve_mapping(
        settings.mappings, row.provider, row.resource_id, row.metric, row.sub_account_id
    )
    list_cost = None
    if mapping is not None:
        try:
            qty = to_ledger_quantity(
                settings.rate_card, mapping.resource_type, row.consumed_quantity, row.consumed_unit
            )
        except MappingError as exc:
            raise MappingError(
                f"{row.provider} {row.resource_id} {row.metric} on {row.usage_date}: {exc}"
            ) from None
        list_cost = qty * settings.rate_card[mapping.resource_type].credits_per_unit
    return {
        **row.model_dump(),
        "charge_period_start": _naive_utc(row.charge_period_start),
        "charge_period_end": _naive_utc(row.charge_period_end),
        "list_cost": list_cost,
        "entity_id": mapping.entity_id if mapping else None,
        "entity_type": mapping.entity_type if mapping else None,
        "resource_type": mapping.resource_type if mapping else None,
        "load_id": load_id,
        "fetched_at": _naive_utc(fetched_at),
    }


def store_fetch(
    warehouse: Warehouse,
    provider: str,
    days: Sequence[date],
    result: FetchResult,
    settings: UsageSettings,
    load_id: str,
) -> int:
    """Replace ``provider``'s rows and coverage for ``days`` in one transaction."""
    fetched_at = datetime.now(UTC)
    records = [usage_record(r, settings, load_id, fetched_at) for r in result.rows]
    keys = [(r["usage_date"], r["source_key"]) for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{provider}: duplicate source_key within a day; refusing to write")
    coverage = [
        {**c.model_dump(), "load_id": load_id, "fetched_at": _naive_utc(fetched_at)}
        for c in result.coverage
    ]
    warehouse.ensure_schema()
    with warehouse.engine.begin() as conn:
        n = warehouse.replace_days(
            provider_usage, days, records, match={"provider": provider}, conn=conn
        )
        warehouse.replace_days(
            provider_coverage, days, coverage, match={"provider": provider}, conn=conn
        )
    return n


def usage_totals(warehouse: Warehouse, provider: str, days: Sequence[date]) -> list[dict[str, Any]]:
    """Per metric and unit: rows, quantity and billed cost over ``days``, aggregated in SQL."""
    t = provider_usage
    stmt = (
        select(
            t.c.metric,
            t.c.consumed_unit,
            func.count().label("rows"),
            func.sum(t.c.consumed_quantity).label("quantity"),
            func.sum(t.c.billed_cost).label("billed_cost"),
            func.sum(func.coalesce(t.c.list_cost, 0)).label("list_cost"),
            func.count(t.c.entity_id).label("mapped_rows"),
        )
        .where(t.c.provider == provider, t.c.usage_date.in_(list(days)))
        .group_by(t.c.metric, t.c.consumed_unit)
        .order_by(t.c.metric)
    )
    with warehouse.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]
