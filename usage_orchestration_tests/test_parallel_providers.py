"""The multiprocess engine: the provider steps of one range run overlap while Forge is slow, the
run builds the in-process run's warehouse, and the provider pools hold across two concurrent runs.

Three runs share a temporary ``DAGSTER_HOME`` with the project's ``dagster.yaml`` (pools of 1,
so pool slots are claimed through a persistent instance, not an ephemeral one), all
``execution.engine: multiprocess`` (forkserver). Run A, alone: ``daily_usage_job`` over days 1-3
(``dagster job execute``). Then runs B and C together: the three provider assets over days 2-4
and 1-3 (``dagster asset materialize``), C started once B's provider steps hold their slots. The sandbox delays every Forge answer (Forge's
real budget is 5 requests a minute); Phala and Neon answer at once. Each run writes its own
warehouse; all read one ledger.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from usage_orchestration_tests.chaos_support import (
    CHAOS_SECRETS,
    KILL_PROFILE,
    RANGE_END_TAG,
    RANGE_START_TAG,
    assert_equals_in_process_run,
    assert_pools_released,
    backfill_days,
    chaos_sandbox,
    chaos_settings,
    seed_ledger,
)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROVIDERS = ("phala", "neon", "forge")
PROVIDER_STEPS = tuple(f"{p}_usage" for p in PROVIDERS)
POOLS = (*PROVIDERS, "ledger")  # dagster.yaml: default_limit 1 each
FORGE_DELAY_S = 3.0  # every Forge answer of run A (the others answer at once)
FORGE_HOLD_S = 20.0  # every Forge answer of runs B and C: B holds the forge pool while C starts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Step:
    run: str
    key: str
    start: float
    end: float
    pid: int | None


def _settings_file(tmp: Path, name: str, base_url: str, ledger_url: str) -> tuple[Path, str]:
    """A settings file of run ``name``: the chaos client profile (no client-side budget worth
    waiting for, no step retries), Forge's timeout above the sandbox's delay, multiprocess."""
    warehouse_url = f"sqlite:///{tmp / name / 'warehouse.sqlite'}"
    settings = chaos_settings(
        base_url, warehouse_url, ledger_url, tmp / name / "state", KILL_PROFILE
    )
    data = settings.model_dump(mode="json", exclude_unset=True)
    data["forge"]["timeout_s"] = FORGE_HOLD_S * 2
    data["execution"] = {"engine": "multiprocess"}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, warehouse_url


def _steps(instance: Any, run_id: str, name: str) -> dict[str, Step]:
    """Each step's STEP_START and STEP_SUCCESS times (and the process that ran it)."""
    starts: dict[str, tuple[float, int | None]] = {}
    ends: dict[str, float] = {}
    for e in instance.all_logs(run_id):
        ev = e.dagster_event
        if ev is None or e.step_key is None:
            continue
        if ev.event_type_value == "STEP_START":
            starts[e.step_key] = (e.timestamp, ev.pid)
        elif ev.event_type_value == "STEP_SUCCESS":
            ends[e.step_key] = e.timestamp
    assert set(starts) == set(ends), (name, starts, ends)
    return {k: Step(name, k, t, ends[k], pid) for k, (t, pid) in starts.items()}


def _wait_for_steps_started(
    home: Path, run_count: int, steps: Collection[str], timeout_s: float = 120.0
) -> None:
    """Wait until the instance holds ``run_count`` runs and the newest has started ``steps``."""
    from dagster import DagsterEventType, DagsterInstance

    deadline = time.monotonic() + timeout_s
    with DagsterInstance.from_config(str(home)) as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            if len(runs) >= run_count:
                started = {
                    e.step_key
                    for e in instance.all_logs(runs[0].run_id, of_type=DagsterEventType.STEP_START)
                }
                if set(steps) <= started:
                    return
            time.sleep(0.2)
    raise AssertionError(f"run {run_count} did not start {sorted(steps)} in {timeout_s:.0f} s")


def _blocked_steps(instance: Any, run_id: str) -> dict[str, str]:
    """The steps of a run that waited for a pool slot, and the pool ("Step blocked by limit for
    pool <pool>", Dagster's engine event while a claim is pending)."""
    prefix = "Step blocked by limit for pool "
    blocked: dict[str, str] = {}
    for e in instance.all_logs(run_id):
        ev = e.dagster_event
        if ev is not None and e.step_key and (ev.message or "").startswith(prefix):
            blocked[e.step_key] = ev.message[len(prefix) :]
    return blocked


