"""Dagster's own cost of a range run, with no work in it: the floor under ``range_scaling.py``.

    .venv/bin/python benchmarks/dagster_floor.py [--days 30 365] [--assets 9] [--figures 8]

A job of ``--assets`` daily-partitioned assets shaped like ``daily_usage_job`` (three roots, the
rest downstream of all of them), each ``BackfillPolicy.single_run()``, whose steps do nothing but
record ``--figures`` numbers per day (``add_asset_metadata(partition_key=...)``, as
``defs/common.record_days`` does) and return an empty ``MaterializeResult``. Each range runs
once with ``execute_in_process`` on an ephemeral instance (as ``range_scaling.py``) in a fresh
child process (``--instance home``: the persistent instance of ``$DAGSTER_HOME`` instead, whose
``dagster.yaml`` chooses SQLite or PostgreSQL storage). What is measured is what Dagster spends
per partition: a planned event per asset and day when the run is created, and a
materialization per asset and day as it runs.

The last line printed is a JSON object: per range ``wall_s_<n>`` (the ``execute_in_process``
call), ``create_run_s_<n>`` (from the call to the run's start: creating the run and its planned
events), ``events_<n>`` (the run's event count) and ``peak_rss_mb_<n>`` (the child's ``VmHWM``
after the run: on the ephemeral instance the run's events stay in this process, in its in-memory
event log); and ``floor_ratio`` = ``wall_s_365 / wall_s_30`` and ``rss_ratio`` (the same of the
peaks) when both ran. ``range_scaling.py``'s run of every asset spends at least this floor
on top of its own work, so its 365-day time is at least ``wall_s_365`` here.

``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1`` in the environment shows what Dagster's
single planned event per asset saves (the project does not set it: a failed run's partitions
would then not show as failed; docs/operations.md).
"""

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

# at module level and without `from __future__ import annotations`: Dagster reads `context`'s
# annotation as a type
import dagster as dg

ROOTS = 3


def _is_run_start(record: dg.EventLogEntry) -> bool:
    ev = record.dagster_event
    return ev is not None and ev.event_type == dg.DagsterEventType.RUN_START


def _peak_rss_mb() -> float:
    """This process's peak resident set so far (the kernel's ``VmHWM``), as range_scaling.py."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _worker(days: int, assets: int, figures: int, instance_kind: str) -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    partitions = dg.DailyPartitionsDefinition(start_date=first.isoformat(), timezone="UTC")

    def build(name: str, deps: list[str]) -> dg.AssetsDefinition:
        @dg.asset(
            name=name,
            deps=deps,
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
        )
        def step(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            for i, key in enumerate(context.partition_keys):
                context.add_asset_metadata(
                    {f"figure_{f}": i * figures + f for f in range(figures)}, partition_key=key
                )
            return dg.MaterializeResult()

        return step

    roots = [f"root_{i}" for i in range(ROOTS)]
    defs = [build(n, []) for n in roots]
    defs += [build(f"derived_{i}", roots) for i in range(assets - ROOTS)]
    job = dg.define_asset_job("floor_job", selection=dg.AssetSelection.all())
    resolved = dg.Definitions(assets=defs, jobs=[job]).resolve_job_def("floor_job")
    # "home": the persistent instance of $DAGSTER_HOME (its dagster.yaml: SQLite or PostgreSQL)
    instance = (
        dg.DagsterInstance.get() if instance_kind == "home" else dg.DagsterInstance.ephemeral()
    )
    rss_before = _peak_rss_mb()
    t0 = time.time()
    result = resolved.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    wall = time.time() - t0
    peak_rss = _peak_rss_mb()  # before the events are read back (that costs memory of its own)
    events = instance.all_logs(result.run_id)
    print(
        json.dumps(
            {
                "success": result.success,
                "wall_s": round(wall, 2),
                # the run created (its planned events written) until it starts
                "create_run_s": round(min(e.timestamp for e in events if _is_run_start(e)) - t0, 2),
                "events": len(events),
                "peak_rss_mb": peak_rss,
                "rss_before_run_mb": rss_before,
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, nargs="+", default=[30, 365])
    parser.add_argument("--assets", type=int, default=9)  # daily_usage_job's partitioned assets
    parser.add_argument("--figures", type=int, default=8)  # numbers recorded per asset and day
    parser.add_argument(
        "--instance",
        choices=["ephemeral", "home"],
        default="ephemeral",
        help="home: the persistent instance of $DAGSTER_HOME (SQLite or PostgreSQL storage)",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.assets, args.figures, args.instance)
        return 0
    out: dict[str, float | int] = {}
    for n in args.days:
        cmd = [sys.executable, __file__, "--worker", str(n)]
        cmd += ["--assets", str(args.assets), "--figures", str(args.figures)]
        cmd += ["--instance", args.instance]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        fig = json.loads(line.strip().splitlines()[-1])
        if not fig["success"]:
            raise SystemExit(f"the {n}-day run failed")
        print(json.dumps({"days": n, **fig}))
        out |= {f"wall_s_{n}": fig["wall_s"], f"create_run_s_{n}": fig["create_run_s"]}
        out[f"events_{n}"] = fig["events"]
        out[f"peak_rss_mb_{n}"] = fig["peak_rss_mb"]
    if "wall_s_30" in out and "wall_s_365" in out:
        out["floor_ratio"] = round(float(out["wall_s_365"]) / float(out["wall_s_30"]), 2)
        out["rss_ratio"] = round(float(out["peak_rss_mb_365"]) / float(out["peak_rss_mb_30"]), 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
