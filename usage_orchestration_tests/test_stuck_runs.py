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
