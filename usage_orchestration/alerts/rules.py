"""Rules: what is wrong now, read from the warehouse tables (aggregated in SQL) and turned into
desired ``Alert`` objects. Each ``*_alerts`` function is a full evaluation of its kinds: the
outbox resolves any open alert of those kinds that a rule no longer reports.

The pure ``alerts_from_*`` functions take rows (mappings) so they can be tested without a
database; the ``read_*`` functions fetch those rows with SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict
from urllib.parse import quote

from sqlalchemy import Engine, Table, and_, func, select

from usage_orchestration.alerts.channels import PD_SUMMARY_LIMIT, cut
from usage_orchestration.alerts.model import Alert, AlertKind
from usage_orchestration.core.dates import month_end
from usage_orchestration.core.money import format_credits
from usage_orchestration.providers.registry import enabled_names, provider
from usage_orchestration.settings import UsageSettings
from usage_orchestration.settings.alerts import Severity
from usage_orchestration.warehouse.analysis_schema import (
    credit_pool_status,
    provider_cap_status,
    usage_anomaly,
)

Row = Mapping[str, Any]

BUDGET_KINDS = (AlertKind.BUDGET_THRESHOLD, AlertKind.FORECAST_OVERRUN)
POOL_CAP_KINDS = (AlertKind.CREDIT_POOL_DEPLETION, AlertKind.PROVIDER_CAP)
BREAK_KINDS = (AlertKind.RECONCILIATION_BREAK, AlertKind.ANOMALY)
BREAK_STATUSES = (
    "ledger_under",
    "ledger_over",
    "missing_in_ledger",
    "missing_at_provider",
    "unmapped",
)

SYNC_FAILURES: dict[str, tuple[Severity, str]] = {
    "lm_unreachable": ("error", "the License Manager cannot be reached"),
    "lm_unavailable": ("error", "the License Manager is unavailable"),
    "lm_error": ("error", "the License Manager answered with an error"),
    "license_not_recognized": ("critical", "the License Manager does not recognize the license"),
}


def fmt(value: Any) -> str:
    """Decimal without trailing zeros (``100`` not ``100.000000000000``)."""
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def money(value: Any) -> str:
    return format_credits(value)  # the one display of credits (core/money.py)


def _ui_link(ui_url: str, asset: str, partition: str = "") -> dict[str, str]:
    href = f"{ui_url.rstrip('/')}/assets/{quote(asset)}"
    if partition:
        href += f"?partition={quote(partition)}"
    return {"href": href, "text": f"{asset} in Dagster"}


def _day_alert(settings: UsageSettings, asset: str, day: date, **alert: Any) -> Alert:
    """An alert about one day's data: the day is its period, its link the asset's partition of
    that day."""
    return Alert(
        period=day.isoformat(),
        links=[_ui_link(settings.alerts.dagster_ui_url, asset, day.isoformat())],
        **alert,
    )


# ---------------------------------------------------------------------------------- budgets
def threshold_severity(threshold: Decimal) -> Severity:
    if threshold >= 100:
        return "critical"
    if threshold >= 80:
        return "warning"
    return "info"


def crossed_thresholds(r: Row, thresholds: Sequence[Decimal]) -> list[Decimal]:
    """The thresholds (percent) a budget row has crossed: its ``thresholds_crossed`` list when
    the table has it, else every configured threshold up to ``highest_threshold_crossed``."""
    listed = r.get("thresholds_crossed")
    if listed is not None:
        return [Decimal(x) for x in str(listed).split(",") if x.strip()]
    highest = r.get("highest_threshold_crossed")
    if highest is None:
        return []
    return [t for t in thresholds if t <= Decimal(highest)] or [Decimal(highest)]


def alerts_from_budget_rows(rows: Iterable[Row], settings: UsageSettings) -> list[Alert]:
    """Budget thresholds crossed and forecast overruns, from each (entity, month)'s latest
    ``budget_status`` row. Months before the latest month in the data are closed (a new month
    resolves their alerts)."""
    out: list[Alert] = []
    for r, active in with_latest_month_active(rows):
        link = [
            _ui_link(settings.alerts.dagster_ui_url, "budget_status", r["as_of_date"].isoformat())
        ]
        crossed = crossed_thresholds(r, settings.budgets.thresholds_pct)
        if crossed:
            # Only the highest: crossing 50, 80 and 100 % at once is one notification, and
            # 80 → 100 % replaces the warning by the page (the 80 % alert is superseded).
            out.append(_budget_threshold_alert(r, max(crossed), link, active))
        overrun = r.get("forecast_overrun")
        if overrun is not None and Decimal(overrun) > 0:
            out.append(_forecast_overrun_alert(r, overrun, link, active))
    return out


def _budget_details(r: Row) -> dict[str, Any]:
    return {
        "entity_id": r["entity_id"],
        "entity_type": r.get("entity_type"),
        "as_of_date": r["as_of_date"].isoformat(),
        "credits_used": fmt(r["credits_used"]),
        "monthly_budget": fmt(r.get("monthly_budget")),
        "budget_percent": fmt(r.get("budget_percent")),
        "forecast_month_end": fmt(r.get("forecast_month_end")),
    }


def _budget_threshold_alert(
    r: Row, threshold: Decimal, link: list[dict[str, str]], active: bool
) -> Alert:
    over = "over budget" if threshold >= 100 else f"past {fmt(threshold)}% of budget"
    return _entity_budget_alert(
        r,
        AlertKind.BUDGET_THRESHOLD,
        threshold_severity(threshold),
        f"is {over} for {r['month']}: {money(r['credits_used'])} of "
        f"{money(r.get('monthly_budget'))} credits ({fmt(r.get('budget_percent'))}%)",
        {"threshold_pct": fmt(threshold)},
        link,
        active,
        threshold=f"{fmt(threshold)}pct",
    )


def _forecast_overrun_alert(
    r: Row, overrun: Any, link: list[dict[str, str]], active: bool
) -> Alert:
    return _entity_budget_alert(
        r,
        AlertKind.FORECAST_OVERRUN,
        "warning",
        f"is forecast to overrun its {r['month']} budget by {money(overrun)} credits "
        f"(forecast {money(r.get('forecast_month_end'))} of {money(r.get('monthly_budget'))})",
        {"forecast_overrun": fmt(overrun)},
        link,
        active,
    )


def _entity_budget_alert(
    r: Row,
    kind: AlertKind,
    severity: Severity,
    what: str,
    extra: dict[str, str],
    link: list[dict[str, str]],
    active: bool,
    threshold: str = "",
) -> Alert:
    """An alert about one entity's month, from its budget_status row: "<name> <what> as of D"."""
    name = r.get("entity_name") or r["entity_id"]
    return Alert(
        kind=kind,
        severity=severity,
        subject=f"entity/{r['entity_id']}",
        period=r["month"],
        threshold=threshold,
        summary=f"{name} {what} as of {r['as_of_date'].isoformat()}",
        details={**_budget_details(r), **extra},
        links=link,
        active=active,
    )


