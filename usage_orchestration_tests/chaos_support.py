"""Helpers of the chaos suite (test_chaos_faults.py, test_chaos_kill.py, benchmarks/chaos.py):
the chaos settings profile, one range run of every asset, warehouse snapshots, and the runner
that test_chaos_kill.py starts as a subprocess (``python -m usage_orchestration_tests.chaos_support``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from usage_orchestration.sandbox.core import Sandbox
from usage_orchestration.sandbox.demo import SANDBOX_SECRETS
from usage_orchestration.sandbox.demo_ledger import seed_demo_ledger
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import UsageSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SEED = 7  # the sandbox's data seed (the fault seed is the proxy's own)
DAYS = 30
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# Columns that differ between two loads of the same data: who loaded it and when.
VOLATILE_COLUMNS = frozenset({"load_id", "fetched_at", "stage_id"})


def backfill_days(count: int = DAYS) -> list[date]:
    """The last ``count`` complete UTC days (inside Neon's and Forge's 60-day windows)."""
    today = datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(count, 0, -1)]


@dataclass(frozen=True)
class ChaosProfile:
    """Client settings of the chaos profile (docs/chaos.md states them), and the sandbox knobs
    that make a run send enough requests to meet every fault. The requests lean on Neon and
    Forge: the Phala sandbox rebuilds the whole range for every page (~85 ms of CPU each)."""

    # 1 s, not 0.3 s: eleven runs share two cores and a sandbox answer must not time out
    # by itself; the proxy's slow answers take twice as long
    timeout_s: float = 1.0
    max_attempts: int = 12
    neon_backoff_base_s: float = 0.05
    retry_after_cap_s: float = 5.0
    phala_page_size: int = 200
    neon_page_limit: int = 1
    forge_page_size: int = 1  # sandbox knob: Forge answers this many items per page
    neon_projects: int = 60  # sandbox knob: projects of the Neon organization


# The kill harness needs phases spread over a run, not many requests: normal page sizes keep
# each of its twenty-odd runs short.
KILL_PROFILE = ChaosProfile(forge_page_size=100, neon_page_limit=100)


def chaos_settings(
    base_url: str,
    warehouse_url: str,
    ledger_url: str,
    state_dir: str | Path,
    profile: ChaosProfile = ChaosProfile(),
) -> UsageSettings:
    """Every provider at ``base_url`` (a sandbox or a fault proxy in front of one), with the
    profile's timeout and retries, no client-side rate budget worth waiting for, and no step
    retries: a run that needs a Dagster retry fails."""
    p = profile
    common = {"timeout_s": p.timeout_s, "max_attempts": p.max_attempts}
    return load_settings(
        warehouse_url=warehouse_url,
        state_dir=str(state_dir),
        ledger={"database_url": ledger_url},
        phala={
            "base_url": f"{base_url}/phala",
            "page_size": p.phala_page_size,
            "retry_after_cap_s": p.retry_after_cap_s,
            **common,
        },
        neon={
            "base_url": f"{base_url}/neon",
            "page_limit": p.neon_page_limit,
            "backoff_base_s": p.neon_backoff_base_s,
            "rate_limit_requests": 100_000,
            "rate_limit_window_s": 1.0,
            "retry_after_cap_s": p.retry_after_cap_s,
            **common,
        },
        forge={
            "base_url": f"{base_url}/forge/graphql",
            "rate_limit_max_requests": 100_000,
            "rate_limit_per_seconds": 1.0,
            "rate_limit_margin_s": 0.0,
            "retry_after_cap_s": p.retry_after_cap_s,
            **common,
        },
        step_retries={"max_retries": 0, "wait_s": 0},
    )


def chaos_sandbox(latency_s: float = 0.0, profile: ChaosProfile = ChaosProfile()) -> Sandbox:
    """The demo sandbox with the provider rate limits off (the proxy injects the 429s) and
    small Forge pages and more Neon projects, so a run sends enough requests to meet faults."""
    sandbox = Sandbox(seed=SEED)
    sandbox.state["forge"] = {"rate_limit": None, "page_size": profile.forge_page_size}
    sandbox.state["neon"] = {
        "rate_limit": 1_000_000,
        "rate_window_s": 1.0,
        "projects": profile.neon_projects,
    }
    for api in ("phala", "neon", "forge"):
        sandbox.latency_s[api] = latency_s
    return sandbox


# The sandbox's credentials, and a Slack webhook nothing calls (assets never post to Slack).
CHAOS_SECRETS = {**SANDBOX_SECRETS, "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/slack/T0/B0/chaos"}


@contextmanager
def sandbox_secrets() -> Iterator[None]:
    """The sandbox's credentials in the environment (where EnvVar reads them), restored after."""
    saved = {k: os.environ.get(k) for k in CHAOS_SECRETS}
    os.environ.update(CHAOS_SECRETS)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def seed_ledger(settings: UsageSettings, days: Sequence[date]) -> None:
    seed_demo_ledger(settings.ledger.database_url, settings, list(days), SEED)


