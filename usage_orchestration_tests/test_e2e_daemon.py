"""End to end through the real Dagster daemon.

Starts the sandbox (``usage-orchestration sandbox``) and ``dagster dev`` (webserver + daemon) on
loopback with a temporary instance, seeds the demo ledger (Support Bot over budget this month),
launches a 7-day backfill of every asset through the webserver's GraphQL API as the UI does,
waits for it, and checks that the budget-overrun page reaches the PagerDuty sandbox exactly
once. Then it raises Support Bot's budget in the ledger, re-materializes ``budget_status`` for the
last day the same way, and checks that exactly one resolve arrives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

REPO = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
SECRETS = {
    "PHALA_API_KEY": "sandbox-phala-key",
    "NEON_API_KEY": "sandbox-neon-key",
    "FORGE_EMAIL": "finance-bot@example.com",
    "FORGE_API_TOKEN": "sandbox-forge-token",
    "LEDGER_API_TOKEN": "sandbox-ledger-token",
    "PAGERDUTY_ROUTING_KEY": "sandbox-routing-key-000000000000",
}
SEED = 7
DAYS = 7

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, probe: Callable[[], Any], timeout_s: float, every_s: float = 2.0) -> Any:
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


def _stop(proc: subprocess.Popen[bytes], name: str) -> None:
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
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], str]] = []
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
        self.procs.append((proc, name))
        return proc

    def tail(self, name: str, n: int = 60) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        for proc, name in reversed(self.procs):
            _stop(proc, name)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def _graphql(ui: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = httpx.post(
        f"{ui}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
    )
    resp.raise_for_status()
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]


LAUNCH = """
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

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status }
    ... on PythonError { message }
  }
}
"""

RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status } }
  }
}
"""

ASSETS = """
query { assetNodes { assetKey { path } isPartitioned isMaterializable } }
"""

SENSOR_TICKS = """
query Ticks($selector: SensorSelector!, $after: Float) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(afterTimestamp: $after, limit: 50) { status timestamp } } }
  }
}
"""
LOCATION = "usage_orchestration"  # workspace.yaml
REPOSITORY = "__repository__"  # the repository a Definitions object becomes


def _await_sensor_ticks(ui: str, sensor: str, n: int, timeout_s: float = 180) -> None:
    """Wait until ``sensor`` has finished ``n`` ticks that started after now: the evidence that
    later evaluations sent nothing new, however slow the machine is."""
    mark = time.time()
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "sensorName": sensor,
    }

    def finished_ticks() -> bool:
        found = _graphql(ui, SENSOR_TICKS, {"selector": selector, "after": mark})["sensorOrError"]
        if found["__typename"] != "Sensor":
            return False
        ticks = found["sensorState"]["ticks"]
        return len([t for t in ticks if t["status"] != "STARTED" and t["timestamp"] > mark]) >= n

    _wait(f"{n} more ticks of {sensor}", finished_ticks, timeout_s)


def _backfill(
    ui: str, paths: list[list[str]], partitions: list[str], timeout_s: float
) -> list[dict[str, Any]]:
    """Launch a backfill as the UI's 'Materialize' dialog does and wait until it is done."""
    data = _graphql(
        ui,
        LAUNCH,
        {"params": {"assetSelection": [{"path": p} for p in paths], "partitionNames": partitions}},
    )["launchPartitionBackfill"]
    assert data["__typename"] == "LaunchBackfillSuccess", data
    backfill_id = data["backfillId"]

    def done() -> str | None:
        status = _graphql(ui, STATUS, {"id": backfill_id})["partitionBackfillOrError"]["status"]
        return (
            status
            if status
            in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
            else None
        )

    status = _wait(f"backfill {backfill_id}", done, timeout_s, every_s=3)
    runs = _graphql(ui, RUNS, {"id": backfill_id})["runsOrError"]["results"]
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs)
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    return runs


def _sandbox_urls(sandbox_url: str) -> dict[str, str]:
    """Every default endpoint (they point at the sandbox's default port) moved to ``sandbox_url``."""
    from usage_orchestration.settings import DEFAULT_SANDBOX_URL, UsageSettings

    defaults = UsageSettings()
    out: dict[str, str] = {}
    for section, field in (
        ("phala", "base_url"),
        ("neon", "base_url"),
        ("forge", "base_url"),
        ("ledger", "api_base_url"),
        ("alerts", "pagerduty_events_url"),
    ):
        url = getattr(getattr(defaults, section), field)
        assert url.startswith(DEFAULT_SANDBOX_URL), (section, field, url)
        out[f"USAGE_{section.upper()}__{field.upper()}"] = (
            sandbox_url + url[len(DEFAULT_SANDBOX_URL) :]
        )
    return out