def with_latest_month_active(rows: Iterable[Row]) -> list[tuple[Row, bool]]:
    """Each row with whether its ``month`` is the latest in the data: alerts of earlier months
    are reported inactive, so a new month resolves them."""
    rows = list(rows)
    if not rows:
        return []
    latest_month = max(r["month"] for r in rows)
    return [(r, r["month"] == latest_month) for r in rows]


def row_details(r: Row) -> dict[str, str]:
    """A status row as alert details: every column but the load id, decimals without zeros."""
    return {k: fmt(v) if isinstance(v, Decimal) else str(v) for k, v in r.items() if k != "load_id"}


def latest_rows_per(
    engine: Engine, table: Table, keys: Sequence[str], day_column: str = "as_of_date"
) -> list[dict[str, Any]]:
    """Each group's (``keys``) row with the latest ``day_column``, selected in SQL."""
    latest = (
        select(*[table.c[k] for k in keys], func.max(table.c[day_column]).label("latest"))
        .group_by(*[table.c[k] for k in keys])
        .subquery()
    )
    join_on = and_(
        *[table.c[k] == latest.c[k] for k in keys], table.c[day_column] == latest.c.latest
    )
    q = select(table).select_from(table.join(latest, join_on))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def budget_alerts(engine: Engine, settings: UsageSettings) -> list[Alert]:
    from usage_orchestration.warehouse.analysis_schema import budget_status

    return alerts_from_budget_rows(
        latest_rows_per(engine, budget_status, ["entity_id", "month"]), settings
    )


