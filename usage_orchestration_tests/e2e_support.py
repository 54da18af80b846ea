"""Helpers of the daemon end-to-end test (``test_e2e_daemon.py``): processes on loopback, the
webserver's GraphQL API as the UI uses it, the sandbox's receipts and a throwaway PostgreSQL
database for the Dagster instance."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
LOCATION = "usage_orchestration"  # workspace.yaml
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
SECRETS = {
    "PHALA_API_KEY": "sandbox-phala-key",
    "NEON_API_KEY": "sandbox-neon-key",
    "FORGE_EMAIL": "finance-bot@example.com",
    "FORGE_API_TOKEN": "sandbox-forge-token",
    "LEDGER_API_TOKEN": "sandbox-ledger-token",
    "PAGERDUTY_ROUTING_KEY": "sandbox-routing-key-000000000000",
}
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(what: str, probe: Callable[[], Any], timeout_s: float, every_s: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last!r}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


class Stack:
    """Processes started for a test, each in its own session (stopped as a group) with its
    output in a log file."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def tail(self, name: str, n: int = 60) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


# -- GraphQL, as the UI calls it ----------------------------------------------------------------
def graphql(ui: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = httpx.post(
        f"{ui}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    resp.raise_for_status()
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status }
    ... on PythonError { message }
  }
}
"""

BACKFILL_RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status } }
  }
}
"""

LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
  }
}
"""

RUN_STATUS = """
query Run($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { runId status } }
}
"""

ASSETS = """
query { assetNodes { assetKey { path } isPartitioned isMaterializable } }
"""

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!, $after: Float, $limit: Int) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState { ticks(afterTimestamp: $after, limit: $limit) { status timestamp endTimestamp } }
    }
  }
}
"""


def sensor_ticks(ui: str, sensor: str, after: float, limit: int = 50) -> list[dict[str, Any]]:
    """``sensor``'s ticks that started after ``after`` (epoch seconds), newest first."""
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "sensorName": sensor,
    }
    found = graphql(ui, SENSOR_TICKS, {"selector": selector, "after": after, "limit": limit})[
        "sensorOrError"
    ]
    assert found["__typename"] == "Sensor", found
    return [t for t in found["sensorState"]["ticks"] if t["timestamp"] > after]


def await_sensor_ticks(ui: str, sensor: str, n: int, timeout_s: float = 180) -> None:
    """Wait until ``sensor`` has finished ``n`` ticks that started after now: the evidence that
    later evaluations sent nothing new, however slow the machine is."""
    mark = time.time()
    wait(
        f"{n} more ticks of {sensor}",
        lambda: len([t for t in sensor_ticks(ui, sensor, mark) if t["status"] != "STARTED"]) >= n,
        timeout_s,
    )


def backfill(
    ui: str, paths: list[list[str]], partitions: list[str], timeout_s: float
) -> list[dict[str, Any]]:
    """Launch a backfill as the UI's 'Materialize' dialog does and wait until it is done."""
    data = graphql(
        ui,
        LAUNCH_BACKFILL,
        {"params": {"assetSelection": [{"path": p} for p in paths], "partitionNames": partitions}},
    )["launchPartitionBackfill"]
    assert data["__typename"] == "LaunchBackfillSuccess", data
    backfill_id = data["backfillId"]

    def done() -> str | None:
        status = graphql(ui, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"][
            "status"
        ]
        return (
            status
            if status
            in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
            else None
        )

    status = wait(f"backfill {backfill_id}", done, timeout_s, every_s=3)
    runs = graphql(ui, BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]["results"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    return runs


def launch_run(ui: str, job: str, assets: list[str], partition: str) -> str:
    """Launch one run of ``job`` for ``assets`` and day ``partition`` (the UI's 'Materialize
    selected' for one partition: no backfill daemon in between); its run id."""
    data = graphql(
        ui,
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "jobName": job,
                    "assetSelection": [{"path": [a]} for a in assets],
                },
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
            }
        },
    )["launchRun"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return str(data["run"]["runId"])


def run_status(ui: str, run_id: str) -> str:
    found = graphql(ui, RUN_STATUS, {"id": run_id})["runOrError"]
    assert found["__typename"] == "Run", found
    return str(found["status"])


def await_run(ui: str, run_id: str, timeout_s: float) -> str:
    return str(
        wait(
            f"run {run_id} to finish",
            lambda: s if (s := run_status(ui, run_id)) in FINISHED else None,
            timeout_s,
        )
    )


# -- the sandbox --------------------------------------------------------------------------------
def received(sandbox_url: str, api: str = "pagerduty") -> list[dict[str, Any]]:
    return httpx.get(f"{sandbox_url}/_sandbox/received/{api}", timeout=10).json()


def sandbox_post(sandbox_url: str, path: str, body: dict[str, Any]) -> None:
    httpx.post(f"{sandbox_url}/_sandbox/{path}", json=body, timeout=10).raise_for_status()


def pages(sandbox_url: str, action: str, key: Callable[[str], bool]) -> list[dict[str, Any]]:
    """PagerDuty events of ``action`` whose dedup key satisfies ``key``, in arrival order."""
    return [
        e
        for e in received(sandbox_url)
        if e["event_action"] == action and key(str(e["dedup_key"] or ""))
    ]


def safe_received(url: str) -> list[dict[str, Any]]:
    try:
        return [
            {"action": e["event_action"], "key": e["dedup_key"], "collapsed": e["collapsed"]}
            for e in received(url)
        ]
    except Exception:
        return []


# -- PostgreSQL ---------------------------------------------------------------------------------
@contextmanager
def scratch_postgres_database(server_url: str) -> Iterator[str]:
    """A new, uniquely named database on ``server_url``'s server, dropped afterwards (with the
    connections Dagster's processes left open); yields its psycopg2 URL, the driver
    dagster-postgres ships (a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"usage_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = make_url(server_url).set(drivername="postgresql")
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # an identifier: not bindable; ours, not input
    try:
        yield admin.set(drivername="postgresql+psycopg2", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