def _received(sandbox_url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{sandbox_url}/_sandbox/received/pagerduty", timeout=10).json()


def test_backfill_through_daemon_pages_overrun_once_and_resolves_once(
    stack: Stack, tmp_path: Path
) -> None:
    from usage_orchestration.ledger.schema import entity_budget
    from usage_orchestration.sandbox.demo_ledger import SUPPORT_BOT, seed_demo_ledger
    from usage_orchestration.settings import load_settings
    from usage_orchestration.warehouse.store import make_engine

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_")}
    base_env.update(SECRETS)

    # 1. the sandbox, as its own process, on a free loopback port
    sb_port = _free_port()
    sandbox_proc = stack.start(
        "sandbox",
        [
            sys.executable,
            "-m",
            "usage_orchestration.cli",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(sb_port),
            "--seed",
            str(SEED),
            "--ledger-url",
            ledger_url,
        ],
        base_env,
    )
    sandbox_url = f"http://127.0.0.1:{sb_port}"
    _wait(
        "the sandbox",
        lambda: httpx.get(f"{sandbox_url}/_sandbox/health", timeout=2).status_code == 200,
        30,
        0.5,
    )
    assert sandbox_proc.poll() is None

    # 2. settings for every process, by environment variables
    ui_port = _free_port()
    env = {
        **base_env,
        "DAGSTER_HOME": str(home),
        "USAGE_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "USAGE_STATE_DIR": str(tmp_path / "state"),
        "USAGE_SANDBOX__PORT": str(sb_port),
        "USAGE_SANDBOX__SEED": str(SEED),
        "USAGE_LEDGER__DATABASE_URL": ledger_url,
        **_sandbox_urls(sandbox_url),
        "USAGE_ALERTS__DAGSTER_UI_URL": f"http://127.0.0.1:{ui_port}",
        "USAGE_ALERTS__SENSOR_INTERVAL_S": "5",
        "SLACK_WEBHOOK_URL": f"{sandbox_url}/slack/services/T0E2E/B0E2E/e2e",
    }
    env_settings = {k: v for k, v in env.items() if k.startswith("USAGE_")}
    saved = {k: os.environ.get(k) for k in env_settings}
    os.environ.update(env_settings)
    try:
        settings = load_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    # 3. the demo ledger for the last 7 complete UTC days: Support Bot overruns this month
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=i) for i in range(DAYS, 0, -1)]
    summary = seed_demo_ledger(ledger_url, settings, days, SEED)
    assert summary

    # 4. dagster dev: webserver and daemon
    stack.start(
        "dagster",
        [
            str(DAGSTER),
            "dev",
            "-w",
            "workspace.yaml",
            "--host",
            "127.0.0.1",
            "--port",
            str(ui_port),
        ],
        env,
    )
    ui = f"http://127.0.0.1:{ui_port}"
    try:
        _wait(
            "the webserver",
            lambda: httpx.get(f"{ui}/server_info", timeout=5).status_code == 200,
            120,
        )
        nodes = _wait(
            "the code location",
            lambda: [
                n
                for n in _graphql(ui, ASSETS)["assetNodes"]
                if n["isPartitioned"] and n["isMaterializable"]
            ],
            120,
        )
        paths = [n["assetKey"]["path"] for n in nodes]
        assert ["budget_status"] in paths and ["phala_usage"] in paths

        # 5. the 7-day backfill of every asset, as the UI launches it
        _backfill(ui, paths, [d.isoformat() for d in days], timeout_s=420)

        prefix = (
            f"usage-orchestration/budget_threshold/entity/{SUPPORT_BOT}/{days[-1]:%Y-%m}/100pct"
        )

        def overrun_pages() -> list[dict[str, Any]]:
            return [
                e
                for e in _received(sandbox_url)
                if e["event_action"] == "trigger" and e["dedup_key"] == prefix
            ]

        _wait("the overrun page", overrun_pages, 180)
        # more evaluations of the sensor that pages (interval 5 s): nothing new must be sent
        _await_sensor_ticks(ui, "budget_alerts", 3)
        pages = overrun_pages()
        assert len(pages) == 1, pages
        assert pages[0]["collapsed"] is False
        assert pages[0]["event"]["payload"]["severity"] == "critical"
        assert "Support Bot is over budget" in pages[0]["event"]["payload"]["summary"]

        # 6. clear the condition: the budget is raised in the ledger, budget_status re-materialized
        engine = make_engine(ledger_url)
        with engine.begin() as conn:
            conn.execute(
                update(entity_budget)
                .where(entity_budget.c.entity_id == SUPPORT_BOT)
                .values(monthly_budget=entity_budget.c.monthly_budget * 1000)
            )
        engine.dispose()
        _backfill(ui, [["budget_status"]], [days[-1].isoformat()], timeout_s=300)

        def resolves() -> list[dict[str, Any]]:
            return [
                e
                for e in _received(sandbox_url)
                if e["event_action"] == "resolve" and e["dedup_key"] == prefix
            ]

        _wait("the resolve", resolves, 180)
        _await_sensor_ticks(ui, "budget_alerts", 3)
        assert len(resolves()) == 1, resolves()
        assert len(overrun_pages()) == 1
    except BaseException:
        print("---- dagster log ----\n" + stack.tail("dagster", 120))
        print("---- sandbox log ----\n" + stack.tail("sandbox", 20))
        print("---- pagerduty ----\n" + json.dumps(_safe_received(sandbox_url), indent=1)[:4000])
        raise


def _safe_received(url: str) -> list[dict[str, Any]]:
    try:
        return [
            {"action": e["event_action"], "key": e["dedup_key"], "collapsed": e["collapsed"]}
            for e in _received(url)
        ]
    except Exception:
        return []
