"""Chaos: SIGKILL a 30-day range run of every asset at 10 seeded points on SQLite (4 of them on
PostgreSQL): fetching, staging, inside the publishing transaction, downstream; then check that no
day is half written and that a rerun restores the fault-free warehouse row for row.

The run is a subprocess (chaos_support.py ``kill-target``) against a sandbox served by this
process (with latency, so fetching takes a while); it traces every warehouse write, so each kill
point is reported by what it interrupted. Half the kill points start from a warehouse holding a
previous complete load, so "left as it was" is tested too.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.schema import CreateSchema, DropSchema

from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.warehouse.store import make_engine, normalize_url
from usage_orchestration_tests.chaos_support import (
    KILL_PROFILE,
    VOLATILE_COLUMNS,
    backfill_days,
    chaos_sandbox,
    chaos_settings,
    copy_warehouse,
    run_backfill,
    run_failure,
    sandbox_secrets,
    seed_ledger,
    snapshot,
    snapshot_diff,
    table_rows,
)

ROOT = Path(__file__).resolve().parents[1]
KILL_POINTS = 10
# On PostgreSQL (CI's second backend) only the points whose atomicity is the backend's own: the
# write-triggered ones (inside the publishing transaction, during staging) and one by delay;
# SQLite, the default, takes all ten. Each point costs a killed run and a full rerun (~30 s).
POSTGRES_POINTS = (0, 3, 6, 9)
KILL_SEED = 20261201
LATENCY_S = 0.02  # per provider request: spreads fetching over the run
STAGING = "provider_usage_staging"
PUBLISH_ORDER = ("provider_usage", "provider_coverage")  # the publishing transaction's writes
PUBLISH_TABLES = set(PUBLISH_ORDER)
# Kill points triggered by a traced write instead of a delay (index: label, occurrence, longest
# delay after it): the publishing transaction lasts ~0.1 s of a ~14 s run, so a delay alone would
# rarely land in it. The second provider's publish is Neon's, its staging the largest.
TRIGGERED = {
    3: ("DELETE provider_usage", 2, 0.03),
    6: ("DELETE provider_usage", 3, 0.03),
    9: (f"DELETE {STAGING}", 3, 0.6),
}


PG_URL = os.environ.get("USAGE_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@dataclass
class Harness:
    tmp: Path
    backend: str
    server: SandboxServer
    ledger_url: str
    days: list[date]
    baseline_url: str = ""
    expected: dict[str, list[tuple]] = field(default_factory=dict)  # volatile columns left out
    schemas: list[str] = field(default_factory=list)  # PostgreSQL schemas to drop at the end

    def settings(self, warehouse_url: str) -> Any:
        return chaos_settings(
            self.server.url, warehouse_url, self.ledger_url, self.tmp / "state", KILL_PROFILE
        )

    def new_warehouse(self, name: str) -> str:
        """An empty warehouse: a SQLite file, or a fresh PostgreSQL schema."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp / (name + '.sqlite')}"
        assert PG_URL is not None
        schema = f"t_chaos_{name}_{uuid.uuid4().hex[:8]}"
        with make_engine(PG_URL).begin() as conn:
            conn.execute(CreateSchema(schema))
        self.schemas.append(schema)
        sep = "&" if "?" in PG_URL else "?"
        return f"{normalize_url(PG_URL)}{sep}options=-csearch_path%3D{schema}"

    def rerun(self, warehouse_url: str) -> None:
        """A complete run in this process, without the sandbox's latency."""
        latency = dict(self.server.sandbox.latency_s)
        self.server.sandbox.latency_s.clear()
        try:
            with sandbox_secrets():
                result = run_backfill(self.settings(warehouse_url), self.days)
        finally:
            self.server.sandbox.latency_s.update(latency)
        if not result.success:  # not an AssertionError: the xfail below expects only its own
            raise RuntimeError(f"the rerun failed: {run_failure(result)}")


