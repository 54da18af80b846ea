"""End to end through the real Dagster daemon, on an instance stored in SQLite and in PostgreSQL.

For each instance kind one stack is started and shared by the module's tests, in file order:
the sandbox (``usage-orchestration sandbox``) and ``dagster dev`` (webserver + daemon) on
loopback with a temporary ``DAGSTER_HOME`` (``dagster.yaml``, or ``deploy/postgres/dagster.yaml``
over a database created for the run and dropped afterwards). PagerDuty answers every request
after ``PD_DELAY_S`` for the whole run, so slow paging is the normal case here.

1. A 7-day backfill of every asset, launched as the UI does, pages Support Bot's overrun exactly
   once; raising its budget and re-materializing ``budget_status`` resolves it exactly once.
2. A run launched from the documented CLI (``dagster asset materialize``) that fails (Phala
   answers 403) pages once.
3. A run whose worker is SIGKILLed while its Phala step holds the ``phala`` pool slot is marked
   failed (``stuck_run_detector``), pages ``stuck_run``, its slot is freed, and the next Phala
   run succeeds and resolves the page.
4. Budget escalation: 80 % goes to Slack, then 100 % pages PagerDuty.
5. Every tick of every alert sensor during all that took under 10 s, and no page was sent twice.

The test's copy of the instance config polls run monitoring every 5 s and frees a dead run's
slots 10 s after it ended (production: 30 s and 60 s) so scenario 3 does not wait minutes; the
mechanism is the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select, update

from usage_orchestration_tests.e2e_support import (
    ASSETS,
    DAGSTER,
    REPO,
    SECRETS,
    Stack,
    await_run,
    await_sensor_ticks,
    backfill,
    free_port,
    graphql,
    launch_run,
    pages,
    received,
    safe_received,
    sandbox_post,
    scratch_postgres_database,
    sensor_ticks,
    wait,
)

SEED = 7
DAYS = 7
PD_DELAY_S = 6.0  # PagerDuty answers every request this late
TICK_LIMIT_S = 10.0
ALERT_SENSORS = (
    "budget_alerts",
    "reconciliation_alerts",
    "stale_data_alerts",
    "run_failure_alerts",
    "run_success_resolves",
    "stuck_run_detector",
    "alert_delivery",
)
JOB = "daily_usage_job"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass
class E2E:
    """One running stack and what its scenarios leave for the later ones."""

    kind: str
    stack: Stack
    ui: str
    sandbox_url: str
    env: dict[str, str]
    home: Path
    ledger_url: str
    warehouse_url: str
    days: list[date]
    started_at: float
    instance_env: dict[str, str] = field(default_factory=dict)
    once: dict[str, float] = field(default_factory=dict)  # dedup key → when its page arrived

    def instance(self) -> Any:
        """The Dagster instance as the daemon sees it (read in this process)."""
        from dagster import DagsterInstance

        saved = {k: os.environ.get(k) for k in self.instance_env}
        os.environ.update(self.instance_env)  # DAGSTER_PG_URL, read when the config loads
        try:
            return DagsterInstance.from_config(str(self.home))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def dump(self) -> None:
        print(f"---- [{self.kind}] dagster log ----\n" + self.stack.tail("dagster", 150))
        print("---- sandbox log ----\n" + self.stack.tail("sandbox", 20))
        print(
            "---- pagerduty ----\n" + json.dumps(safe_received(self.sandbox_url), indent=1)[:6000]
        )


def _sandbox_urls(sandbox_url: str) -> dict[str, str]:
    """Every default endpoint (they point at the sandbox's default port) moved to ``sandbox_url``."""
    from usage_orchestration.settings import DEFAULT_SANDBOX_URL, UsageSettings

    defaults = UsageSettings()
    out: dict[str, str] = {}
    for section, fld in (
        ("phala", "base_url"),
        ("neon", "base_url"),
        ("forge", "base_url"),
        ("ledger", "api_base_url"),
        ("alerts", "pagerduty_events_url"),
    ):
        url = getattr(getattr(defaults, section), fld)
        assert url.startswith(DEFAULT_SANDBOX_URL), (section, fld, url)
        out[f"USAGE_{section.upper()}__{fld.upper()}"] = (
            sandbox_url + url[len(DEFAULT_SANDBOX_URL) :]
        )
    return out


def _instance_yaml(kind: str, home: Path) -> None:
    source = REPO / ("dagster.yaml" if kind == "sqlite" else "deploy/postgres/dagster.yaml")
    config = yaml.safe_load(source.read_text())
    # faster than production (30 s / 60 s) so the killed-run scenario takes seconds, not minutes
    config["run_monitoring"].update(poll_interval_seconds=5, free_slots_after_run_end_seconds=10)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def _load_settings(env: dict[str, str]) -> Any:
    from usage_orchestration.settings import load_settings

    env_settings = {k: v for k, v in env.items() if k.startswith("USAGE_")}
    saved = {k: os.environ.get(k) for k in env_settings}
    os.environ.update(env_settings)
    try:
        return load_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start(kind: str, tmp: Path, stack: Stack, instance_env: dict[str, str]) -> E2E:
    from usage_orchestration.sandbox.demo_ledger import seed_demo_ledger

    home = tmp / "dagster_home"
    home.mkdir()
    _instance_yaml(kind, home)
    ledger_url = f"sqlite:///{tmp / 'ledger.sqlite'}"
    warehouse_url = f"sqlite:///{tmp / 'warehouse.sqlite'}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_")}
    base_env.pop("DAGSTER_PG_URL", None)
    base_env.update(SECRETS)

    # 1. the sandbox, as its own process, on a free loopback port; PagerDuty slow from the start
    sb_port = free_port()
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
    wait(
        "the sandbox",
        lambda: httpx.get(f"{sandbox_url}/_sandbox/health", timeout=2).status_code == 200,
        30,
        0.5,
    )
    assert sandbox_proc.poll() is None
    sandbox_post(sandbox_url, "latency/pagerduty", {"seconds": PD_DELAY_S})

    # 2. settings for every process, by environment variables
    ui_port = free_port()
    env = {
        **base_env,
        **instance_env,
        "DAGSTER_HOME": str(home),
        "USAGE_WAREHOUSE_URL": warehouse_url,
        "USAGE_STATE_DIR": str(tmp / "state"),
        "USAGE_SANDBOX__PORT": str(sb_port),
        "USAGE_SANDBOX__SEED": str(SEED),
        "USAGE_LEDGER__DATABASE_URL": ledger_url,
        **_sandbox_urls(sandbox_url),
        "USAGE_ALERTS__DAGSTER_UI_URL": f"http://127.0.0.1:{ui_port}",
        "USAGE_ALERTS__SENSOR_INTERVAL_S": "5",
        # the same detector, checked every 10 s for runs dead for 10 s (production: 60 s, 30 s)
        "USAGE_ALERTS__STUCK_RUN_INTERVAL_S": "10",
        "USAGE_ALERTS__STUCK_RUN_GRACE_S": "10",
        "SLACK_WEBHOOK_URL": f"{sandbox_url}/slack/services/T0E2E/B0E2E/e2e",
    }
    settings = _load_settings(env)

    # 3. the demo ledger for the last 7 complete UTC days: Support Bot overruns this month
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=i) for i in range(DAYS, 0, -1)]
    assert seed_demo_ledger(ledger_url, settings, days, SEED)

    # 4. dagster dev: webserver and daemon
    started_at = time.time()
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
    e2e = E2E(kind, stack, ui, sandbox_url, env, home, ledger_url, warehouse_url, days, started_at)
    e2e.instance_env = instance_env
    try:
        wait(
            "the webserver",
            lambda: httpx.get(f"{ui}/server_info", timeout=5).status_code == 200,
            120,
        )
    except BaseException:
        e2e.dump()
        raise
    return e2e


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(f"e2e_{kind}")
    stack = Stack(tmp)
    if kind == "sqlite":
        try:
            yield _start(kind, tmp, stack, {})
        finally:
            stack.stop()
        return
    server = os.environ.get("USAGE_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("USAGE_TEST_POSTGRES_URL is not set: no PostgreSQL server for the instance")
    with scratch_postgres_database(server) as pg_url:
        try:
            yield _start(kind, tmp, stack, {"DAGSTER_PG_URL": pg_url})
        finally:
            stack.stop()  # before the database is dropped


@pytest.fixture
def live(e2e: E2E, request: pytest.FixtureRequest) -> Iterator[E2E]:
    """The stack, with its logs printed when a scenario fails (the call's failure is counted
    before teardown runs)."""
    failed_before = request.session.testsfailed
    yield e2e
    if request.session.testsfailed > failed_before:
        e2e.dump()


def _support_bot_key(e2e: E2E, threshold: str) -> str:
    from usage_orchestration.sandbox.demo_ledger import SUPPORT_BOT

    return (
        f"usage-orchestration/budget_threshold/entity/{SUPPORT_BOT}/"
        f"{e2e.days[-1]:%Y-%m}/{threshold}"
    )


def _set_support_bot_budget(e2e: E2E, budget: Any) -> None:
    from usage_orchestration.ledger.schema import entity_budget
    from usage_orchestration.sandbox.demo_ledger import SUPPORT_BOT
    from usage_orchestration.warehouse.store import make_engine

    engine = make_engine(e2e.ledger_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(entity_budget)
                .where(entity_budget.c.entity_id == SUPPORT_BOT)
                .values(monthly_budget=budget)
            )
    finally:
        engine.dispose()


def test_backfill_through_daemon_pages_overrun_once_and_resolves_once(live: E2E) -> None:
    from usage_orchestration.ledger.schema import entity_budget

    ui, sandbox_url = live.ui, live.sandbox_url
    nodes = wait(
        "the code location",
        lambda: [
            n
            for n in graphql(ui, ASSETS)["assetNodes"]
            if n["isPartitioned"] and n["isMaterializable"]
        ],
        120,
    )
    paths = [n["assetKey"]["path"] for n in nodes]
    assert ["budget_status"] in paths and ["phala_usage"] in paths

    # the 7-day backfill of every asset, as the UI launches it
    backfill(ui, paths, [d.isoformat() for d in live.days], timeout_s=420)

    key = _support_bot_key(live, "100pct")
    wait("the overrun page", lambda: pages(sandbox_url, "trigger", key.__eq__), 180)
    # more evaluations of the sensor that pages (interval 5 s): nothing new must be sent
    await_sensor_ticks(ui, "budget_alerts", 3)
    overrun = pages(sandbox_url, "trigger", key.__eq__)
    assert len(overrun) == 1, overrun
    assert overrun[0]["collapsed"] is False
    assert overrun[0]["event"]["payload"]["severity"] == "critical"
    assert "Support Bot is over budget" in overrun[0]["event"]["payload"]["summary"]

    # clear the condition: the budget is raised in the ledger, budget_status re-materialized
    _set_support_bot_budget(live, entity_budget.c.monthly_budget * 1000)
    backfill(ui, [["budget_status"]], [live.days[-1].isoformat()], timeout_s=300)

    wait("the resolve", lambda: pages(sandbox_url, "resolve", key.__eq__), 180)
    await_sensor_ticks(ui, "budget_alerts", 3)
    assert len(pages(sandbox_url, "resolve", key.__eq__)) == 1
    assert len(pages(sandbox_url, "trigger", key.__eq__)) == 1


def test_cli_launched_run_that_fails_pages(live: E2E) -> None:
    """docs/operations.md's 'one day by hand', against the same DAGSTER_HOME as the daemon."""
    day = live.days[-1].isoformat()
    sandbox_post(live.sandbox_url, "faults/phala", {"status": 403, "count": 1})
    cli = subprocess.run(
        [
            str(DAGSTER),
            "asset",
            "materialize",
            "-m",
            "usage_orchestration.definitions",
            "--select",
            "phala_usage",
            "--partition",
            day,
        ],
        cwd=REPO,
        env=live.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode != 0, cli.stdout[-2000:]

    def is_it(k: str) -> bool:
        return "/run_failure/" in k and k.endswith(f"/phala_usage/{day}")

    page = wait(
        "the CLI run's failure page", lambda: pages(live.sandbox_url, "trigger", is_it), 240
    )
    assert len(page) == 1, page
    payload = page[0]["event"]["payload"]
    assert payload["severity"] == "error"
    assert "403" in payload["summary"], payload["summary"]
    live.once[page[0]["dedup_key"]] = time.time()


def test_run_killed_mid_step_frees_its_slot_and_the_next_run_succeeds(live: E2E) -> None:
    day = live.days[-2].isoformat()
    instance = live.instance()
    try:
        _kill_mid_step(live, instance, day)
    finally:
        instance.dispose()


def _kill_mid_step(live: E2E, instance: Any, day: str) -> None:
    from usage_orchestration.defs.alerts import _worker_pid

    # Phala answers slowly, so the step is in flight (holding the phala slot) when it is killed
    sandbox_post(live.sandbox_url, "latency/phala", {"seconds": 20})
    run_id = launch_run(live.ui, JOB, ["phala_usage"], day)

    def holds_slot() -> bool:
        info = instance.event_log_storage.get_concurrency_info("phala")
        return run_id in info.active_run_ids

    wait("the run to hold the phala slot", holds_slot, 180, every_s=0.5)
    pid = wait("the run worker's pid", lambda: _worker_pid(instance, run_id), 30, every_s=0.5)
    os.kill(pid, signal.SIGKILL)
    sandbox_post(live.sandbox_url, "latency/phala", {"seconds": 0})

    # stuck_run_detector (every 60 s, 30 s grace) marks it failed; run monitoring frees the slot
    assert await_run(live.ui, run_id, timeout_s=240) == "FAILURE"
    wait("the killed run's phala slot to be freed", lambda: not holds_slot(), 180)

    def is_it(k: str) -> bool:
        return "/stuck_run/" in k and k.endswith(f"/phala_usage/{day}")

    page = wait("the stuck_run page", lambda: pages(live.sandbox_url, "trigger", is_it), 240)
    assert len(page) == 1, page
    assert page[0]["event"]["payload"]["severity"] == "error"
    live.once[page[0]["dedup_key"]] = time.time()

    # the next run of that provider gets the slot and succeeds; its success resolves the page
    next_run = launch_run(live.ui, JOB, ["phala_usage"], day)
    assert await_run(live.ui, next_run, timeout_s=240) == "SUCCESS"
    wait("the stuck_run resolve", lambda: pages(live.sandbox_url, "resolve", is_it), 240)


def test_budget_escalation_goes_to_slack_then_pages(live: E2E) -> None:
    from usage_orchestration.sandbox.demo_ledger import SUPPORT_BOT
    from usage_orchestration.warehouse.analysis_schema import budget_status
    from usage_orchestration.warehouse.store import make_engine

    day = live.days[-1]
    engine = make_engine(live.warehouse_url)
    try:
        with engine.connect() as conn:
            used = conn.execute(
                select(budget_status.c.credits_used).where(
                    budget_status.c.entity_id == SUPPORT_BOT, budget_status.c.as_of_date == day
                )
            ).scalar_one()
    finally:
        engine.dispose()
    used = Decimal(str(used))
    assert used > 0
    warn_key, page_key = _support_bot_key(live, "80pct"), _support_bot_key(live, "100pct")
    triggers_before = len(pages(live.sandbox_url, "trigger", page_key.__eq__))

    def slack_80() -> list[dict[str, Any]]:
        return [
            m
            for m in received(live.sandbox_url, "slack")
            if "Support Bot" in json.dumps(m["message"])
            and "80% of budget" in json.dumps(m["message"])
        ]

    # day 1: 85 % of the budget used → a warning, in Slack
    _set_support_bot_budget(live, (used / Decimal("0.85")).quantize(Decimal("0.01")))
    assert await_run(
        live.ui, launch_run(live.ui, JOB, ["budget_status"], day.isoformat()), 300
    ) == ("SUCCESS")
    wait("the 80 % warning in Slack", slack_80, 180)
    assert not pages(live.sandbox_url, "trigger", warn_key.__eq__)

    # day 2: the budget cut to 95 % of what is used → over budget: PagerDuty
    _set_support_bot_budget(live, (used * Decimal("0.95")).quantize(Decimal("0.01")))
    assert await_run(
        live.ui, launch_run(live.ui, JOB, ["budget_status"], day.isoformat()), 300
    ) == ("SUCCESS")
    escalated = wait(
        "the 100 % page",
        lambda: pages(live.sandbox_url, "trigger", page_key.__eq__)[triggers_before:],
        180,
    )
    assert len(escalated) == 1, escalated
    assert escalated[0]["event"]["payload"]["severity"] == "critical"
    assert len(slack_80()) == 1  # the superseded warning is closed without a second message
    assert not pages(live.sandbox_url, "trigger", warn_key.__eq__)
    live.once[page_key] = time.time()


def test_alert_sensor_ticks_stay_fast_while_pagerduty_is_slow_and_nothing_pages_twice(
    live: E2E,
) -> None:
    assert live.once, "run the module's scenarios first (they leave the pages to check)"
    # two finished run_failure_alerts and alert_delivery ticks after the last page: a repeat
    # would have been recorded and sent by now (the later scenarios usually gave them time)
    run_pages = {k: t for k, t in live.once.items() if "/run_failure/" in k or "/stuck_run/" in k}
    assert len(run_pages) == 2, live.once  # the CLI failure and the stuck run
    last = max(run_pages.values())
    for sensor in ("run_failure_alerts", "alert_delivery"):
        done = [t for t in sensor_ticks(live.ui, sensor, last) if t["status"] != "STARTED"]
        if len(done) < 2:
            await_sensor_ticks(live.ui, sensor, 2 - len(done))
    for key in live.once:
        sent = pages(live.sandbox_url, "trigger", key.__eq__)
        assert len([e for e in sent if not e["collapsed"]]) >= 1, key
    # the CLI failure and the stuck run: one trigger each, ever
    for key in run_pages:
        assert len(pages(live.sandbox_url, "trigger", key.__eq__)) == 1, key

    slow = [e for e in received(live.sandbox_url) if e["event_action"] in ("trigger", "resolve")]
    assert len(slow) >= 4, slow  # every one of them answered after PD_DELAY_S
    durations: dict[str, list[float]] = {}
    for sensor in ALERT_SENSORS:
        ticks = sensor_ticks(live.ui, sensor, live.started_at, limit=1000)
        durations[sensor] = [
            t["endTimestamp"] - t["timestamp"] for t in ticks if t["endTimestamp"] is not None
        ]
    summary = {
        s: {"ticks": len(d), "max_s": round(max(d), 2) if d else None} for s, d in durations.items()
    }
    print(f"[{live.kind}] alert sensor ticks (PagerDuty {PD_DELAY_S:.0f} s/request): {summary}")
    for sensor in ("budget_alerts", "run_failure_alerts", "alert_delivery", "stuck_run_detector"):
        assert durations[sensor], (sensor, summary)
    slow_ticks = {s: [d for d in ds if d >= TICK_LIMIT_S] for s, ds in durations.items()}
    assert not any(slow_ticks.values()), (slow_ticks, summary)
