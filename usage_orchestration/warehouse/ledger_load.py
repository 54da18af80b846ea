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


class LedgerAnswerError(ValueError):
    """The ledger's answer for a day cannot be stored as it stands (nothing was written)."""


def _once_per_key(day_usage: list[LedgerDailyUsage], day: date) -> list[LedgerDailyUsage]:
    """``day_usage``, refused when one (entity, resource type, unit) comes twice (two entity
    types under one id, or one aggregate repeated): summing or picking one would misstate the
    entity's credits, and the table's key would refuse it with no day or entity named."""
    seen: dict[tuple[str, str, str], LedgerDailyUsage] = {}
    for u in day_usage:
        key = (u.entity_id, u.resource_type, u.unit or "")
        if key in seen:
            first = seen[key]
            raise LedgerAnswerError(
                f"ledger day {day.isoformat()}: entity {u.entity_id} resource type "
                f"{u.resource_type} is reported twice (entity types {first.entity_type!r} and "
                f"{u.entity_type!r}, credits {first.credits} and {u.credits}); nothing was written"
            )
        seen[key] = u
    return day_usage


def store_ledger_days(
    reader: LedgerReader, warehouse: Warehouse, days: Sequence[date], load_id: str
) -> list[LedgerDailyUsage]:
    """Read every day of ``days`` from the ledger (aggregated there) and replace those days of
    ``ledger_daily_usage`` in one transaction. Returns what was written."""
    usage: list[LedgerDailyUsage] = []
    for day in days:
        usage += _once_per_key(reader.daily_usage(day), day)
    records = [ledger_record(u, load_id) for u in usage]
    warehouse.ensure_schema()
    with warehouse.engine.begin() as conn:
        warehouse.replace_days(ledger_daily_usage, days, records, conn=conn)
    return usage