@pytest.fixture(scope="module", params=BACKENDS)
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    tmp = tmp_path_factory.mktemp(f"chaos_kill_{request.param}")
    server = SandboxServer(chaos_sandbox(latency_s=LATENCY_S, profile=KILL_PROFILE)).start()
    h = Harness(tmp, request.param, server, f"sqlite:///{tmp / 'ledger.sqlite'}", backfill_days())
    try:
        h.baseline_url = h.new_warehouse("baseline")
        with sandbox_secrets():
            seed_ledger(h.settings(h.baseline_url), h.days)
        h.rerun(h.baseline_url)
        h.expected = snapshot(h.baseline_url)
        assert h.expected["provider_usage"] and h.expected["budget_status"]
        yield h
    finally:
        server.stop()
        if h.schemas:
            with make_engine(str(PG_URL)).begin() as conn:
                for schema in h.schemas:
                    conn.execute(DropSchema(schema, cascade=True))


# -- one target run ---------------------------------------------------------------------------------
@dataclass
class Target:
    proc: subprocess.Popen[str]
    ready_at: float
    trace: Path


def _start(h: Harness, warehouse_url: str, name: str) -> Target:
    trace = h.tmp / f"{name}.trace"
    cmd = [sys.executable, "-m", "usage_orchestration_tests.chaos_support", "kill-target"]
    cmd += ["--base-url", h.server.url, "--warehouse-url", warehouse_url]
    cmd += ["--ledger-url", h.ledger_url, "--state-dir", str(h.tmp / "state")]
    cmd += ["--trace", str(trace), "--last-day", h.days[-1].isoformat()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_", "DAGSTER_"))}
    env["PYTHONPATH"] = str(ROOT)
    stderr = (h.tmp / f"{name}.stderr").open("w")
    proc = subprocess.Popen(
        cmd, cwd=h.tmp, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if readable else ""
    if not line.startswith("READY"):
        proc.kill()
        raise AssertionError(f"the target did not start: {line!r} {_tail(h, name)}")
    return Target(proc, float(line.split()[1]), trace)


def _tail(h: Harness, name: str) -> str:
    return (h.tmp / f"{name}.stderr").read_text()[-3000:]


def _trace(target: Target) -> list[tuple[float, str]]:
    if not target.trace.exists():
        return []
    lines = [ln.split(" ", 1) for ln in target.trace.read_text().splitlines() if " " in ln]
    return [(float(t), label) for t, label in lines]


def phase_at_kill(trace: list[tuple[float, str]]) -> str:
    """What the kill interrupted, from the warehouse writes traced before it."""
    open_tx: list[str] = []
    committed: list[str] = []
    published = 0
    for _, label in trace:
        if label in ("COMMIT", "ROLLBACK"):
            if label == "COMMIT" and f"DELETE {PUBLISH_ORDER[0]}" in open_tx:
                published += 1
            committed, open_tx = open_tx or committed, []
        else:
            open_tx.append(label)
    tables = {label.split(" ", 1)[1] for label in open_tx}
    done = f"{published} provider load(s) published before"
    if tables & PUBLISH_TABLES:
        return f"inside the publishing transaction ({done})"
    if open_tx == [f"DELETE {STAGING}"]:
        return f"discarding a stage, before staging or after publishing ({done})"
    if tables == {STAGING}:
        return f"staging, a chunk's transaction open ({done})"
    if tables:
        return f"inside a downstream transaction: {', '.join(sorted(tables))} ({done})"
    if not committed:
        return "fetching, no write yet"
    return f"between transactions, last committed: {'; '.join(dict.fromkeys(committed))} ({done})"


# -- what a kill may leave ---------------------------------------------------------------------------
def _units(rows: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows per (table, provider): the slice one asset replaces in one transaction."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for table, table_rows_ in rows.items():
        if table == STAGING:
            continue
        for r in table_rows_:
            out.setdefault((table, str(r.get("provider", ""))), []).append(r)
    return out


def _stable(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return sorted(
        tuple(repr(v) for k, v in sorted(r.items()) if k not in VOLATILE_COLUMNS) for r in rows
    )


def _day(r: dict[str, Any]) -> Any:
    return r.get("usage_date", r.get("as_of_date"))


def _full(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in rows)


def _unit_problem(
    rows: list[dict[str, Any]], before: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> str:
    """ "" when a (table, provider) slice is exactly as ``before`` left it or one complete new
    load (the rows of ``expected``, one load_id); else what is wrong."""
    if not rows:
        return f"{len(before)} rows of the previous load vanished" if before else ""
    loads = sorted({str(r.get("load_id")) for r in rows})
    if len(loads) > 1:
        mixed = sorted({str(_day(r)) for r in rows if r.get("load_id") != rows[0].get("load_id")})
        return f"mixed loads {loads} (e.g. day {mixed[:1]})"
    if before and loads == sorted({str(r.get("load_id")) for r in before}):
        return "" if _full(rows) == _full(before) else "the previous load's rows were altered"
    if _stable(rows) != _stable(expected):
        return f"the new load is incomplete or wrong ({len(rows)} rows, {len(expected)} expected)"
    return ""


def half_written(
    now: dict[str, list[dict[str, Any]]],
    previous: dict[str, list[dict[str, Any]]],
    expected: dict[str, list[dict[str, Any]]],
) -> list[str]:
    """What a kill left half written: every (table, provider) slice must pass ``_unit_problem``;
    a provider's usage and coverage share one load; per (provider, day) one load_id."""
    now_u, prev_u, exp_u = _units(now), _units(previous), _units(expected)
    problems = []
    for key in sorted(set(now_u) | set(prev_u)):
        problem = _unit_problem(now_u.get(key, []), prev_u.get(key, []), exp_u.get(key, []))
        if problem:
            problems.append(f"{key}: {problem}")
    for provider in sorted({p for t, p in now_u if t in PUBLISH_TABLES}):
        usage = {r["load_id"] for r in now_u.get(("provider_usage", provider), [])}
        coverage = {r["load_id"] for r in now_u.get(("provider_coverage", provider), [])}
        if usage != coverage and exp_u.get(("provider_usage", provider)):
            problems.append(f"{provider}: usage load {usage} but coverage load {coverage}")
    per_day: dict[tuple[str, Any], set[str]] = {}
    for t in PUBLISH_TABLES:
        for r in now.get(t, []):
            per_day.setdefault((r["provider"], r["usage_date"]), set()).add(r["load_id"])
    problems += [f"{k}: loads {v}" for k, v in sorted(per_day.items()) if len(v) > 1]
    return problems


# -- the harness ------------------------------------------------------------------------------------
def _measure(h: Harness) -> float:
    """An unkilled target run: its duration from READY, and it must end as the baseline."""
    url = h.new_warehouse("unkilled")
    target = _start(h, url, "unkilled")
    out, _ = target.proc.communicate(timeout=600)
    done = [ln for ln in out.splitlines() if ln.startswith("DONE")]
    assert target.proc.returncode == 0 and done, out + _tail(h, "unkilled")
    assert _without_staging(snapshot(url)) == _without_staging(h.expected)
    return float(done[0].split()[1]) - target.ready_at


def _without_staging(snap: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    return {k: v for k, v in snap.items() if k != STAGING}


def _wait_for_write(target: Target, label: str, occurrence: int, timeout_s: float) -> None:
    """Until the target has traced ``label`` ``occurrence`` times (or ended, or timed out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and target.proc.poll() is None:
        text = target.trace.read_text() if target.trace.exists() else ""
        if sum(1 for ln in text.splitlines() if ln.endswith(" " + label)) >= occurrence:
            return
        time.sleep(0.002)


def _kill_at(h: Harness, url: str, name: str, delay_s: float, trigger: Any) -> tuple[str, float]:
    """Start a target run; SIGKILL it ``delay_s`` after READY, or ``delay_s`` after the write
    ``trigger`` (label, occurrence) was traced; return what it interrupted and when."""
    target = _start(h, url, name)
    if trigger is not None:
        _wait_for_write(target, *trigger[:2], timeout_s=300)
        time.sleep(delay_s)
    else:
        time.sleep(max(0.0, target.ready_at + delay_s - time.monotonic()))
    if target.proc.poll() is not None:
        return "finished before the kill", time.monotonic() - target.ready_at
    os.kill(target.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic() - target.ready_at
    target.proc.wait(timeout=60)
    assert target.proc.returncode == -signal.SIGKILL
    return phase_at_kill(_trace(target)), killed_at


def _kill_points(duration: float) -> list[tuple[float, Any]]:
    """Ten seeded points: a random delay in each tenth of the run, or a small random delay
    after a traced write (TRIGGERED)."""
    rng = random.Random(KILL_SEED)
    points = []
    for i in range(KILL_POINTS):
        spread = duration * (i + rng.random()) / KILL_POINTS
        trigger = TRIGGERED.get(i)
        points.append(
            (rng.uniform(trigger[2] / 4, trigger[2]), trigger) if trigger else (spread, None)
        )
    return points


@pytest.mark.timeout(1500)
def test_sigkill_at_random_points_leaves_no_half_written_day(harness: Harness) -> None:
    h = harness
    duration = _measure(h)
    previous = table_rows(h.baseline_url)  # the previous complete load, load ids and all
    empty: dict[str, list[dict[str, Any]]] = {k: [] for k in previous}
    outcomes, problems = [], []
    points = list(enumerate(_kill_points(duration)))
    if h.backend == "postgresql":
        points = [p for p in points if p[0] in POSTGRES_POINTS]
    for i, (delay, trigger) in points:
        url = h.new_warehouse(f"kill_{i}")
        from_load = i % 2 == 1
        if from_load:
            copy_warehouse(h.baseline_url, url)
        phase, at = _kill_at(h, url, f"kill_{i}", delay, trigger)
        now = table_rows(url)
        found = half_written(now, previous if from_load else empty, previous)
        leftover = len(now[STAGING])
        h.rerun(url)
        diff = snapshot_diff(h.expected, snapshot(url))  # staging included: cleared
        when = f"{delay:.2f} s after write #{trigger[1]} {trigger[0]}" if trigger else "by delay"
        outcomes.append(
            f"kill {i} at {at:5.2f} s of {duration:.2f} s ({when}), "
            f"{'previous load' if from_load else 'empty'} warehouse: {phase}; "
            f"staged rows left {leftover}; half-written: {found or 'none'}; "
            f"after rerun: {diff or 'equal to fault-free'}"
        )
        problems += [f"kill {i}: {p}" for p in found] + (
            [f"kill {i} rerun: {diff}"] if diff else []
        )
    print(f"\nchaos kill ({h.backend}): unkilled run {duration:.2f} s\n" + "\n".join(outcomes))
    assert not problems, "\n".join(problems + outcomes)
    killed = [o for o in outcomes if "finished before the kill" not in o]
    assert len(killed) >= len(points) - 2, "\n".join(outcomes)  # the kills really interrupted
    inside = [o for o in outcomes if "inside the publishing transaction" in o]
    assert inside, "\n".join(outcomes)  # the atomicity that matters most was really tested


@pytest.mark.timeout(600)
def test_a_rerun_clears_what_a_killed_run_staged(harness: Harness) -> None:
    h = harness
    url = h.new_warehouse("staged_then_killed")
    phase, _ = _kill_at(h, url, "staged_then_killed", 0.01, ("DELETE provider_usage", 2))
    staged = len(table_rows(url)[STAGING])
    if not staged:  # the premise, outside the expected failure
        raise RuntimeError(f"the kill left nothing staged ({phase})")
    h.rerun(url)
    left = len(table_rows(url)[STAGING])
    assert left == 0, f"{left} of {staged} rows staged by the killed run remain after the rerun"
