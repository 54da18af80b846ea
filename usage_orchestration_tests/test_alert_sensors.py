"""The Dagster alert sensors, evaluated with real contexts against the loopback PagerDuty sandbox.

Sensors only record alerts; ``_deliver`` runs the ``deliver_alerts`` job (what a committed
``alert_delivery`` tick requests) in-process."""

# No `from __future__ import annotations`: Dagster reads the op's real `context` annotation.

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    OpExecutionContext,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
    job,
    op,
)
from sqlalchemy import text

from usage_orchestration.alerts.outbox import Outbox
from usage_orchestration.defs.alerts import AlertChannelsResource, make_sensors
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.analysis_schema import budget_status
from usage_orchestration.warehouse.store import Warehouse

ROUTING_KEY = "sandbox-routing-key-000000000000"


def _settings(server: SandboxServer) -> UsageSettings:
    return load_settings(
        alerts={
            "pagerduty_events_url": f"{server.url}/pagerduty/v2/enqueue",
            "page_recent_days": 3650,
        },
        neon={"enabled": False},
        forge={"enabled": False},
    )


def _resources(settings: UsageSettings, db_url: str) -> dict[str, Any]:
    return {
        "settings": settings,
        "warehouse": WarehouseResource(url=db_url),
        "alert_channels": AlertChannelsResource(pagerduty_routing_key=ROUTING_KEY),
    }


def _sensors(settings: UsageSettings) -> dict[str, Any]:
    return {s.name: s for s in make_sensors(settings)}


def _overrun(over: bool) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    return {
        "as_of_date": today,
        "month": today.strftime("%Y-%m"),
        "entity_id": "bbbb",
        "entity_type": "app",
        "entity_name": "Support Bot",
        "credits_used": Decimal(120 if over else 60),
        "monthly_budget": Decimal(100),
        "budget_percent": Decimal(120 if over else 60),
        "budget_remaining": Decimal(-20 if over else 40),
        "over_budget": over,
        "highest_threshold_crossed": Decimal(100) if over else None,
        "thresholds_crossed": "100" if over else "",
        "days_of_data": today.day,
        "load_id": "t",
    }


def _write_budget(db_url: str, row: dict[str, Any]) -> None:
    wh = Warehouse(db_url)
    wh.replace_days(budget_status, [row["as_of_date"]], [row], day_column="as_of_date")


def _tick(
    sensor: Any, instance: DagsterInstance, cursor: str | None, resources: dict[str, Any]
) -> SensorResult:
    ctx = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(ctx)
    assert isinstance(result, SensorResult)
    return result


def _deliver(resources: dict[str, Any], must_succeed: bool = True) -> None:
    from usage_orchestration.defs.alerts import deliver_alerts_job

    result = deliver_alerts_job.execute_in_process(
        resources=resources, instance=DagsterInstance.ephemeral(), raise_on_error=must_succeed
    )
    assert result.success or not must_succeed


def _pd(server: SandboxServer, action: str) -> list[dict[str, Any]]:
    return [e for e in server.sandbox.received("pagerduty") if e["event_action"] == action]