# ----------------------------------------------------------------- credit pool, provider caps
class MonthStatus(TypedDict):
    """What is wrong in a month's status row (pool, cap): the fields of its alert."""

    kind: AlertKind
    severity: Severity
    subject: str
    threshold: str
    summary: str


def alerts_from_pool_rows(rows: Iterable[Row], settings: UsageSettings) -> list[Alert]:
    """The shared credit pool's projected depletion before its month ends (or already empty)."""
    return _month_status_alerts(rows, settings, "budget_status", _pool_status)


def _pool_status(r: Row) -> MonthStatus | None:
    month = r["month"]
    as_of: date = r["as_of_date"]
    remaining = r["remaining"]
    depletion = r["projected_depletion_date"]
    last_day = month_end(date.fromisoformat(f"{month[:7]}-01"))
    empty = bool(r.get("depleted")) or (remaining is not None and Decimal(remaining) <= 0)
    if not empty and (depletion is None or depletion > last_day):
        return None
    when = "is exhausted" if empty else f"is projected to run out on {depletion}"
    return MonthStatus(
        kind=AlertKind.CREDIT_POOL_DEPLETION,
        severity="critical" if empty else "error",
        subject="credit-pool",
        threshold="exhausted" if empty else "",
        summary=f"The shared credit pool {when} ({money(remaining)} credits left for "
        f"{month}, as of {as_of.isoformat()})",
    )


def alerts_from_cap_rows(rows: Iterable[Row], settings: UsageSettings) -> list[Alert]:
    """A provider-side monthly allowance used up, or forecast to be used up, this month."""
    return _month_status_alerts(rows, settings, "provider_cap_status", _cap_status)


def _cap_status(r: Row) -> MonthStatus | None:
    used = r["used_quantity"]
    cap = r["cap_quantity"]
    forecast = r["forecast_month_end"]
    over = bool(r["over_cap"]) or (
        used is not None and cap is not None and Decimal(used) >= Decimal(cap)
    )
    forecast_over = (r["forecast_overage"] or 0) > 0 or (
        forecast is not None and cap is not None and Decimal(forecast) > Decimal(cap)
    )
    if not (over or forecast_over):
        return None
    what = f"{r['provider']} {r['metric']}"
    return MonthStatus(
        kind=AlertKind.PROVIDER_CAP,
        severity="error" if over else "warning",
        subject=f"provider/{r['provider']}/{r['metric']}",
        threshold="reached" if over else "forecast",
        summary=(
            f"{what}: {fmt(used)} of the {fmt(cap)} {r['unit']} monthly allowance "
            + ("used" if over else f"used, forecast {fmt(forecast)} by month end")
            + f" ({r['month']}, as of {r['as_of_date'].isoformat()})"
        ),
    )


def _month_status_alerts(
    rows: Iterable[Row],
    settings: UsageSettings,
    asset: str,
    status_of: Callable[[Row], MonthStatus | None],
) -> list[Alert]:
    """An alert for each month's status row (pool, cap) that ``status_of`` finds wrong: the row
    as details, a link to the asset's partition of the row's day, inactive for earlier months."""
    out: list[Alert] = []
    for r, active in with_latest_month_active(rows):
        status = status_of(r)
        if status is None:
            continue
        as_of = r["as_of_date"].isoformat()
        out.append(
            Alert(
                period=r["month"],
                details=row_details(r),
                links=[_ui_link(settings.alerts.dagster_ui_url, asset, as_of)],
                active=active,
                **status,
            )
        )
    return out


def pool_and_cap_alerts(engine: Engine, settings: UsageSettings) -> list[Alert]:
    out: list[Alert] = []
    out += alerts_from_pool_rows(latest_rows_per(engine, credit_pool_status, ["month"]), settings)
    out += alerts_from_cap_rows(
        latest_rows_per(engine, provider_cap_status, ["provider", "metric", "month"]), settings
    )
    return out


