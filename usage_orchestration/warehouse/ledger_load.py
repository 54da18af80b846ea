"""Writing the ledger's daily aggregate into the warehouse (``ledger_daily_usage``). No Dagster."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from usage_orchestration.ledger.base import LedgerDailyUsage, LedgerReader, holds_events
from usage_orchestration.warehouse.schema import ledger_daily_usage
from usage_orchestration.warehouse.store import Warehouse


def ledger_record(u: LedgerDailyUsage, load_id: str) -> dict[str, Any]:
    return {
        "usage_date": u.usage_date,
        "entity_id": u.entity_id,
        "entity_type": u.entity_type,
        "resource_type": u.resource_type,
        "unit": u.unit or "",  # "" = unknown: the HTTP API reports credits only
        "quantity": u.quantity,
        "credits": u.credits,
        "events": u.events,
        "load_id": load_id,
    }


# Ledger coverage of a day: "complete" when the ledger holds events that day, "unavailable" when
# it holds none at all (the platform always records some usage: an empty day is a ledger or
# License Manager sync problem). Reconciliation applies the same rule (``holds_events``) to the
# ledger_daily_usage rows of the day (core/reconcile.py → ledger_unavailable).
LEDGER_COMPLETE = "complete"
LEDGER_UNAVAILABLE = "unavailable"


def ledger_coverage(day_usage: Sequence[LedgerDailyUsage]) -> str:
    return LEDGER_COMPLETE if holds_events(day_usage) else LEDGER_UNAVAILABLE


def usage_by_day(
    usage: Sequence[LedgerDailyUsage], days: Sequence[date]
) -> dict[date, list[LedgerDailyUsage]]:
    """``usage`` per day, every day of ``days`` present (an empty list for a day without rows)."""
    out: dict[date, list[LedgerDailyUsage]] = {d: [] for d in days}
    for u in usage:
        out.setdefault(u.usage_date, []).append(u)
    return out


def store_ledger_days(
    reader: LedgerReader, warehouse: Warehouse, days: Sequence[date], load_id: str
) -> list[LedgerDailyUsage]:
    """Read every day of ``days`` from the ledger (aggregated there) and replace those days of
    ``ledger_daily_usage`` in one transaction. Returns what was written."""
    usage: list[LedgerDailyUsage] = []
    for day in days:
        usage += reader.daily_usage(day)
    records = [ledger_record(u, load_id) for u in usage]
    warehouse.ensure_schema()
    with warehouse.engine.begin() as conn:
        warehouse.replace_days(ledger_daily_usage, days, records, conn=conn)
    return usage
