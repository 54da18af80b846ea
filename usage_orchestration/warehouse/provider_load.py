"""Writing a provider fetch into the warehouse: write, audit, publish (mapped rows and day
coverage, all days of a load in one transaction)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from usage_orchestration.core.dates import naive_utc
from usage_orchestration.core.mapping import MappingError, MappingResolver, to_ledger_quantity
from usage_orchestration.providers.records import DayCoverage, FetchResult, FetchStream, UsageRow
from usage_orchestration.settings import UsageSettings
from usage_orchestration.warehouse.audit import (
    AuditError,
    DayDrop,
    audit_rows,
    drops_beyond,
    quantize,
)
from usage_orchestration.warehouse.schema import (
    provider_coverage,
    provider_usage,
    provider_usage_staging,
)
from usage_orchestration.warehouse.store import Warehouse, insert_rows, lock_replace
from usage_orchestration.warehouse.types import exact_sum

# A run tag an operator sets to accept usage that vanished or fell since the last load.
ALLOW_DROP_TAG = "usage/allow_drop"
_IN_CHUNK = 500


def usage_record(
    row: UsageRow,
    settings: UsageSettings,
    load_id: str,
    fetched_at: datetime,
    mappings: MappingResolver | None = None,
) -> dict[str, Any]:
    """A provider_usage row: the normalized usage plus its mapping and list cost (credits).
    ``mappings``: the resolver to reuse over a load's rows (else the rules are read for this
    row alone)."""
    resolve = mappings or MappingResolver(settings.mappings)
    mapping = resolve(row.provider, row.resource_id, row.metric, row.sub_account_id)
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
        list_cost = quantize(qty * settings.rate_card[mapping.resource_type].credits_per_unit)
    return {
        **row.model_dump(),
        "consumed_quantity": quantize(row.consumed_quantity),
        "charge_period_start": naive_utc(row.charge_period_start),
        "charge_period_end": naive_utc(row.charge_period_end),
        "list_cost": list_cost,
        "entity_id": mapping.entity_id if mapping else None,
        "entity_type": mapping.entity_type if mapping else None,
        "resource_type": mapping.resource_type if mapping else None,
        "load_id": load_id,
        "fetched_at": naive_utc(fetched_at),
    }


@dataclass
class LoadReport:
    """What a provider load wrote and what its audits saw (for the asset's metadata)."""

    rows_written: int = 0
    rows_audited: int = 0
    duplicates_dropped: int = 0  # identical copies of one record
    days_compared: int = 0  # days that held rows before this load
    drops: list[DayDrop] = field(default_factory=list)  # accepted only with allow_drop
    drop_overridden: bool = False
    # days the provider could not answer for now (every account unavailable) that a previous
    # load holds complete: kept as they were instead of being replaced by nothing
    days_kept: list[date] = field(default_factory=list)
    abandoned_rows_cleared: int = 0  # staged by loads that died before cleaning up
    coverage: list[DayCoverage] = field(default_factory=list)  # what the fetch covered, per day


class DropAuditError(AuditError):
    """Usage vanished or fell sharply on days that held it: nothing was written."""

    def __init__(self, message: str, drops: list[DayDrop]) -> None:
        super().__init__(message)
        self.drops = drops


def store_fetch(
    warehouse: Warehouse,
    provider: str,
    days: Sequence[date],
    result: FetchResult | FetchStream,
    settings: UsageSettings,
    load_id: str,
    *,
    allow_drop: bool = False,
    live_loads: Collection[str] | None = None,
) -> LoadReport:
    """Write, audit, publish: audit every fetched row and stage it as it arrives (``result`` is
    a whole fetch or a stream of chunks: a range is staged page by page, so memory holds one
    chunk), audit the staged rows in SQL (conflicting duplicates; days whose usage vanished or
    fell by more than ``settings.audit.max_drop_share`` since the last load, unless
    ``allow_drop``), then replace ``provider``'s rows and coverage for ``days`` in one
    transaction. A failed audit raises ``AuditError`` and leaves every table as it was (staged
    rows are discarded). With ``live_loads`` (the load ids of the runs still in progress), rows
    that loads no longer running left staged (a killed run) are cleared first."""
    # Long on purpose: staging, the audits and the publishing transaction are one sequence
    # whose order is what keeps a killed or failed load from publishing half a range.
    stream = FetchStream.of(result) if isinstance(result, FetchResult) else result
    report = LoadReport()
    fetched_at = datetime.now(UTC)
    stage_id = load_id[:64]
    wanted = set(days)
    warehouse.ensure_schema()
    _discard_stage(warehouse, provider, stage_id)
    if live_loads is not None:
        report.abandoned_rows_cleared = _discard_abandoned(
            warehouse, provider, {stage_id, *(x[:64] for x in live_loads)}
        )
    try:
        coverage: list[DayCoverage] = []
        row_days: set[date] = set()
        for chunk in stream:
            report.rows_audited += audit_rows(chunk.rows, wanted)
            row_days.update(r.usage_date for r in chunk.rows)
            _stage(warehouse, provider, stage_id, chunk.rows, settings, load_id, fetched_at)
            coverage += chunk.coverage
        report.coverage = coverage
        bad = [c for c in coverage if c.usage_date not in wanted]
        if bad:
            raise AuditError(
                f"{provider} account {bad[0].account_id} day {bad[0].usage_date} field "
                "usage_date: coverage outside the requested days"
            )
        records = [
            {**asdict(c), "load_id": load_id, "fetched_at": naive_utc(fetched_at)} for c in coverage
        ]
        with warehouse.engine.begin() as conn:
            lock_replace(conn, provider_usage.name, {"provider": provider})
            report.days_kept = _days_to_keep(conn, provider, coverage, row_days)
            replaced = sorted(wanted - set(report.days_kept))
            _audit_staged(conn, provider, stage_id, replaced, settings, allow_drop, report)
            warehouse.replace_days(
                provider_usage, replaced, [], match={"provider": provider}, conn=conn
            )
            _publish(conn, provider, stage_id)
            kept = set(report.days_kept)
            warehouse.replace_days(
                provider_coverage,
                replaced,
                [c for c in records if c["usage_date"] not in kept],
                match={"provider": provider},
                conn=conn,
            )
    finally:
        _discard_stage(warehouse, provider, stage_id)
    return report


def _days_to_keep(
    conn: Connection, provider: str, coverage: Sequence[DayCoverage], row_days: set[date]
) -> list[date]:
    """Days on which no account was answered (all ``unavailable``: past a lookback window, an
    account missing from the answer) but which a previous load holds complete. Replacing them
    would trade figures the provider gave for nothing; they stay as they were, and the coverage
    of the previous load still says where they came from."""
    answered = {c.usage_date for c in coverage if c.status == "complete"}
    unanswered_days = {c.usage_date for c in coverage} - answered
    if not unanswered_days:
        return []
    if unanswered_days & row_days:
        return []  # rows on a day without coverage: leave it to the audits, keep nothing
    unanswered = sorted(unanswered_days)
    c = provider_coverage
    held: set[date] = set()
    for i in range(0, len(unanswered), _IN_CHUNK):
        held |= set(
            conn.execute(
                select(c.c.usage_date)
                .where(
                    c.c.provider == provider,
                    c.c.status == "complete",
                    c.c.usage_date.in_(unanswered[i : i + _IN_CHUNK]),
                )
                .distinct()
            ).scalars()
        )
    return sorted(held)


# rows per staging insert (each its own transaction): what a chunk holds as warehouse records
_STAGE_CHUNK = 1000


def _stage(
    warehouse: Warehouse,
    provider: str,
    stage_id: str,
    rows: Iterable[UsageRow],
    settings: UsageSettings,
    load_id: str,
    fetched_at: datetime,
) -> None:
    """The mapped rows into the staging table, in chunks (each its own transaction)."""
    chunk: list[dict[str, Any]] = []
    mappings = MappingResolver(settings.mappings)
    for row in rows:
        if row.provider != provider:
            raise AuditError(
                f"{provider} account {row.resource_id} day {row.usage_date} field provider: "
                f"row of provider {row.provider!r}"
            )
        record = usage_record(row, settings, load_id, fetched_at, mappings)
        chunk.append({**record, "stage_id": stage_id})
        if len(chunk) >= _STAGE_CHUNK:
            _stage_chunk(warehouse, chunk)
            chunk = []
    if chunk:
        _stage_chunk(warehouse, chunk)


def _stage_chunk(warehouse: Warehouse, rows: list[dict[str, Any]]) -> None:
    with warehouse.engine.begin() as conn:
        insert_rows(conn, provider_usage_staging, rows)


def _discard_abandoned(warehouse: Warehouse, provider: str, live: set[str]) -> int:
    """Delete ``provider``'s staged rows of loads that are no longer running (a run killed
    between staging and its cleanup); a concurrent load's stage (in ``live``) is kept."""
    s = provider_usage_staging
    with warehouse.engine.begin() as conn:
        gone = conn.execute(
            s.delete().where(s.c.provider == provider, s.c.stage_id.not_in(sorted(live)))
        )
        return int(gone.rowcount or 0)


def _discard_stage(warehouse: Warehouse, provider: str, stage_id: str) -> None:
    s = provider_usage_staging
    with warehouse.engine.begin() as conn:
        conn.execute(s.delete().where(s.c.stage_id == stage_id, s.c.provider == provider))


def _staged(provider: str, stage_id: str) -> Any:
    s = provider_usage_staging
    return and_(s.c.stage_id == stage_id, s.c.provider == provider)


def _value_columns() -> list[Any]:
    return [provider_usage_staging.c[c.name] for c in provider_usage.columns]


def _audit_staged(
    conn: Connection,
    provider: str,
    stage_id: str,
    days: Sequence[date],
    settings: UsageSettings,
    allow_drop: bool,
    report: LoadReport,
) -> None:
    s = provider_usage_staging
    distinct = select(*_value_columns()).where(_staged(provider, stage_id)).distinct().subquery()
    conflict = conn.execute(
        select(distinct.c.usage_date, distinct.c.source_key, distinct.c.resource_id)
        .group_by(distinct.c.usage_date, distinct.c.source_key, distinct.c.resource_id)
        .having(func.count() > 1)
        .limit(1)
    ).first()
    if conflict is not None:
        raise AuditError(
            f"{provider} account {conflict.resource_id} day {conflict.usage_date} field "
            f"source_key: record {conflict.source_key[:120]!r} reported twice with different values"
        )
    staged = conn.execute(select(func.count()).where(_staged(provider, stage_id))).scalar_one()
    unique = conn.execute(select(func.count()).select_from(distinct)).scalar_one()
    report.duplicates_dropped = int(staged) - int(unique)
    report.rows_written = int(unique)

    before, days_before = _day_totals(
        conn, provider_usage, provider_usage.c.provider == provider, days
    )
    after, days_after = _day_totals(conn, s, _staged(provider, stage_id), days)
    report.days_compared = len(days_before)
    drops = drops_beyond(before, after, days_before, days_after, settings.audit.max_drop_share)
    report.drops = drops
    if drops and not allow_drop:
        shown = "; ".join(
            f"{d.usage_date} {d.metric} ({d.unit}) {d.before} → "
            + ("no rows" if d.after is None else str(d.after))
            for d in drops[:5]
        )
        raise DropAuditError(
            f"{provider}: {len(drops)} day/metric total(s) vanished or fell by more than "
            f"{settings.audit.max_drop_share:%} since the last load ({shown}"
            f"{' …' if len(drops) > 5 else ''}); nothing was written. If the provider really "
            f"corrected its data, re-run with the run tag {ALLOW_DROP_TAG}=true",
            drops,
        )
    report.drop_overridden = bool(drops)


def _day_totals(
    conn: Connection, table: Any, where: Any, days: Sequence[date]
) -> tuple[dict[tuple[date, str, str], Decimal], set[date]]:
    """Per (day, metric, unit): the summed consumed quantity of ``days``, aggregated in SQL."""
    totals: dict[tuple[date, str, str], Decimal] = {}
    ordered = sorted(set(days))
    for i in range(0, len(ordered), _IN_CHUNK):
        rows = conn.execute(
            select(
                table.c.usage_date,
                table.c.metric,
                table.c.consumed_unit,
                exact_sum(table.c.consumed_quantity),
            )
            .where(where, table.c.usage_date.in_(ordered[i : i + _IN_CHUNK]))
            .group_by(table.c.usage_date, table.c.metric, table.c.consumed_unit)
        )
        for d, metric, unit, qty in rows:
            totals[(d, metric, unit)] = Decimal(str(qty or 0))
    return totals, {k[0] for k in totals}


def _publish(conn: Connection, provider: str, stage_id: str) -> None:
    """Staged rows (identical duplicates collapsed) into provider_usage, server side."""
    columns = [c.name for c in provider_usage.columns]
    rows = select(*_value_columns()).where(_staged(provider, stage_id)).distinct()
    conn.execute(provider_usage.insert().from_select(columns, rows))


def usage_totals(
    warehouse: Warehouse, provider: str, days: Sequence[date], *, by_day: bool = False
) -> list[dict[str, Any]]:
    """Per metric and unit (and per ``usage_date`` with ``by_day``): rows, quantity and billed
    cost over ``days``, aggregated in SQL."""
    t = provider_usage
    per_day = [t.c.usage_date] if by_day else []
    stmt = (
        select(
            *per_day,
            t.c.metric,
            t.c.consumed_unit,
            func.count().label("rows"),
            exact_sum(t.c.consumed_quantity).label("quantity"),
            exact_sum(t.c.billed_cost).label("billed_cost"),
            func.coalesce(exact_sum(t.c.list_cost), 0).label("list_cost"),
            func.count(t.c.entity_id).label("mapped_rows"),
        )
        .where(t.c.provider == provider, t.c.usage_date.in_(list(days)))
        .group_by(*per_day, t.c.metric, t.c.consumed_unit)
        .order_by(*per_day, t.c.metric)
    )
    with warehouse.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]