# ------------------------------------------------------------ reconciliation breaks, anomalies
def _named(entity_id: str, names: Mapping[str, str]) -> str:
    """``Support Bot (bbbb…)``: the name a person knows, beside the id the data uses."""
    name = names.get(entity_id)
    return f"{name} ({entity_id})" if name and name != entity_id else entity_id


def alerts_from_reconciliation_rows(
    rows: Iterable[Row], settings: UsageSettings, names: Mapping[str, str] | None = None
) -> list[Alert]:
    """One alert per (day, provider, entity, resource type) outside tolerance."""
    names = names or {}
    page_at = settings.alerts.reconciliation_page_credits
    out: list[Alert] = []
    for r in rows:
        if r["within_tolerance"] or r["status"] not in BREAK_STATUSES:
            continue
        day: date = r["usage_date"]
        delta = r.get("delta_credits")
        entity = r["entity_id"] or "(unmapped)"
        big = delta is not None and abs(Decimal(delta)) >= page_at and r["status"] != "unmapped"
        out.append(
            _day_alert(
                settings,
                "usage_reconciliation",
                day,
                kind=AlertKind.RECONCILIATION_BREAK,
                severity="error" if big else "warning",
                subject=f"{r['provider']}/{entity}/{r['resource_type']}",
                summary=(
                    f"Reconciliation break {r['status']} on {day.isoformat()}: {r['provider']} "
                    f"{_named(entity, names)} {r['resource_type']} expected {fmt(r.get('expected_credits'))} credits, "
                    f"ledger recorded {fmt(r.get('recorded_credits'))} (delta {fmt(delta)})"
                ),
                details={
                    "status": r["status"],
                    "entity_id": entity,
                    "entity_name": names.get(entity, ""),
                    "expected_quantity": fmt(r.get("expected_quantity")),
                    "recorded_quantity": fmt(r.get("recorded_quantity")),
                    "expected_credits": fmt(r.get("expected_credits")),
                    "recorded_credits": fmt(r.get("recorded_credits")),
                    "delta_credits": fmt(delta),
                    "delta_pct": fmt(r.get("delta_pct")),
                    "reason": r.get("reason") or "",
                },
            )
        )
    return out


def alerts_from_anomaly_rows(
    rows: Iterable[Row], settings: UsageSettings, names: Mapping[str, str] | None = None
) -> list[Alert]:
    names = names or {}
    out: list[Alert] = []
    for r in rows:
        day: date = r["usage_date"]
        entity = r.get("entity_id") or "(all)"
        rtype = r.get("resource_type") or "(all)"
        impact = r["impact_credits"]
        direction = r["direction"]
        out.append(
            _day_alert(
                settings,
                "usage_anomalies",
                day,
                kind=AlertKind.ANOMALY,
                severity="warning",
                subject=f"entity/{entity}/{rtype}",
                summary=(
                    f"Spend {direction} on {day.isoformat()}: {_named(entity, names)} {rtype} "
                    f"{fmt(r['credits'])} credits against a baseline of "
                    f"{fmt(r['baseline_credits'])} (impact {fmt(impact)}, driven by {rtype})"
                ),
                details={**row_details(r), "entity_name": names.get(entity, "")},
            )
        )
    return out


def break_alerts(engine: Engine, settings: UsageSettings) -> list[Alert]:
    from usage_orchestration.warehouse.analysis_schema import usage_reconciliation as t

    q = select(t).where(and_(t.c.within_tolerance.is_(False), t.c.status.in_(BREAK_STATUSES)))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    names = entity_names(engine)
    out = alerts_from_reconciliation_rows(rows, settings, names)
    q = select(usage_anomaly).where(usage_anomaly.c.is_anomaly.is_(True))
    with engine.connect() as conn:
        anomalies = [dict(r) for r in conn.execute(q).mappings()]
    return out + alerts_from_anomaly_rows(anomalies, settings, names)


def entity_names(engine: Engine) -> dict[str, str]:
    """Each entity's name as the ledger gave it to budget_status (one per id, in SQL)."""
    from usage_orchestration.warehouse.analysis_schema import budget_status as b

    q = (
        select(b.c.entity_id, func.max(b.c.entity_name))
        .where(b.c.entity_name.is_not(None))
        .group_by(b.c.entity_id)
    )
    with engine.connect() as conn:
        return {str(i): str(n) for i, n in conn.execute(q)}