def test_budget_overrun_pages_once_and_resolves_once(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensor = _sensors(settings)["budget_alerts"]
    instance = DagsterInstance.ephemeral()
    _write_budget(db_url, _overrun(True))
    instance.report_runless_asset_event(AssetMaterialization("budget_status"))

    first = _tick(sensor, instance, None, resources)
    assert _pd(sandbox_server, "trigger") == []  # the sensor records; the delivery run sends
    _deliver(resources)
    assert len(_pd(sandbox_server, "trigger")) == 1
    # the same tick evaluated twice (same input cursor), then a later tick with nothing new
    _tick(sensor, instance, None, resources)
    second = _tick(sensor, instance, first.cursor, resources)
    _deliver(resources)
    assert "no new materializations" in second.skip_reason.skip_message  # type: ignore[union-attr]
    [page] = _pd(sandbox_server, "trigger")
    assert page["dedup_key"].startswith("usage-orchestration/budget_threshold/entity/bbbb/")
    assert page["event"]["payload"]["severity"] == "critical"
    assert "Support Bot is over budget" in page["event"]["payload"]["summary"]
    assert json.loads(first.cursor or "{}")["seen"]  # the cursor records what it has seen

    # the budget is fixed and budget_status re-materialized: one resolve
    _write_budget(db_url, _overrun(False))
    instance.report_runless_asset_event(AssetMaterialization("budget_status"))
    third = _tick(sensor, instance, second.cursor, resources)
    _tick(sensor, instance, third.cursor, resources)
    _deliver(resources)
    _deliver(resources)
    [resolve] = _pd(sandbox_server, "resolve")
    assert resolve["dedup_key"] == page["dedup_key"] and resolve["collapsed"] is False
    assert len(_pd(sandbox_server, "trigger")) == 1


def test_broken_sensor_sends_sensor_failure_and_recovers(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensor = _sensors(settings)["budget_alerts"]
    instance = DagsterInstance.ephemeral()
    wh = Warehouse(db_url)
    with wh.engine.begin() as conn:  # a table that does not match the code: every read fails
        conn.execute(text("CREATE TABLE budget_status (wrong INTEGER)"))
    with pytest.raises(Exception, match="month|column"):
        sensor(build_sensor_context(instance=instance, resources=resources))
    # recorded and delivered by the run, or — when the broken schema makes the outbox itself
    # unreachable — sent directly by the sensor: one page either way
    _deliver(resources, must_succeed=False)
    [page] = _pd(sandbox_server, "trigger")
    assert page["dedup_key"] == "usage-orchestration/sensor_failure/sensor/budget_alerts/"
    row = Outbox(wh.engine, settings.alerts).get(page["dedup_key"])
    assert row is None or row["state"] == "open"  # None: the outbox was unreachable

    with wh.engine.begin() as conn:
        conn.execute(text("DROP TABLE budget_status"))
    budget_status.create(wh.engine)
    _tick(sensor, instance, None, resources)
    _deliver(resources)
    [resolve] = _pd(sandbox_server, "resolve")
    assert resolve["dedup_key"] == page["dedup_key"]


@op
def explode(context: OpExecutionContext) -> None:
    if context.run.tags.get("test/succeed") != "true":
        raise RuntimeError("provider exploded")


@job
def failing_job() -> None:
    explode()


def _failure_context(
    instance: DagsterInstance, tags: dict[str, str], resources: dict[str, Any]
) -> Any:
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    records = instance.get_records_for_run(
        result.run_id, of_type=DagsterEventType.RUN_FAILURE
    ).records
    event = records[0].event_log_entry.dagster_event
    assert event is not None
    return build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources=resources,
    ).for_run_failure()


def test_run_failure_pages_but_not_runs_about_to_be_retried(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensors = _sensors(settings)
    instance = DagsterInstance.ephemeral()

    retried = _failure_context(instance, {"dagster/will_retry": "true"}, resources)
    sensors["run_failure_alerts"](retried)
    assert _pd(sandbox_server, "trigger") == []

    final = _failure_context(instance, {"dagster/partition": "2026-05-19"}, resources)
    sensors["run_failure_alerts"](final)
    sensors["run_failure_alerts"](final)  # evaluated twice
    _deliver(resources)
    _deliver(resources)
    [page] = _pd(sandbox_server, "trigger")
    assert page["dedup_key"] == "usage-orchestration/run_failure/job/failing_job/2026-05-19"
    assert "provider exploded" in page["event"]["payload"]["summary"]


def test_a_failed_run_of_another_code_location_or_the_cli_pages(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    """The sensor is evaluated as the daemon does (cursor first, then the new run-status
    events): a failure of a run from another code location, and of a run with no origin at all
    (launched with `dagster asset materialize`), both page — in one tick (a tick that stopped
    after the first run would leave a burst of failures 30 s apart each)."""
    import uuid

    from dagster import DagsterRun
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensor = _sensors(settings)["run_failure_alerts"]
    instance = DagsterInstance.ephemeral()

    def tick(cursor: str | None) -> str | None:
        ctx = build_sensor_context(
            instance=instance, cursor=cursor, resources=resources, repository_name="usage"
        )
        return sensor.evaluate_tick(ctx).cursor  # the daemon's evaluation, not the user fn

    cursor = tick(None)  # the first tick only sets the cursor
    other = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin("another_location"),
            repository_name="__repository__",
        ),
        job_name="other_job",
    )
    for job_name, origin in (("other_job", other), ("cli_job", None)):
        run = instance.add_run(
            DagsterRun(
                job_name=job_name,
                run_id=str(uuid.uuid4()),
                status=DagsterRunStatus.STARTED,
                remote_job_origin=origin,
                tags={"dagster/partition": "2026-05-19"},
            )
        )
        instance.report_run_failed(run, "boom")
    tick(cursor)
    _deliver(resources)
    keys = sorted(e["dedup_key"] for e in _pd(sandbox_server, "trigger"))
    assert keys == [
        "usage-orchestration/run_failure/job/cli_job/2026-05-19",
        "usage-orchestration/run_failure/job/other_job/2026-05-19",
    ]


def test_pagerduty_down_three_ticks_then_each_alert_once(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    from usage_orchestration.sandbox.core import Fault

    settings = load_settings(
        alerts={
            "pagerduty_events_url": f"{sandbox_server.url}/pagerduty/v2/enqueue",
            "retry_base_s": 0.001,  # no waiting between ticks in this test
            "routing": {
                "critical": "pagerduty",
                "error": "pagerduty",
                "warning": "none",
                "info": "none",
            },
        },
        neon={"enabled": False},
        forge={"enabled": False},
    )
    resources = _resources(settings, db_url)
    sensors = _sensors(settings)
    instance = DagsterInstance.ephemeral()
    rows = [{**_overrun(True), "entity_id": f"e{i}", "entity_name": f"E{i}"} for i in range(4)]
    Warehouse(db_url).replace_days(
        budget_status, [rows[0]["as_of_date"]], rows, day_column="as_of_date"
    )
    sandbox_server.sandbox.add_fault("pagerduty", Fault(status=503, count=3))

    cursor = _tick(sensors["budget_alerts"], instance, None, resources).cursor
    for _ in range(3):  # three delivery runs: 503 (the first failure blocks the channel)
        request = _tick(sensors["alert_delivery"], instance, None, resources)
        assert len(request.run_requests) == 1  # something is due: a delivery run is requested
        _deliver(resources)
    assert _pd(sandbox_server, "trigger") == []
    _deliver(resources)  # recovered
    _tick(sensors["budget_alerts"], instance, cursor, resources)
    _deliver(resources)
    idle = sensors["alert_delivery"](
        build_sensor_context(instance=instance, cursor=None, resources=resources)
    )
    assert isinstance(idle, SkipReason)  # nothing due: no run
    keys = [e["dedup_key"] for e in _pd(sandbox_server, "trigger")]
    assert sorted(keys) == sorted(
        f"usage-orchestration/budget_threshold/entity/e{i}/{rows[0]['month']}/100pct"
        for i in range(4)
    )
    assert sandbox_server.sandbox.request_count("pagerduty", 503) == 3


def test_stale_data_sensor_pages_missing_day_and_ledger_sync_failure(
    db_url: str, ledger_url: str, sandbox_server: SandboxServer
) -> None:
    from datetime import timedelta

    from usage_orchestration.sandbox.demo_ledger import seed_demo_ledger

    settings = load_settings(
        alerts={
            "pagerduty_events_url": f"{sandbox_server.url}/pagerduty/v2/enqueue",
            "stale_deadline_utc": "00:00",
        },
        ledger={"backend": "sql", "database_url": ledger_url},
        neon={"enabled": False},
        forge={"enabled": False},
    )
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=i) for i in (3, 2, 1)]
    seed_demo_ledger(ledger_url, settings, days, 7, sync_failure="lm_unreachable")
    resources = _resources(settings, db_url)
    sensor = _sensors(settings)["stale_data_alerts"]
    instance = DagsterInstance.ephemeral()

    first = _tick(sensor, instance, None, resources)
    _deliver(resources)
    keys = {e["dedup_key"] for e in _pd(sandbox_server, "trigger")}
    sync_key = "usage-orchestration/ledger_sync/license-manager//lm_unreachable"
    assert sync_key in keys
    assert f"usage-orchestration/stale_data/provider/phala/{days[-1].isoformat()}" in keys

    seed_demo_ledger(ledger_url, settings, days, 7)  # a later sync succeeded
    _tick(sensor, instance, first.cursor, resources)
    _deliver(resources)
    assert [e["dedup_key"] for e in _pd(sandbox_server, "resolve")] == [sync_key]


