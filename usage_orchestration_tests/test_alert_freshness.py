"""Freshness in the UI: every daily asset of the location has a time-partition freshness check
(severity ERROR) with the deadline of the settings, run by a sensor that is on from the start.
With a fixed clock after the deadline, a daily asset whose yesterday partition never landed fails
its check; one whose partition landed passes; before the deadline the day before is what counts.
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
)
from dagster._core.definitions.asset_checks.asset_check_factories.freshness_checks import (
    time_partition,
)

from usage_orchestration.defs import freshness
from usage_orchestration.defs.location import build_definitions
from usage_orchestration.settings import load_settings

DAILY = {
    "phala_usage",
    "neon_usage",
    "forge_usage",
    "ledger_daily_usage",
    "usage_reconciliation",
    "budget_status",
    "provider_cap_status",
    "usage_anomalies",
    "focus_costs",
}
CHECKED = ("phala_usage", "budget_status")


def _defs(tmp_path, **alerts) -> Definitions:
    settings = load_settings(
        warehouse_url=f"sqlite:///{tmp_path / 'wh.sqlite'}",
        partitions_start="2026-11-01",
        alerts=alerts,
    )
    return build_definitions(settings)


def test_every_daily_asset_has_an_error_freshness_check_and_a_running_sensor(tmp_path) -> None:
    repo = _defs(tmp_path).get_repository_def()
    checks = {k for k in repo.asset_checks_defs_by_key if k.name == "freshness_check"}
    assert {k.asset_key.to_user_string() for k in checks} == DAILY
    spec = next(
        s
        for cd in repo.asset_checks_defs_by_key.values()
        for s in cd.check_specs
        if s.key == AssetCheckKey(AssetKey("budget_status"), "freshness_check")
    )
    assert spec.metadata["dagster/freshness_params"].value == {
        "deadline_cron": "0 9 * * *",
        "timezone": "UTC",
    }
    sensor = repo.get_sensor_def(freshness.SENSOR_NAME)
    assert sensor.default_status == DefaultSensorStatus.RUNNING


def test_deadline_follows_the_settings() -> None:
    assert freshness.deadline_cron(time(12, 30)) == "30 12 * * *"


def _run_checks(tmp_path, monkeypatch, now: datetime, landed: dict[str, list[str]]) -> dict:
    """Run the freshness checks of CHECKED at ``now`` with ``landed`` partitions materialized;
    {asset: (passed, severity, description)}."""
    monkeypatch.setattr(time_partition, "get_current_timestamp", lambda: now.timestamp())
    job = define_asset_job(
        "freshness_only",
        selection=AssetSelection.checks(
            *[AssetCheckKey(AssetKey(a), "freshness_check") for a in CHECKED]
        ),
    )
    defs = Definitions.merge(_defs(tmp_path), Definitions(jobs=[job]))
    instance = DagsterInstance.ephemeral()
    for asset, days in landed.items():
        for day in days:
            instance.report_runless_asset_event(AssetMaterialization(asset, partition=day))
    result = defs.resolve_job_def("freshness_only").execute_in_process(
        instance=instance, raise_on_error=False
    )
    return {
        e.asset_key.to_user_string(): (e.passed, e.severity.value, e.description or "")
        for e in result.get_asset_check_evaluations()
    }


def test_late_partition_fails_and_landed_partition_passes(tmp_path, monkeypatch) -> None:
    now = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)  # after the 09:00 deadline
    out = _run_checks(
        tmp_path,
        monkeypatch,
        now,
        {"phala_usage": ["2026-11-29", "2026-11-30"], "budget_status": ["2026-11-29"]},
    )
    passed, _, _ = out["phala_usage"]
    assert passed  # yesterday landed
    passed, severity, description = out["budget_status"]
    assert not passed and severity == "ERROR"  # red in the catalog
    assert "2026-11-30" in description  # names the partition that is late


def test_before_the_deadline_the_day_before_counts(tmp_path, monkeypatch) -> None:
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)  # 06:00 run may still be going
    out = _run_checks(
        tmp_path, monkeypatch, now, {"phala_usage": ["2026-11-29"], "budget_status": []}
    )
    assert out["phala_usage"][0]  # 2026-11-29 is what is due before today's deadline
    assert not out["budget_status"][0]
    assert "2026-11-29" in out["budget_status"][2]