def _run_together(
    tmp: Path,
    env: dict[str, str],
    commands: dict[str, tuple[Path, list[str]]],
    between: Callable[[], None] | None = None,
) -> float:
    """Start every command (each with its settings file; ``between`` runs before each one after
    the first); wait for all; the wall time."""
    started = time.monotonic()
    procs: dict[str, subprocess.Popen[str]] = {}
    for name, (path, cmd) in commands.items():
        if procs and between is not None:
            between()
        procs[name] = subprocess.Popen(
            cmd,
            cwd=tmp,
            env={**env, "USAGE_SETTINGS_FILE": str(path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    outputs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"run {name}:\n{outputs[name][-12000:]}"
    return time.monotonic() - started


def test_provider_steps_overlap_within_their_pools(tmp_path: Path) -> None:
    from dagster import DagsterInstance, DagsterRunStatus

    from usage_orchestration.sandbox.server import SandboxServer

    days: list[date] = backfill_days(4)
    a_days, b_days = days[:3], days[1:]
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # pools of 1
    # the storage is created (and its schema stamped) once, before two processes open it
    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs()

    sandbox = chaos_sandbox(profile=KILL_PROFILE)
    sandbox.latency_s["forge"] = FORGE_DELAY_S
    server = SandboxServer(sandbox).start()
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    try:
        files = {n: _settings_file(tmp_path, n, server.url, ledger_url) for n in "abc"}
        seed_ledger(chaos_settings(server.url, files["a"][1], ledger_url, tmp_path), days)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_", "DAGSTER_"))}
        env.update(CHAOS_SECRETS, PYTHONPATH=str(REPO), DAGSTER_HOME=str(home))
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        module = ["-m", "usage_orchestration.definitions"]
        a_tags = {RANGE_START_TAG: a_days[0].isoformat(), RANGE_END_TAG: a_days[-1].isoformat()}
        job = [str(BIN / "dagster"), "job", "execute", *module, "-j", "daily_usage_job"]

        def providers(span: list[date]) -> list[str]:
            return [str(BIN / "dagster"), "asset", "materialize", *module] + [
                "--select",
                ",".join(f"{p}_usage" for p in PROVIDERS),
                "--partition-range",
                f"{span[0].isoformat()}...{span[-1].isoformat()}",
            ]

        # run A alone: every asset over three days
        a_wall_s = _run_together(
            tmp_path, env, {"a": (files["a"][0], [*job, "--tags", json.dumps(a_tags)])}
        )
        sandbox.latency_s["forge"] = FORGE_HOLD_S
        # runs B and C together: the provider assets over overlapping days, one pool each. C
        # starts once B's three provider steps hold their slots: Dagster claims a free slot by
        # a SELECT ... FOR UPDATE SKIP LOCKED then an UPDATE of that row, which SQLite does not
        # lock, so two runs claiming in the same instant can both get it (docs/operations.md).
        # C's steps then queue behind B's, which is what the pools must show.
        bc_wall_s = _run_together(
            tmp_path,
            env,
            {"b": (files["b"][0], providers(b_days)), "c": (files["c"][0], providers(a_days))},
            between=lambda: _wait_for_steps_started(home, run_count=2, steps=PROVIDER_STEPS),
        )
        forge_requests = sandbox.request_count("forge")
    finally:
        server.stop()

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_runs()
        assert len(records) == 3 and all(r.status == DagsterRunStatus.SUCCESS for r in records)
        by_name = {}
        for r in records:
            if r.job_name == "daily_usage_job":
                by_name["a"] = r
            else:
                by_name["b" if r.tags[RANGE_START_TAG] == b_days[0].isoformat() else "c"] = r
        steps = {n: _steps(instance, r.run_id, n) for n, r in by_name.items()}
        c_blocked = _blocked_steps(instance, by_name["c"].run_id)
        pools = {p: instance.event_log_storage.get_concurrency_info(p) for p in POOLS}

    a = steps["a"]
    forge, phala, neon = (a[f"{p}_usage"] for p in ("forge", "phala", "neon"))
    # Forge was the slow one, and Phala and Neon did not wait for it: both ran while Forge's
    # step was running (started before it finished, finished after it started), each in a
    # process of its own
    assert forge.end - forge.start > FORGE_DELAY_S, forge
    for other in (phala, neon):
        assert other.start < forge.end and other.end > forge.start, (other, forge)
    assert len({forge.pid, phala.pid, neon.pid}) == 3, (forge, phala, neon)
    for n in "bc":
        assert {f"{p}_usage" for p in PROVIDERS} <= set(steps[n])  # (and their checks)

    # the pools held across the two concurrent runs: C's Forge step waited for B's slot (B's
    # Forge answers take FORGE_HOLD_S), and never two steps of one provider at once
    assert c_blocked.get("forge_usage") == "forge", c_blocked
    for p in PROVIDERS:
        x, y = steps["b"][f"{p}_usage"], steps["c"][f"{p}_usage"]
        assert x.end <= y.start or y.end <= x.start, (p, x, y)
    # every pool got its slot from the instance (a pool never claimed has none) and freed it
    assert_pools_released(pools)

    # run A's warehouse is the in-process run's, from the same sandbox data and ledger
    assert_equals_in_process_run(files["a"][1], ledger_url, a_days, tmp_path / "single")

    # per pool: the run that held it first and how long the other one's step waited after it
    order = {}
    for p in PROVIDERS:
        x, y = sorted((steps["b"][f"{p}_usage"], steps["c"][f"{p}_usage"]), key=lambda s: s.start)
        order[p] = f"{x.run} then {y.run} (+{y.start - x.end:.1f} s)"
    print(
        f"run A {a_wall_s:.1f} s, runs B and C together {bc_wall_s:.1f} s; forge requests "
        f"{forge_requests} "
        f"({FORGE_DELAY_S} s each in run A, {FORGE_HOLD_S} s in B and C); run A forge {forge.end - forge.start:.1f} s, phala "
        f"{phala.start - forge.start:+.1f}..{phala.end - forge.start:+.1f} s, neon "
        f"{neon.start - forge.start:+.1f}..{neon.end - forge.start:+.1f} s from forge's start; "
        f"pools {order}"
    )
