"""Every asset over 30 and over 365 days, each as ONE range run: wall time, peak memory, requests.

    .venv/bin/python benchmarks/range_scaling.py [--days 30 365] [--warehouse-url URL]

The sandbox (loopback, this process, default demo data and limits: Forge 5 requests / 60 s)
answers the run; the demo ledger is seeded for the range beforehand (not timed). Each range runs
``daily_usage_job`` (every asset, the code location's executor) in a fresh child process, with an
ephemeral (in-memory) Dagster instance by default (``--instance sqlite``: a persistent SQLite one
in a temporary ``DAGSTER_HOME``, as the demo and ``dagster dev`` record events) and a fresh
warehouse, so neither run sees the other's memory or rows.

Figures per range (the last line printed is a JSON object):

- ``wall_s_<n>``: ``execute_in_process`` of the range, from its call to its return (imports,
  definitions loading and ledger seeding excluded: they do not grow with the range).
- ``peak_rss_mb_<n>``: the child's peak resident set (``VmHWM`` from ``/proc/self/status``: the
  kernel's high-water mark over the whole process lifetime, so no sampling can miss a spike),
  or, if any step ran in a subprocess of its own (a multiprocess executor), the larger of that
  and ``ru_maxrss`` of ``RUSAGE_CHILDREN`` (the largest waited-for descendant). The sandbox
  lives in this parent process and is not counted: it is not the run.
- ``requests_<n>``: requests the sandbox received for Forge, Neon and Phala (every status).
- ``minimum_requests_<n>``: what the sandbox's paging rules make necessary with the settings in
  use (``minimum_requests``): Phala ``records // page_size + 1`` offset pages per app over the
  range and the day before it (the client asks ``start_date`` a day early); Neon one request per
  project chunk for the days inside its daily lookback (the org's projects on one page of 100);
  Forge, per (app, resource) over the days inside its lookback, the pages of the sandbox's answer
  the client must read: ``pageSize`` may count periods or grouped rows (the contract does not
  say), so a page full by either count is followed by one more (an empty page ends).

Targets: ``wall_s_365 <= 60``, ``wall_s_365 <= 4 * wall_s_30``,
``peak_rss_mb_365 <= 1.25 * peak_rss_mb_30`` and ``requests_365 == minimum_requests_365``
(exit status 1 when one is missed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROVIDER_APIS = ("phala", "neon", "forge")
SECRETS = {
    "PHALA_API_KEY": "phala",
    "NEON_API_KEY": "neon",
    "FORGE_EMAIL": "forge_email",
    "FORGE_API_TOKEN": "forge",
    "LEDGER_API_TOKEN": "ledger",
    "PAGERDUTY_ROUTING_KEY": "pagerduty",
}


def _days(n: int) -> list[date]:
    today = datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(n, 0, -1)]  # the last n complete days


def _settings_env(tmp: Path, sandbox_url: str, first: date) -> dict[str, str]:
    return {
        "USAGE_WAREHOUSE_URL": f"sqlite:///{tmp / 'warehouse.sqlite'}",
        "USAGE_LEDGER__DATABASE_URL": f"sqlite:///{tmp / 'ledger.sqlite'}",
        "USAGE_STATE_DIR": str(tmp / "state"),
        "USAGE_PARTITIONS_START": (first - timedelta(days=7)).isoformat(),
        "USAGE_PHALA__BASE_URL": f"{sandbox_url}/phala",
        "USAGE_NEON__BASE_URL": f"{sandbox_url}/neon",
        "USAGE_FORGE__BASE_URL": f"{sandbox_url}/forge/graphql",
        "USAGE_LEDGER__API_BASE_URL": f"{sandbox_url}/ledger",
        "USAGE_ALERTS__PAGERDUTY_EVENTS_URL": f"{sandbox_url}/pagerduty/v2/enqueue",
        "SLACK_WEBHOOK_URL": f"{sandbox_url}/slack/services/T0/B0/bench",
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _peak_rss_mb() -> float:
    """This process's VmHWM and its largest waited-for child's maxrss, in MB."""
    hwm_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm_kb = int(line.split()[1])
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(hwm_kb, children_kb) / 1024, 1)


def worker(args: argparse.Namespace) -> None:
    """One range run of every asset (in this child process); prints a JSON line."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from dagster import DagsterInstance

    import usage_orchestration
    from usage_orchestration.definitions import defs

    job = defs.resolve_job_def("daily_usage_job")
    # ephemeral (in memory), as the other benchmarks: the run's own work and Dagster's event
    # bookkeeping without SQLite's per-event commit; "sqlite": the persistent instance in
    # DAGSTER_HOME (the demo's), whose per-partition event writes are reported separately
    instance = (
        DagsterInstance.ephemeral() if args.instance == "ephemeral" else DagsterInstance.get()
    )
    rss_before = _peak_rss_mb()
    samples: list[tuple[float, float]] = []  # (time, VmRSS MB): which step holds the memory
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            samples.append((time.time(), _rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        tags={
            "dagster/asset_partition_range_start": args.first,
            "dagster/asset_partition_range_end": args.last,
        },
        raise_on_error=False,
    )
    wall = time.perf_counter() - t0
    # the run's peak, read before the event log is loaded below: reading a year's events back
    # (every partition's materialization and metadata) costs ~60 MB the run itself never held
    peak_rss = _peak_rss_mb()
    done.set()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    steps: dict[str, str] = {}
    started: dict[str, float] = {}
    step_s: dict[str, float] = {}
    step_rss: dict[str, float] = {}
    for record in instance.all_logs(result.run_id):
        ev = record.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            started[ev.step_key] = record.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            steps[ev.step_key] = ev.event_type_value
            t_start = started.get(ev.step_key, 0)
            step_s[ev.step_key] = round(record.timestamp - t_start, 2)
            inside = [m for t, m in samples if t_start <= t <= record.timestamp]
            step_rss[ev.step_key] = max(inside) if inside else 0.0
    failed = [k for k, v in steps.items() if v != "STEP_SUCCESS"]
    print(
        json.dumps(
            {
                "success": result.success,
                # the checkout measured (the child must import this one, not an installed copy)
                "package": str(Path(usage_orchestration.__file__).resolve().parent),
                "wall_s": round(wall, 3),
                "peak_rss_mb": peak_rss,
                "rss_before_run_mb": rss_before,
                "steps": len(steps),
                "failed_steps": failed,
                "step_s": step_s,
                "step_max_rss_mb": step_rss,
            }
        )
    )


def minimum_requests(settings: Any, sandbox: Any, days: list[date]) -> dict[str, int]:
    """The fewest requests the sandbox's paging rules allow for ``days`` with ``settings``."""
    from usage_orchestration.sandbox import forge as sforge

    today = datetime.now(UTC).date()
    out: dict[str, int] = {}
    # Phala: per app, one series of offset pages over the range; a short page ends it (a full
    # last page needs one more, empty, page).
    from usage_orchestration.sandbox.phala import phala_records

    size = settings.phala.page_size
    # the client asks start_date a day early (its inclusiveness is undocumented): the sandbox
    # answers that padded day too, and its records count towards the pages
    asked = [min(days) - timedelta(days=1), *days] if days else []
    out["phala"] = sum(
        sum(len(phala_records(sandbox.seed, app_id, d)) for d in asked) // size + 1
        for app_id in settings.phala.app_ids
    )
    # Neon: the days inside the daily lookback, one request per project chunk (the org's
    # projects fit one page of page_limit); nothing is requested outside it (unavailable).
    neon_days = [d for d in days if (today - d).days < settings.neon.daily_lookback_days]
    chunks = (
        -(-len(settings.neon.project_ids) // 100) if settings.neon.project_ids else 1
    )  # ids mode: ≤ 100 ids a request
    out["neon"] = chunks if neon_days else 0
    # Forge: per (app, resource), the pages of the sandbox's answer over the days in its
    # lookback that the client's rule must read: ``pageSize`` may count periods or grouped rows
    # (the contract does not say), so a page full by either count is followed by the next one.
    st = sandbox.state.get("forge", {})
    page_size = int(st.get("page_size", sforge.DEFAULT_PAGE_SIZE))
    counts = st.get("page_size_counts", "periods")
    lookback = settings.forge.lookback_days
    forge_days = [d for d in days if lookback is None or d >= today - timedelta(days=lookback)]
    served = (
        sforge.served_days(
            datetime.combine(forge_days[0], datetime.min.time(), UTC)
            if forge_days
            else datetime.now(UTC),
            datetime.combine(forge_days[-1], datetime.max.time(), UTC)
            if forge_days
            else datetime.now(UTC),
            sandbox.now().date(),
            st.get("lookback_days", 60),
        )
        if forge_days
        else []
    )
    forge = 0
    for app in settings.forge.apps if forge_days else []:
        for res in app.resources:
            aris = list(app.context_aris) if app.context_aris else None
            group_by = app.group_by or ("CONTEXT_ARI" if aris else None)
            items = sforge.usage_items(sandbox.seed, app.app_id, res, served, aris, group_by)
            page = 1
            while True:
                forge += 1
                got = sforge.page_of(items, page, page_size, counts)
                rows = sum(len(i.get("groups", [None])) for i in got)
                if not got or (len(got) < page_size and rows < page_size):
                    break
                page += 1
    out["forge"] = forge
    return out


def run_range(
    n: int,
    sandbox: Any,
    server_url: str,
    base: Path,
    instance: str = "ephemeral",
    profile: str | None = None,
) -> dict[str, Any]:
    from usage_orchestration.sandbox.demo_ledger import seed_demo_ledger
    from usage_orchestration.settings import load_settings

    days = _days(n)
    tmp = base / f"days-{n}"
    home = tmp / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env_vars = _settings_env(tmp, server_url, days[0])
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("USAGE_", "DAGSTER_")) or k == "USAGE_TEST_POSTGRES_URL"
    }
    env.update(env_vars)
    env.update({k: sandbox.API_KEYS[api] for k, api in SECRETS.items()})
    env.update({"DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore"})
    # the child runs in ``tmp``: a relative PYTHONPATH (``PYTHONPATH=.``) would no longer name
    # this checkout, and the package would be imported from wherever the venv installed it
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    )
    old = dict(os.environ)
    os.environ.update(env_vars)
    try:
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(old)
    sandbox.ledger_url = settings.ledger.database_url
    seed_demo_ledger(settings.ledger.database_url, settings, days, sandbox.seed)
    sandbox.reset()
    before = {api: sandbox.request_count(api) for api in PROVIDER_APIS}
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            "--first",
            days[0].isoformat(),
            "--last",
            days[-1].isoformat(),
            "--instance",
            instance,
            *(["--profile", f"{profile}.{n}"] if profile else []),
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"the {n}-day worker failed (exit {proc.returncode})")
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    per_api = {api: sandbox.request_count(api) - before[api] for api in PROVIDER_APIS}
    minimum = minimum_requests(settings, sandbox, days)
    run.update(
        {
            "days": n,
            "range": f"{days[0]}..{days[-1]}",
            "requests": sum(per_api.values()),
            "requests_by_provider": per_api,
            "minimum_requests": sum(minimum.values()),
            "minimum_by_provider": minimum,
            "http_429": sum(sandbox.request_count(api, 429) for api in PROVIDER_APIS),
        }
    )
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, nargs="+", default=[30, 365])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", help=argparse.SUPPRESS)
    p.add_argument("--last", help=argparse.SUPPRESS)
    p.add_argument(
        "--instance",
        choices=("ephemeral", "sqlite"),
        default="ephemeral",
        help="the Dagster instance of the runs (sqlite: persistent, under a temporary DAGSTER_HOME)",
    )
    p.add_argument("--profile", default=None, help="write a cProfile of each run here (.<days>)")
    a = p.parse_args(argv)
    if a.worker:
        worker(a)
        return 0

    from usage_orchestration.sandbox import Sandbox
    from usage_orchestration.sandbox.server import SandboxServer

    base = Path(tempfile.mkdtemp(prefix="range-scaling-"))
    sandbox = Sandbox(seed=7)
    server = SandboxServer(sandbox).start()
    runs = []
    try:
        for n in a.days:
            run = run_range(n, sandbox, server.url, base, a.instance, a.profile)
            print(json.dumps(run))
            runs.append(run)
    finally:
        server.stop()
    summary: dict[str, Any] = {}
    for r in runs:
        n = r["days"]
        summary[f"wall_s_{n}"] = r["wall_s"]
        summary[f"peak_rss_mb_{n}"] = r["peak_rss_mb"]
        summary[f"requests_{n}"] = r["requests"]
        summary[f"minimum_requests_{n}"] = r["minimum_requests"]
    ok = all(r["success"] for r in runs)
    if {30, 365} <= set(a.days):
        ok = ok and (
            summary["wall_s_365"] <= 60
            and summary["wall_s_365"] <= 4 * summary["wall_s_30"]
            and summary["peak_rss_mb_365"] <= 1.25 * summary["peak_rss_mb_30"]
            and summary["requests_365"] == summary["minimum_requests_365"]
        )
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