# ------------------------------------------------------------------ stale data, ledger sync
def due_days(now: datetime, settings: UsageSettings, lookback_days: int = 3) -> list[date]:
    """The days whose partition must be present by now: yesterday once today's deadline has
    passed (else the day before), and the ``lookback_days - 1`` days before it."""
    now = now.astimezone(UTC)
    today = now.date()
    last = today - timedelta(days=1 if now.time() >= settings.alerts.stale_deadline_utc else 2)
    days = [last - timedelta(days=i) for i in range(lookback_days)]
    return sorted(d for d in days if d >= settings.partitions_start)


def alerts_from_coverage(
    coverage: Iterable[Row], days: Sequence[date], providers: Sequence[str], settings: UsageSettings
) -> list[Alert]:
    """Stale data: a due day with no complete coverage for a provider (never fetched, or
    fetched as unavailable)."""
    complete: set[tuple[str, date]] = set()
    unavailable: dict[tuple[str, date], list[str]] = {}
    for c in coverage:
        if c["status"] == "complete":
            complete.add((c["provider"], c["usage_date"]))
        else:
            unavailable.setdefault((c["provider"], c["usage_date"]), []).append(
                f"{c['account_id']}: {c.get('reason') or c['status']}"
            )
    deadline = settings.alerts.stale_deadline_utc.strftime("%H:%M")
    out: list[Alert] = []
    for p in providers:
        for d in days:
            if (p, d) in complete:
                continue
            why = unavailable.get((p, d))
            summary = (
                f"Stale data: {p} usage for {d.isoformat()} is missing (due by {deadline} UTC the next day)"
                if not why
                else f"Stale data: {p} usage for {d.isoformat()} could not be fetched ({cut('; '.join(why), 300)})"
            )
            out.append(
                _day_alert(
                    settings,
                    provider(p).asset_key,
                    d,
                    kind=AlertKind.STALE_DATA,
                    severity="error",
                    subject=f"provider/{p}",
                    summary=summary,
                    details={"provider": p, "usage_date": d.isoformat(), "unavailable": why or []},
                )
            )
    return out


def stale_alerts(engine: Engine, settings: UsageSettings, now: datetime) -> list[Alert]:
    from usage_orchestration.warehouse.schema import provider_coverage as c

    days = due_days(now, settings)
    providers = enabled_names(settings)
    if not days or not providers:
        return []
    q = select(c.c.provider, c.c.account_id, c.c.usage_date, c.c.status, c.c.reason).where(
        and_(c.c.usage_date.in_(days), c.c.provider.in_(providers))
    )
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    return alerts_from_coverage(rows, days, providers, settings)


def ledger_sync_alerts(status: Any, settings: UsageSettings) -> list[Alert]:
    """License Manager sync failures from the ledger's ``SyncStatus``: open while the last sync
    failed (no successful sync since the failure)."""
    code = getattr(status, "last_sync_failure_code", None)
    failed_at = getattr(status, "last_sync_failed_at", None)
    synced_at = getattr(status, "synced_at", None)
    if not code or failed_at is None:
        return []
    if synced_at is not None and synced_at > failed_at:
        return []
    severity, meaning = SYNC_FAILURES.get(code, ("error", f"License Manager sync failed ({code})"))
    return [
        Alert(
            kind=AlertKind.LEDGER_SYNC,
            severity=severity,
            subject="license-manager",
            threshold=code,
            summary=f"Ledger sync failure {code}: {meaning} since {failed_at.isoformat()}; ledger credits may be stale",
            details={
                "code": code,
                "last_sync_failed_at": failed_at.isoformat(),
                "synced_at": synced_at.isoformat() if synced_at else None,
                "staleness_level": getattr(status, "staleness_level", None),
            },
        )
    ]


def ledger_sync_error_alert(message: str) -> Alert:
    """The ledger could not even be asked for its sync status."""
    return Alert(
        kind=AlertKind.LEDGER_SYNC,
        severity="error",
        subject="license-manager",
        threshold="status_unreadable",
        summary=f"Ledger sync status could not be read: {cut(message, 300)}",
    )