def run_backfill(settings: UsageSettings, days: Sequence[date], instance: Any = None) -> Any:
    """Every asset of the code location over ``days`` as one range run (as the demo does);
    returns the ``ExecuteInProcessResult`` (``raise_on_error=False``)."""
    from dagster import BetaWarning, DagsterInstance

    from usage_orchestration.defs.location import build_definitions

    warnings.filterwarnings("ignore", category=BetaWarning)
    job = build_definitions(settings).resolve_job_def("daily_usage_job")
    return job.execute_in_process(
        instance=instance or DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        tags={RANGE_START_TAG: days[0].isoformat(), RANGE_END_TAG: days[-1].isoformat()},
        raise_on_error=False,
    )


def run_failure(result: Any) -> str:
    """What failed in a run, or retried: the step events that say so."""
    lines = []
    for e in result.all_events:
        if e.event_type_value in ("STEP_FAILURE", "STEP_UP_FOR_RETRY", "RUN_FAILURE"):
            data = e.event_specific_data
            err = getattr(data, "error", None)
            lines.append(f"{e.event_type_value} {e.step_key}: {err.message if err else ''}")
    return "\n".join(lines)


def retried_steps(result: Any) -> int:
    return sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY")


def owned_tables() -> list[Any]:
    """Every table of the project's warehouse metadata."""
    from usage_orchestration.alerts import outbox  # noqa: F401  (adds its tables)
    from usage_orchestration.warehouse import analysis_schema, focus  # noqa: F401
    from usage_orchestration.warehouse.schema import metadata

    return list(metadata.sorted_tables)


def _key(row: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if v is None else repr(v) for v in row)


def snapshot(url: str, *, volatile: frozenset[str] = VOLATILE_COLUMNS) -> dict[str, list[tuple]]:
    """Every owned table's rows (without ``volatile`` columns), sorted: two warehouses that hold
    the same data compare equal."""
    from sqlalchemy import select

    from usage_orchestration.warehouse.store import Warehouse

    wh = Warehouse(url)
    wh.ensure_schema()
    out: dict[str, list[tuple]] = {}
    with wh.engine.connect() as conn:
        for t in owned_tables():
            cols = [c for c in t.columns if c.name not in volatile]
            out[t.name] = sorted((tuple(r) for r in conn.execute(select(*cols))), key=_key)
    wh.engine.dispose()
    return out


def snapshot_diff(expected: dict[str, list[tuple]], actual: dict[str, list[tuple]]) -> str:
    """A short account of where two snapshots differ ("" when they are equal)."""
    lines = []
    for name in sorted(set(expected) | set(actual)):
        a, b = expected.get(name, []), actual.get(name, [])
        if a != b:
            missing = len(set(a) - set(b))
            extra = len(set(b) - set(a))
            lines.append(
                f"{name}: {len(a)} rows expected, {len(b)} found ({missing} missing, "
                f"{extra} unexpected)"
            )
    return "\n".join(lines)


def assert_pools_released(pools: dict[str, Any]) -> None:
    """Every pool (the instance's concurrency info per pool) got its one slot from the instance
    (a pool never claimed has none) and freed it: nothing claimed or waiting is left."""
    for pool, info in pools.items():
        assert info.slot_count == 1, (pool, info)
        assert not info.claimed_slots and not info.pending_steps, (pool, info)


