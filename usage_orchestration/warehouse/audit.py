"""Audits of fetched provider rows before anything is written (pure functions: no I/O).

Every problem is an ``AuditError`` naming provider, account (resource), day and field, so an
operator can find the record. The database-side audits (duplicate keys with conflicting values,
days whose usage dropped since the last load) run in ``warehouse/provider_load.py`` over the
staged rows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date
from decimal import Decimal

# The warehouse's NUMERIC(38, 12) (26 digits before the point, 12 after) and its one rounding
# (``quantize``, re-exported for the writers) are defined in core/money.py.
from usage_orchestration.core.money import INTEGER_DIGITS, QUANTUM, SCALE
from usage_orchestration.core.money import quantize as quantize
from usage_orchestration.providers.records import UsageRow


class AuditError(ValueError):
    """Fetched data fails an audit; nothing was written. Names provider, account, day, field."""


@dataclass(frozen=True)
class DayDrop:
    """A day whose usage of one metric fell since the last load (``after`` None: no rows now)."""

    usage_date: date
    metric: str
    unit: str
    before: Decimal
    after: Decimal | None


def _where(row: UsageRow) -> str:
    return (
        f"{row.provider} account {row.resource_id} metric {row.metric} "
        f"day {row.usage_date.isoformat()}"
    )


def _check_number(row: UsageRow, field: str, value: Decimal | None, *, exact: bool) -> None:
    if value is None:
        return
    if not value.is_finite():
        raise AuditError(f"{_where(row)} field {field}: {value} is not a number")
    if value < 0:
        raise AuditError(f"{_where(row)} field {field}: negative value {value}")
    sign, digits, exponent = value.as_tuple()
    integer_digits = len(digits) + int(exponent) if digits != (0,) else 0
    if integer_digits > INTEGER_DIGITS:
        raise AuditError(
            f"{_where(row)} field {field}: {value} has more than {INTEGER_DIGITS} digits before "
            "the point (beyond the warehouse's precision)"
        )
    if exact and int(exponent) < -SCALE and value != value.quantize(QUANTUM):
        raise AuditError(
            f"{_where(row)} field {field}: {value} has more than {SCALE} decimals (beyond the "
            "warehouse's precision; it would be rounded)"
        )


def audit_row(row: UsageRow, days: set[date]) -> None:
    """One row: finite, non-negative numbers within the column's precision; inside the
    requested days; its day is the UTC day its charge period starts; the period is not empty."""
    # What the provider reported must be stored exactly; derived quantities are rounded to the
    # storage scale by the writer, so only their size is checked.
    _check_number(row, "raw_quantity", row.raw_quantity, exact=True)
    _check_number(row, "billed_cost", row.billed_cost, exact=True)
    _check_number(row, "consumed_quantity", row.consumed_quantity, exact=False)
    if row.usage_date not in days:
        raise AuditError(
            f"{_where(row)} field usage_date: outside the requested days (record "
            f"{row.source_key[:120]})"
        )
    start = row.charge_period_start.astimezone(UTC)
    end = row.charge_period_end.astimezone(UTC)
    if start.date() != row.usage_date:
        raise AuditError(
            f"{_where(row)} field charge_period_start: {start.isoformat()} is not on the row's "
            f"day (record {row.source_key[:120]})"
        )
    if end <= start:
        raise AuditError(
            f"{_where(row)} field charge_period_end: {end.isoformat()} is not after the period's "
            f"start {start.isoformat()}"
        )


def audit_rows(rows: Iterable[UsageRow], days: Collection[date]) -> int:
    """Audit every row; return how many were checked."""
    wanted = days if isinstance(days, set | frozenset) else set(days)
    n = 0
    for row in rows:
        audit_row(row, wanted)
        n += 1
    return n


def drops_beyond(
    before: dict[tuple[date, str, str], Decimal],
    after: dict[tuple[date, str, str], Decimal],
    days_with_rows_before: set[date],
    days_with_rows_after: set[date],
    max_drop_share: Decimal,
) -> list[DayDrop]:
    """Days that had rows and now have none, and (day, metric, unit) totals that fell by more than
    ``max_drop_share`` of what the last load held."""
    out: list[DayDrop] = []
    for d in sorted(days_with_rows_before - days_with_rows_after):
        for (day, metric, unit), was in sorted(before.items()):
            if day == d:
                out.append(DayDrop(d, metric, unit, was, None))
    for key, was in sorted(before.items()):
        day, metric, unit = key
        if day not in days_with_rows_after or was <= 0:
            continue
        now = after.get(key, Decimal(0))
        if now < was * (1 - max_drop_share):
            out.append(DayDrop(day, metric, unit, was, now))
    return out