# -------------------------------------------------------------- run failures, sensor failures
_SUBJECT_ASSETS = 200  # characters of asset names in a subject; longer lists end in a digest


def partition_days(partition: str | None) -> list[str]:
    """The days a run's partition covers: one day, every day of ``A...B``, or [] (none)."""
    if not partition:
        return []
    first, sep, last = partition.partition("...")
    try:
        start = date.fromisoformat(first)
        end = date.fromisoformat(last) if sep else start
    except ValueError:
        return [partition]
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _assets_part(assets: Sequence[str]) -> str:
    import hashlib

    joined = "+".join(sorted(set(assets)))
    if len(joined) <= _SUBJECT_ASSETS:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:16]
    return f"{joined[: _SUBJECT_ASSETS - 40]}…+{len(set(assets))}-assets#{digest}"


def run_failure_alert(
    *,
    job_name: str,
    run_id: str,
    partition: str | None,
    message: str,
    settings: UsageSettings,
    assets: Sequence[str] = (),
    failed_at: datetime | None = None,
    stuck: bool = False,
) -> Alert:
    """A failed run (not one about to be retried), keyed by job, failed assets and days (the
    partition or range): repeated failures of the same work collapse into one incident,
    different assets or days are different incidents. ``stuck``: the run died without
    reporting (killed, out of memory) and run monitoring marked it failed."""
    ui = settings.alerts.dagster_ui_url.rstrip("/")
    subject = f"job/{job_name}" + (f"/{_assets_part(assets)}" if assets else "")
    what = "died without reporting (its run worker is gone; marked failed)" if stuck else "failed"
    head = (
        f"Dagster run of {job_name}"
        + (f" ({cut(', '.join(sorted(set(assets))), 200)})" if assets else "")
        + (f" for {partition}" if partition else "")
        + f" {what}"
    )
    return Alert(
        kind=AlertKind.STUCK_RUN if stuck else AlertKind.RUN_FAILURE,
        severity="error",
        subject=subject,
        period=partition or "",
        # The cause comes first in ``message``: cut at the end, it survives.
        summary=f"{head}: {cut(message, max(PD_SUMMARY_LIMIT - len(head) - 2, 100))}",
        details={
            "run_id": run_id,
            "job": job_name,
            "assets": sorted(set(assets)),
            "partition": partition or "",
            "failed_at": (failed_at or datetime.now(UTC)).isoformat(),
            "error": cut(message, 2000),
        },
        links=[
            {"href": f"{ui}/runs/{run_id}", "text": "the failed run"},
            # each failed asset at the failing day (the first of a range)
            *(
                _ui_link(ui, a, (partition_days(partition) or [""])[0])
                for a in sorted(set(assets))[:3]
            ),
        ],
    )


def failure_resolved_by(
    details: Mapping[str, Any],
    *,
    job_name: str,
    partition: str | None,
    materialized: set[tuple[str, str | None]],
    succeeded_at: datetime,
) -> bool:
    """Whether a successful run clears a run_failure/stuck_run alert (its ``details``): it ended
    after the failure and materialized every failed asset for every failed day (any job); for
    a failure without assets (an op job), the same job succeeded for a span covering its days."""
    failed_at = details.get("failed_at")
    if failed_at and succeeded_at <= datetime.fromisoformat(str(failed_at)):
        return False
    days = partition_days(details.get("partition") or None)
    assets = list(details.get("assets") or [])
    if assets:
        if not days:
            done = {a for a, _ in materialized}
            return all(a in done for a in assets)
        return all((a, d) in materialized for a in assets for d in days)
    if job_name != details.get("job"):
        return False
    covered = partition_days(partition)
    return set(days) <= set(covered) if days else not covered


def sensor_failure_alert(sensor_name: str, error: str, settings: UsageSettings) -> Alert:
    ui = settings.alerts.dagster_ui_url.rstrip("/")
    return Alert(
        kind=AlertKind.SENSOR_FAILURE,
        severity="error",
        subject=f"sensor/{sensor_name}",
        summary=f"Alert sensor {sensor_name} failed: {cut(error, 400)}; alerts it evaluates are not being checked",
        details={"sensor": sensor_name},
        links=[{"href": f"{ui}/automation", "text": "sensors in Dagster"}],
    )