def assert_equals_in_process_run(
    actual_url: str, ledger_url: str, days: Sequence[date], workdir: Path
) -> None:
    """``actual_url`` holds exactly what one in-process range run of ``days`` writes from the
    same sandbox data and ledger, into its own warehouse under ``workdir``."""
    baseline_url = f"sqlite:///{workdir / 'warehouse.sqlite'}"
    server = SandboxServer(chaos_sandbox(profile=KILL_PROFILE)).start()
    try:
        baseline = chaos_settings(
            server.url, baseline_url, ledger_url, workdir / "state", KILL_PROFILE
        )
        with sandbox_secrets():
            result = run_backfill(baseline, days)
    finally:
        server.stop()
    assert result.success, run_failure(result)
    expected = snapshot(baseline_url)
    actual = snapshot(actual_url)
    assert sum(len(rows) for rows in expected.values()) > 0
    assert actual == expected, snapshot_diff(expected, actual)


def table_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every owned table's rows with every column (load_id and fetched_at included)."""
    from sqlalchemy import select

    from usage_orchestration.warehouse.store import Warehouse

    wh = Warehouse(url)
    wh.ensure_schema()
    with wh.engine.connect() as conn:
        out = {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in owned_tables()}
    wh.engine.dispose()
    return out


def copy_warehouse(src_url: str, dst_url: str) -> None:
    """Replace every owned table of ``dst_url`` with ``src_url``'s rows, verbatim."""
    from usage_orchestration.warehouse.store import Warehouse

    rows = table_rows(src_url)
    dst = Warehouse(dst_url)
    dst.ensure_schema()
    with dst.engine.begin() as conn:
        for t in reversed(owned_tables()):
            conn.execute(t.delete())
        for t in owned_tables():
            if rows[t.name]:
                conn.execute(t.insert(), rows[t.name])
    dst.engine.dispose()


# -- one seed of the fault test, as a subprocess ---------------------------------------------------
CHAOS_RATES = {"http_5xx": 0.20, "http_429": 0.10, "timeout": 0.05, "bad_body": 0.01}


def run_fault_seed(seed: int | None, workdir: Path, last_day: date) -> dict[str, Any]:
    """The sandbox, a fault proxy (seed ``seed``; None: no faults, the baseline) in front of it,
    and one range run of every asset over the 30 days ending ``last_day`` into
    ``workdir/warehouse.sqlite``. Returns what happened (also in ``workdir/result.json``)."""
    from usage_orchestration.sandbox.faults import FaultProxy, FaultRates
    from usage_orchestration.sandbox.server import SandboxServer

    profile = ChaosProfile()
    days = [last_day - timedelta(days=i) for i in range(DAYS - 1, -1, -1)]
    rates = FaultRates(**CHAOS_RATES) if seed is not None else FaultRates()
    started = time.monotonic()
    server = SandboxServer(chaos_sandbox(profile=profile)).start()
    # a timed-out answer arrives well after the client has given up
    proxy = FaultProxy(server.url, rates, seed or 0, timeout_sleep_s=profile.timeout_s * 2)
    proxy.start()
    try:
        settings = chaos_settings(
            proxy.url,
            f"sqlite:///{workdir / 'warehouse.sqlite'}",
            f"sqlite:///{workdir / 'ledger.sqlite'}",
            workdir / "state",
            profile,
        )
        seed_ledger(settings, days)
        with sandbox_secrets():
            result = run_backfill(settings, days)
        out = {
            "seed": seed,
            "success": bool(result.success),
            "retried_steps": retried_steps(result),
            "failure": run_failure(result),
            "faults": proxy.faults(),
            "requests": sum(proxy.counts.values()),
            "fault_log": proxy.describe(),
            "wall_s": round(time.monotonic() - started, 1),
        }
    finally:
        proxy.stop()
        server.stop()
    (workdir / "result.json").write_text(json.dumps(out, indent=1))
    return out


