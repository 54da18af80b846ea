"""A run whose worker died without reporting (SIGKILL, OOM) is marked failed by
``stuck_run_detector``, so it pages as stuck_run and run monitoring frees its pool slots; a live
worker, or a deployment whose workers run on other hosts, is left alone."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    MetadataValue,
    build_sensor_context,
)
from dagster._core.events import EngineEventData

from usage_orchestration.defs.alerts import AlertChannelsResource, make_sensors
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.settings import load_settings


def _started_run(instance: DagsterInstance, pid: int) -> DagsterRun:
    run = instance.add_run(
        DagsterRun(
            job_name="daily_usage_job", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTED
        )
    )
    # what the default run launcher reports when it starts the run worker
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).",
        run,
        EngineEventData(metadata={"pid": MetadataValue.int(pid)}),
    )
    return run


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tick(instance: DagsterInstance, db_url: str, **alerts: Any) -> Any:
    settings = load_settings(warehouse_url=db_url, alerts=alerts)
    sensor = {s.name: s for s in make_sensors(settings)}["stuck_run_detector"]
    resources = {
        "settings": settings,
        "warehouse": WarehouseResource(url=db_url),
        "alert_channels": AlertChannelsResource(pagerduty_routing_key="", slack_webhook_url=""),
    }
    return sensor(build_sensor_context(instance=instance, resources=resources))


def test_a_run_whose_worker_is_gone_is_marked_failed(tmp_path: Any) -> None:
    db_url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    instance = DagsterInstance.ephemeral()
    dead = _started_run(instance, _dead_pid())
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive_proc:
        alive = _started_run(instance, alive_proc.pid)
        try:
            result = _tick(instance, db_url)
        finally:
            alive_proc.kill()
    assert dead.run_id in str(result.skip_message)
    assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED


def test_workers_on_other_hosts_are_left_to_run_monitoring(tmp_path: Any) -> None:
    db_url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    instance = DagsterInstance.ephemeral()
    run = _started_run(instance, _dead_pid())
    result = _tick(instance, db_url, detect_dead_local_runs=False)
    assert "detect_dead_local_runs is off" in str(result.skip_message)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED


_CHILD = """
import sys, time
from pathlib import Path
from dagster import DagsterInstance, DailyPartitionsDefinition, asset, materialize

flag = Path(sys.argv[2])

@asset(partitions_def=DailyPartitionsDefinition(start_date="2026-05-01"))
def phala_usage() -> None:
    flag.write_text("in the step")
    time.sleep(120)  # killed here

materialize(
    [phala_usage],
    instance=DagsterInstance.local_temp(tempdir=sys.argv[1]),
    partition_key="2026-05-19",
)
"""


def test_a_run_killed_mid_step_is_failed_and_pages_as_stuck_run(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A real run is SIGKILLed inside its step: the detector finds its worker gone and fails
    it, and run_failure_alerts (evaluated as the daemon does) records a stuck_run alert for the
    interrupted asset and day — not a generic failure, and not silence."""
    import signal
    import time as _time
    from datetime import UTC, datetime, timedelta

    from dagster import RunsFilter

    from usage_orchestration.alerts.outbox import Outbox
    from usage_orchestration.defs import alerts as alert_defs
    from usage_orchestration.warehouse.store import Warehouse

    home = tmp_path / "dagster"
    home.mkdir()
    flag = tmp_path / "in_step"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(home), str(flag)])
    try:
        deadline = _time.monotonic() + 60
        while not flag.exists():
            assert child.poll() is None and _time.monotonic() < deadline, "the run never started"
            _time.sleep(0.1)
        child.send_signal(signal.SIGKILL)  # the OOM killer, a lost node
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    instance = DagsterInstance.local_temp(tempdir=str(home))
    [record] = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    run = record.dagster_run
    # what the default run launcher reports for its run worker (materialize() has none)
    instance.report_engine_event(
        f"Started process for run (pid: {child.pid}).",
        run,
        EngineEventData(metadata={"pid": MetadataValue.int(child.pid)}),
    )
    db_url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    settings = load_settings(warehouse_url=db_url)
    resources = {
        "settings": settings,
        "warehouse": WarehouseResource(url=db_url),
        "alert_channels": AlertChannelsResource(pagerduty_routing_key="", slack_webhook_url=""),
    }
    sensors = {s.name: s for s in make_sensors(settings)}
    failures = sensors["run_failure_alerts"]
    cursor = failures.evaluate_tick(
        build_sensor_context(instance=instance, resources=resources)
    ).cursor  # the first tick sets the cursor
    later = datetime.now(UTC) + timedelta(seconds=60)  # past the detector's 30 s grace
    monkeypatch.setattr(alert_defs, "_now", lambda: later)
    sensors["stuck_run_detector"](build_sensor_context(instance=instance, resources=resources))
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE  # type: ignore[union-attr]

    failures.evaluate_tick(
        build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    )
    [alert] = Outbox(Warehouse(db_url).engine, settings.alerts).alerts(state="open")
    assert alert["kind"] == "stuck_run"
    assert alert["dedup_key"] == (
        f"usage-orchestration/stuck_run/job/{run.job_name}/phala_usage/2026-05-19"
    )
    assert "died without reporting" in alert["summary"]