def test_successful_rerun_resolves_the_failure(db_url: str, sandbox_server: SandboxServer) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensors = _sensors(settings)
    instance = DagsterInstance.ephemeral()
    sensors["run_failure_alerts"](
        _failure_context(instance, {"dagster/partition": "2026-05-19"}, resources)
    )
    _deliver(resources)

    ok = failing_job.execute_in_process(
        instance=instance, tags={"dagster/partition": "2026-05-19", "test/succeed": "true"}
    )
    run = instance.get_run_by_id(ok.run_id)
    assert run is not None and run.status == DagsterRunStatus.SUCCESS
    event = instance.get_records_for_run(ok.run_id, of_type=DagsterEventType.RUN_SUCCESS).records[0]
    ctx = build_run_status_sensor_context(
        sensor_name="run_success_resolves",
        dagster_event=event.event_log_entry.dagster_event,  # type: ignore[arg-type]
        dagster_instance=instance,
        dagster_run=run,
        resources=resources,
    )
    sensors["run_success_resolves"](ctx)
    sensors["run_success_resolves"](ctx)  # twice: one resolve
    _deliver(resources)
    _deliver(resources)
    [resolve] = _pd(sandbox_server, "resolve")
    assert resolve["dedup_key"] == "usage-orchestration/run_failure/job/failing_job/2026-05-19"