def run_seed_subprocess(seed: int | None, workdir: Path, last_day: str) -> dict[str, Any]:
    """``run_fault_seed`` in a fresh interpreter (its own sandbox, proxy and warehouse under
    ``workdir``); a crash is reported, not raised."""
    cmd = [sys.executable, "-m", "usage_orchestration_tests.chaos_support", "faults"]
    cmd += ["--workdir", str(workdir), "--last-day", last_day]
    cmd += [] if seed is None else ["--seed", str(seed)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_", "DAGSTER_"))}
    env["PYTHONPATH"] = str(ROOT)
    workdir.mkdir(parents=True)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    result_file = workdir / "result.json"
    if not result_file.exists():
        return {"seed": seed, "success": False, "crash": proc.stderr[-4000:], "faults": {}}
    return dict(json.loads(result_file.read_text()))


# -- the kill harness's target run, as a subprocess ----------------------------------------------
def _write_label(statement: str) -> str | None:
    """ "INSERT provider_usage" for a statement that writes a table, else None."""
    words = statement.split()
    verb = words[0].upper() if words else ""
    if verb not in ("INSERT", "DELETE", "UPDATE", "COPY"):
        return None
    table = next((w for w in words[1:4] if w.upper() not in ("INTO", "FROM")), "?")
    return verb + " " + table.strip('"').split("(")[0]


def _tracer(path: Path, warehouse_url: str) -> None:
    """Append one line per warehouse write, commit and rollback to ``path`` (with os.write, so
    a SIGKILL loses none): where a kill landed is the trace's last line. PostgreSQL's COPY
    (large inserts) bypasses SQLAlchemy's events, so psycopg's ``copy`` is traced too."""
    from sqlalchemy import event, make_url
    from sqlalchemy.engine import Engine

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    target = make_url(warehouse_url).database

    def line(label: str) -> None:
        os.write(fd, f"{time.monotonic():.4f} {label}\n".encode())

    def emit(conn: Any, label: str | None) -> None:
        if label and conn.engine.url.database == target:
            line(label)

    event.listen(Engine, "before_cursor_execute", lambda c, _k, st, *_: emit(c, _write_label(st)))
    event.listen(Engine, "commit", lambda conn: emit(conn, "COMMIT"))
    event.listen(Engine, "rollback", lambda conn: emit(conn, "ROLLBACK"))
    try:
        import psycopg
    except ImportError:
        return
    copy = psycopg.Cursor.copy

    def traced_copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        label = _write_label(statement.as_string(self) if hasattr(statement, "as_string") else "")
        if label:
            line(label)
        return copy(self, statement, *args, **kwargs)

    psycopg.Cursor.copy = traced_copy  # type: ignore[method-assign]


def run_kill_target(args: argparse.Namespace) -> int:
    """One range run of every asset against ``--base-url`` (the test's sandbox), tracing the
    warehouse writes; prints READY (with the monotonic clock) before the run starts."""
    days = [args.last_day - timedelta(days=i) for i in range(DAYS - 1, -1, -1)]
    settings = chaos_settings(
        args.base_url, args.warehouse_url, args.ledger_url, args.state_dir, KILL_PROFILE
    )
    with sandbox_secrets():
        from dagster import DagsterInstance

        instance = DagsterInstance.ephemeral()
        from usage_orchestration.defs.location import build_definitions

        build_definitions(settings)  # imports and definitions before READY, not inside the run
        _tracer(args.trace, args.warehouse_url)
        print(f"READY {time.monotonic():.4f}", flush=True)
        result = run_backfill(settings, days, instance)
    print(f"DONE {time.monotonic():.4f} success={result.success}", flush=True)
    if not result.success:
        print(run_failure(result), flush=True)
    return 0 if result.success else 1


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="chaos_support")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("faults", help="one seed of the fault test (no --seed: the baseline)")
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--workdir", type=Path, required=True)
    f.add_argument("--last-day", type=date.fromisoformat, required=True)
    k = sub.add_parser("kill-target", help="one range run for the kill harness")
    k.add_argument("--base-url", required=True)
    k.add_argument("--warehouse-url", required=True)
    k.add_argument("--ledger-url", required=True)
    k.add_argument("--state-dir", type=Path, required=True)
    k.add_argument("--trace", type=Path, required=True)
    k.add_argument("--last-day", type=date.fromisoformat, required=True)
    args = parser.parse_args(argv)
    with sandbox_secrets():  # a subprocess of its own: the settings may check them at load
        if args.command == "faults":
            args.workdir.mkdir(parents=True, exist_ok=True)
            out = run_fault_seed(args.seed, args.workdir, args.last_day)
            return 0 if out["success"] else 1
        return run_kill_target(args)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
