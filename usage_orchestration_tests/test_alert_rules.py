"""One test per alert kind: warehouse rows (or events) in, the alerts on-call would get out."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from usage_orchestration.alerts import rules
from usage_orchestration.alerts.model import AlertKind, is_recent
from usage_orchestration.ledger.base import SyncStatus
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.analysis_schema import (
    budget_status,
    credit_pool_status,
    provider_cap_status,
    usage_anomaly,
    usage_reconciliation,
)
from usage_orchestration.warehouse.schema import provider_coverage
from usage_orchestration.warehouse.store import Warehouse

S = load_settings()


def wh(db_url: str) -> Warehouse:
    w = Warehouse(db_url)
    w.ensure_schema()
    return w


def budget_row(
    day: date, entity: str, used: str, budget: str, crossed: str, forecast: str | None = None
) -> dict[str, Any]:
    pct = Decimal(used) / Decimal(budget) * 100
    overrun = (
        Decimal(forecast) - Decimal(budget)
        if forecast and Decimal(forecast) > Decimal(budget)
        else None
    )
    return {
        "as_of_date": day,
        "month": day.strftime("%Y-%m"),
        "entity_id": entity,
        "entity_type": "app",
        "entity_name": entity.title(),
        "credits_used": Decimal(used),
        "monthly_budget": Decimal(budget),
        "budget_percent": pct,
        "budget_remaining": Decimal(budget) - Decimal(used),
        "over_budget": Decimal(used) > Decimal(budget),
        "highest_threshold_crossed": Decimal(crossed.split(",")[-1]) if crossed else None,
        "thresholds_crossed": crossed,
        "days_of_data": day.day,
        "forecast_month_end": Decimal(forecast) if forecast else None,
        "forecast_overrun": overrun,
        "load_id": "test",
    }


def test_budget_threshold_from_latest_row_per_month(db_url: str) -> None:
    w = wh(db_url)
    with w.engine.begin() as conn:
        conn.execute(
            budget_status.insert(),
            [
                budget_row(date(2026, 5, 10), "bot", "60", "100", "50"),
                budget_row(date(2026, 5, 12), "bot", "120", "100", "50,80,100"),  # the latest
                budget_row(date(2026, 5, 12), "dash", "10", "100", ""),
            ],
        )
    got = {(a.subject, a.threshold): a for a in rules.budget_alerts(w.engine, S)}
    # 50, 80 and 100 % crossed at once: only the highest is reported (one notification)
    assert set(got) == {("entity/bot", "100pct")}
    over = got[("entity/bot", "100pct")]
    assert over.kind == AlertKind.BUDGET_THRESHOLD and over.severity == "critical"
    assert over.period == "2026-05" and over.active
    assert "over budget" in over.summary and "120.00 of 100.00" in over.summary
    assert over.dedup_key == "usage-orchestration/budget_threshold/entity/bot/2026-05/100pct"


def test_budget_alerts_of_past_month_are_closed(db_url: str) -> None:
    w = wh(db_url)
    with w.engine.begin() as conn:
        conn.execute(
            budget_status.insert(),
            [
                budget_row(date(2026, 4, 30), "bot", "150", "100", "50,80,100"),
                budget_row(date(2026, 5, 1), "bot", "5", "100", ""),
            ],
        )
    alerts = rules.budget_alerts(w.engine, S)
    assert {a.period for a in alerts} == {"2026-04"}
    assert all(not a.active for a in alerts)  # a new month: April's alerts resolve


def test_forecast_overrun() -> None:
    row = budget_row(date(2026, 5, 10), "dash", "40", "100", "", forecast="124")
    [a] = rules.alerts_from_budget_rows([row], S)
    assert a.kind == AlertKind.FORECAST_OVERRUN and a.severity == "warning"
    assert "by 24.00 credits" in a.summary and a.period == "2026-05"


def test_credit_pool_depletion(db_url: str) -> None:
    w = wh(db_url)
    base = {
        "included": Decimal(1000),
        "percent_used": None,
        "days_of_data": 10,
        "daily_run_rate": Decimal(60),
        "forecast_month_end_used": Decimal(1860),
        "load_id": "t",
    }
    with w.engine.begin() as conn:
        conn.execute(
            credit_pool_status.insert(),
            [
                {
                    **base,
                    "as_of_date": date(2026, 5, 9),
                    "month": "2026-05",
                    "used": Decimal(540),
                    "remaining": Decimal(460),
                    "forecast_remaining": Decimal(-860),
                    "projected_depletion_date": date(2026, 5, 17),
                    "depleted": False,
                },
                {
                    **base,
                    "as_of_date": date(2026, 5, 10),
                    "month": "2026-05",
                    "used": Decimal(600),
                    "remaining": Decimal(400),
                    "forecast_remaining": Decimal(-860),
                    "projected_depletion_date": date(2026, 5, 16),
                    "depleted": False,
                },
            ],
        )
    [a] = rules.pool_and_cap_alerts(w.engine, S)
    assert a.kind == AlertKind.CREDIT_POOL_DEPLETION and a.severity == "error"
    assert "2026-05-16" in a.summary and a.subject == "credit-pool" and a.period == "2026-05"
    # a pool that lasts the month raises nothing
    ok = {
        "as_of_date": date(2026, 5, 10),
        "month": "2026-05",
        "remaining": Decimal(900),
        "projected_depletion_date": None,
        "depleted": False,
    }
    assert rules.alerts_from_pool_rows([ok], S) == []
    # running out on the month's last day pages; the day after is next month's problem
    for month, last in (("2026-05", date(2026, 5, 31)), ("2026-12", date(2026, 12, 31))):
        row = {**ok, "month": month, "as_of_date": last.replace(day=10), "remaining": Decimal(9)}
        on_last = {**row, "projected_depletion_date": last}
        after = {**row, "projected_depletion_date": last + timedelta(days=1)}
        assert len(rules.alerts_from_pool_rows([on_last], S)) == 1, month
        assert rules.alerts_from_pool_rows([after], S) == [], month


def test_provider_cap(db_url: str) -> None:
    w = wh(db_url)
    with w.engine.begin() as conn:
        conn.execute(
            provider_cap_status.insert(),
            [
                {
                    "as_of_date": date(2026, 5, 20),
                    "month": "2026-05",
                    "provider": "forge",
                    "metric": "FUNCTION_COMPUTE",
                    "unit": "GB-seconds",
                    "cap_quantity": Decimal(100000),
                    "used_quantity": Decimal(80000),
                    "percent_used": Decimal(80),
                    "remaining_quantity": Decimal(20000),
                    "over_cap": False,
                    "days_of_data": 20,
                    "forecast_month_end": Decimal(124000),
                    "forecast_overage": Decimal(24000),
                    "load_id": "t",
                }
            ],
        )
    [a] = rules.pool_and_cap_alerts(w.engine, S)
    assert (
        a.kind == AlertKind.PROVIDER_CAP and a.severity == "warning" and a.threshold == "forecast"
    )
    assert a.subject == "provider/forge/FUNCTION_COMPUTE" and "100000 GB-seconds" in a.summary


def test_reconciliation_break_over_tolerance(db_url: str) -> None:
    w = wh(db_url)
    base = {
        "entity_type": "app",
        "ledger_unit": "vcpu-hours",
        "expected_quantity": Decimal(10),
        "recorded_quantity": Decimal(7),
        "delta_quantity": Decimal(-3),
        "delta_pct": Decimal(-30),
        "reason": None,
        "load_id": "t",
        "provider": "phala",
    }
    with w.engine.begin() as conn:
        conn.execute(
            usage_reconciliation.insert(),
            [
                {
                    **base,
                    "usage_date": date(2026, 5, 19),
                    "entity_id": "bot",
                    "resource_type": "compute",
                    "expected_credits": Decimal(100),
                    "recorded_credits": Decimal(70),
                    "delta_credits": Decimal(-30),
                    "status": "ledger_under",
                    "within_tolerance": False,
                },
                {
                    **base,
                    "usage_date": date(2026, 5, 19),
                    "entity_id": "dash",
                    "resource_type": "compute",
                    "expected_credits": Decimal(100),
                    "recorded_credits": Decimal("99.99"),
                    "delta_credits": Decimal("-0.01"),
                    "status": "matched",
                    "within_tolerance": True,
                },
            ],
        )
    [a] = rules.break_alerts(w.engine, S)
    assert a.kind == AlertKind.RECONCILIATION_BREAK and a.severity == "error"
    assert a.subject == "phala/bot/compute" and a.period == "2026-05-19"
    assert "ledger_under" in a.summary and a.details["delta_credits"] == "-30"


def test_anomaly(db_url: str) -> None:
    w = wh(db_url)
    row = {
        "usage_date": date(2026, 5, 19),
        "entity_type": "app",
        "resource_type": "compute",
        "baseline_days": 14,
        "impact_pct": Decimal(300),
        "load_id": "t",
    }
    with w.engine.begin() as conn:
        conn.execute(
            usage_anomaly.insert(),
            [
                {
                    **row,
                    "entity_id": "bot",
                    "credits": Decimal(400),
                    "baseline_credits": Decimal(100),
                    "impact_credits": Decimal(300),
                    "direction": "spike",
                    "is_anomaly": True,
                },
                {
                    **row,
                    "entity_id": "dash",
                    "credits": Decimal(101),
                    "baseline_credits": Decimal(100),
                    "impact_credits": Decimal(1),
                    "direction": "spike",
                    "is_anomaly": False,
                },
            ],
        )
    [a] = rules.break_alerts(w.engine, S)
    assert a.kind == AlertKind.ANOMALY and a.subject == "entity/bot/compute"
    assert "spike" in a.summary and "impact 300" in a.summary


def test_stale_data_after_deadline(db_url: str) -> None:
    w = wh(db_url)
    settings = load_settings(
        alerts={"stale_deadline_utc": "09:00"}, neon={"enabled": False}, forge={"enabled": False}
    )
    before = datetime(2026, 5, 20, 8, 0, tzinfo=UTC)
    after = datetime(2026, 5, 20, 9, 30, tzinfo=UTC)
    assert rules.due_days(before, settings)[-1] == date(2026, 5, 18)
    assert rules.due_days(after, settings)[-1] == date(2026, 5, 19)
    cov = {
        "provider": "phala",
        "account_id": "app1",
        "row_count": 3,
        "load_id": "t",
        "fetched_at": datetime(2026, 5, 20),
    }
    with w.engine.begin() as conn:
        conn.execute(
            provider_coverage.insert(),
            [
                {**cov, "usage_date": date(2026, 5, d), "status": "complete", "reason": None}
                for d in (16, 17, 18)
            ],
        )
    assert rules.stale_alerts(w.engine, settings, before) == []
    [a] = rules.stale_alerts(w.engine, settings, after)
    assert (
        a.kind == AlertKind.STALE_DATA
        and a.subject == "provider/phala"
        and a.period == "2026-05-19"
    )
    with w.engine.begin() as conn:
        conn.execute(
            provider_coverage.insert(),
            [{**cov, "usage_date": date(2026, 5, 19), "status": "complete", "reason": None}],
        )
    assert rules.stale_alerts(w.engine, settings, after) == []


def test_stale_data_unavailable_day_names_reason() -> None:
    rows = [
        {
            "provider": "neon",
            "account_id": "p1",
            "usage_date": date(2026, 5, 19),
            "status": "unavailable",
            "reason": "HTTP 503",
        }
    ]
    [a] = rules.alerts_from_coverage(rows, [date(2026, 5, 19)], ["neon"], S)
    assert "could not be fetched" in a.summary and "p1: HTTP 503" in a.summary


def test_ledger_sync_failures() -> None:
    failed = datetime(2026, 5, 20, 7, 0, tzinfo=UTC)
    for code in ("lm_unreachable", "lm_unavailable", "lm_error", "license_not_recognized"):
        status = SyncStatus(
            synced_at=datetime(2026, 5, 20, 6, 0, tzinfo=UTC),
            last_sync_failed_at=failed,
            last_sync_failure_code=code,
        )
        [a] = rules.ledger_sync_alerts(status, S)
        assert a.kind == AlertKind.LEDGER_SYNC and a.threshold == code and code in a.summary
    assert rules.ledger_sync_alerts(SyncStatus(synced_at=failed), S) == []
    # a successful sync after the failure clears it
    recovered = SyncStatus(
        synced_at=datetime(2026, 5, 20, 8, 0, tzinfo=UTC),
        last_sync_failed_at=failed,
        last_sync_failure_code="lm_error",
    )
    assert rules.ledger_sync_alerts(recovered, S) == []


def test_run_failure_key_per_job_and_partition() -> None:
    a = rules.run_failure_alert(
        job_name="daily_usage_job", run_id="r1", partition="2026-05-19", message="boom", settings=S
    )
    b = rules.run_failure_alert(
        job_name="daily_usage_job", run_id="r2", partition="2026-05-19", message="again", settings=S
    )
    assert (
        a.kind == AlertKind.RUN_FAILURE and a.dedup_key == b.dedup_key
    )  # repeated failures collapse
    assert a.dedup_key == "usage-orchestration/run_failure/job/daily_usage_job/2026-05-19"
    r = rules.run_failure_alert(
        job_name="daily_usage_job",
        run_id="r3",
        partition="2026-05-13...2026-05-19",
        message="x",
        settings=S,
    )
    assert r.period == "2026-05-13...2026-05-19" and "/runs/r3" in r.links[0]["href"]


def test_sensor_failure_alert() -> None:
    a = rules.sensor_failure_alert("budget_alerts", "OperationalError: no such table", S)
    assert (
        a.kind == AlertKind.SENSOR_FAILURE
        and a.severity == "error"
        and a.subject == "sensor/budget_alerts"
    )


def test_recency_decides_paging() -> None:
    now = datetime.combine(date(2026, 5, 20), time(10), tzinfo=UTC)
    assert is_recent("2026-05-17", now, 3) and not is_recent("2026-05-16", now, 3)
    assert is_recent("2026-04", now, 30) and not is_recent("2026-04", now, 3)
    assert is_recent("", now, 0)