def test_success_before_delivery_leaves_no_page_open(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    """The failure is recorded, and a re-run succeeds before any deliver_alerts run: the queued
    trigger is cancelled, so nobody is paged for a failure that is already fixed."""
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensors = _sensors(settings)
    instance = DagsterInstance.ephemeral()
    sensors["run_failure_alerts"](
        _failure_context(instance, {"dagster/partition": "2026-05-19"}, resources)
    )
    ok = failing_job.execute_in_process(
        instance=instance, tags={"dagster/partition": "2026-05-19", "test/succeed": "true"}
    )
    run = instance.get_run_by_id(ok.run_id)
    assert run is not None
    event = instance.get_records_for_run(ok.run_id, of_type=DagsterEventType.RUN_SUCCESS).records[0]
    sensors["run_success_resolves"](
        build_run_status_sensor_context(
            sensor_name="run_success_resolves",
            dagster_event=event.event_log_entry.dagster_event,  # type: ignore[arg-type]
            dagster_instance=instance,
            dagster_run=run,
            resources=resources,
        )
    )
    _deliver(resources)
    assert sandbox_server.sandbox.request_count("pagerduty") == 0
    [row] = Outbox(Warehouse(db_url).engine, settings.alerts).alerts(kind="run_failure")
    assert (row["state"], row["trigger_status"], row["resolve_status"]) == (
        "resolved",
        "cancelled",
        "skipped",
    )


def test_successful_range_run_resolves_failures_of_days_inside_it(
    db_url: str, sandbox_server: SandboxServer
) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, db_url)
    sensors = _sensors(settings)
    instance = DagsterInstance.ephemeral()
    for day in ("2026-05-19", "2026-05-25"):
        sensors["run_failure_alerts"](
            _failure_context(instance, {"dagster/partition": day}, resources)
        )
    _deliver(resources)
    assert len(_pd(sandbox_server, "trigger")) == 2

    # a backfill of 2026-05-10...2026-05-20 as one run redoes the 19th, not the 25th
    ok = failing_job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-05-10",
            "dagster/asset_partition_range_end": "2026-05-20",
            "test/succeed": "true",
        },
    )
    run = instance.get_run_by_id(ok.run_id)
    assert run is not None
    event = instance.get_records_for_run(ok.run_id, of_type=DagsterEventType.RUN_SUCCESS).records[0]
    ctx = build_run_status_sensor_context(
        sensor_name="run_success_resolves",
        dagster_event=event.event_log_entry.dagster_event,  # type: ignore[arg-type]
        dagster_instance=instance,
        dagster_run=run,
        resources=resources,
    )
    sensors["run_success_resolves"](ctx)
    _deliver(resources)
    [resolve] = _pd(sandbox_server, "resolve")
    assert resolve["dedup_key"] == "usage-orchestration/run_failure/job/failing_job/2026-05-19"


def test_sensor_failure_is_sent_directly_when_the_outbox_is_unreachable(
    sandbox_server: SandboxServer,
) -> None:
    settings = _settings(sandbox_server)
    resources = _resources(settings, "sqlite:////proc/no-such-dir/warehouse.sqlite")
    sensor = _sensors(settings)["reconciliation_alerts"]
    with pytest.raises(OSError):
        sensor(build_sensor_context(instance=DagsterInstance.ephemeral(), resources=resources))
    [page] = _pd(sandbox_server, "trigger")
    assert page["dedup_key"] == "usage-orchestration/sensor_failure/sensor/reconciliation_alerts/"
    assert "reconciliation_alerts failed" in page["event"]["payload"]["summary"]


def test_sensor_failure_alert_masks_database_password() -> None:
    from usage_orchestration.defs.alerts import _redacted

    settings = load_settings(warehouse_url="postgresql://svc:hunter2-secret@db.internal:5432/wh")
    masked = _redacted("OperationalError: password=hunter2-secret rejected", settings)
    assert "hunter2-secret" not in masked and "***" in masked
