"""Reconciling one day against a large credit ledger: time and memory must not grow with it.

Builds two ledgers with the demo schema (``ledger/schema.py``): a large one (default 10,000,000
``usage_event`` rows over 30 days) and a small one (default 100,000 rows over the same days),
each with a warehouse holding that day's provider usage (the Phala sandbox's demo usage). Then,
for each ledger, in fresh child processes:

- ``reconcile``: what the pipeline does for one day — ``SqlLedger.daily_usage`` (the SQL GROUP BY
  in the ledger), ``store_ledger_days`` into the warehouse's ``ledger_daily_usage`` (one
  transaction), ``analysis_io.reconcile_days`` (the reconcile helper's SQL + pure
  ``reconcile.reconcile_day``) and ``write_reconciliation``;
- ``bare``: the bare ``SELECT … GROUP BY`` of that day on the same database through the raw
  DB-API driver (no SQLAlchemy, no pydantic, no warehouse).

Both are timed the same way: one warm-up, then the median of ``--repeat`` runs. The JSON also
gives ``ledger_read_s`` (``SqlLedger.daily_usage`` alone, the only part that grows with the
ledger) and ``warehouse_and_compare_s`` (the rest: a fixed cost, larger on PostgreSQL where the
warehouse writes are network round trips). The peak RSS of
the reconciling child (``VmHWM``, i.e. its ``ru_maxrss`` without the parent's share) is reported for each ledger.

Usage::

    .venv/bin/python benchmarks/reconcile_ledger.py                   # SQLite in a temp dir
    .venv/bin/python benchmarks/reconcile_ledger.py --postgres-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python benchmarks/reconcile_ledger.py --events 1000000 --workdir /tmp/lb --keep

The last line printed is a JSON object with at least ``events``, ``reconcile_s``,
``bare_group_by_s``, ``peak_rss_mb_small`` and ``peak_rss_mb_large``; targets:
``reconcile_s <= 1.5 * bare_group_by_s`` on the large ledger and
``|peak_rss_mb_large - peak_rss_mb_small| <= 50``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

START = date(2026, 4, 1)
RESOURCE_TYPES = [
    "app_compute",
    "job_compute",
    "workspace_storage",
    "ai",
    "agent_run",
    "app_storage",
]
UNITS = {
    "app_compute": "second",
    "job_compute": "second",
    "workspace_storage": "byte",
    "ai": "dollar",
    "agent_run": "run",
    "app_storage": "byte",
}
N_ENTITIES = 120
COLUMNS = (
    "occurred_at",
    "actor",
    "actor_type",
    "entity_id",
    "entity_type",
    "resource_type",
    "quantity",
    "unit",
    "credits",
    "metadata",
)


# ---------------------------------------------------------------------------------------------
# building the ledgers
# ---------------------------------------------------------------------------------------------
def _entities() -> list[tuple[str, str]]:
    from usage_orchestration.sandbox.demo_ledger import DEMO_ENTITIES

    out = [(eid, etype) for eid, etype, *_ in DEMO_ENTITIES]
    for i in range(N_ENTITIES - len(out)):
        out.append(
            (
                str(uuid.UUID(int=(i + 1) * 0x9E3779B97F4A7C15 % (1 << 128))),
                "app" if i % 3 else "workspace",
            )
        )
    return out


def _rows(events: int, days: int, ts: Callable[[datetime], str]) -> Iterator[tuple[Any, ...]]:
    """``events`` rows spread evenly over ``days`` days in time order (an append-only ledger)."""
    ents = _entities()
    n_e, n_r = len(ents), len(RESOURCE_TYPES)
    per_day = events // days
    extra = events - per_day * days
    actors = [f"user{i}" for i in range(50)]
    for d in range(days):
        day = datetime(START.year, START.month, START.day, tzinfo=UTC) + timedelta(days=d)
        n = per_day + (1 if d < extra else 0)
        stamps = [ts(day + timedelta(seconds=s)) for s in range(86_400)]
        for i in range(n):
            k = d * per_day + i
            eid, etype = ents[(k * 7919) % n_e]
            rt = RESOURCE_TYPES[(k * 31 + k // n_e) % n_r]
            qty = k % 97 + 1
            yield (
                stamps[i * 86_400 // n],
                actors[k % 50],
                "user",
                eid,
                etype,
                rt,
                qty,
                UNITS[rt],
                qty / 100,
                None,
            )


def _build_sqlite(path: str, events: int, days: int) -> None:
    from sqlalchemy.schema import CreateIndex, CreateTable

    from usage_orchestration.ledger.schema import (
        ledger_metadata,
        usage_event,
        usage_event_day_index,
    )
    from usage_orchestration.warehouse.store import make_engine

    if os.path.exists(path):
        os.remove(path)
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(CreateTable(usage_event))
    ledger_metadata.create_all(
        engine, tables=[t for t in ledger_metadata.sorted_tables if t is not usage_event]
    )
    index_ddl = str(CreateIndex(usage_event_day_index).compile(engine))
    engine.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-200000")
    sql = f"INSERT INTO usage_event ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608 - constant column list
    rows = _rows(events, days, lambda dt: dt.strftime("%Y-%m-%d %H:%M:%S.000000"))
    batch: list[tuple[Any, ...]] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= 200_000:
            con.executemany(sql, batch)
            batch.clear()
    if batch:
        con.executemany(sql, batch)
    con.commit()
    con.execute(index_ddl)
    con.execute("ANALYZE")
    con.commit()
    con.execute("PRAGMA journal_mode=WAL")
    con.close()


def _build_postgres(url: str, events: int, days: int) -> None:
    from sqlalchemy.schema import CreateIndex, CreateTable

    from usage_orchestration.ledger.schema import (
        ledger_metadata,
        usage_event,
        usage_event_day_index,
    )
    from usage_orchestration.warehouse.store import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(CreateTable(usage_event))
    ledger_metadata.create_all(
        engine, tables=[t for t in ledger_metadata.sorted_tables if t is not usage_event]
    )
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        copy = f"COPY usage_event ({', '.join(COLUMNS)}) FROM STDIN"
        with cur.copy(copy) as stream:  # psycopg 3 (the project's PostgreSQL driver)
            for r in _rows(events, days, lambda dt: dt.strftime("%Y-%m-%d %H:%M:%S+00")):
                stream.write_row(r)
        raw.commit()
        cur.execute(str(CreateIndex(usage_event_day_index).compile(engine)))
        raw.commit()
        driver = raw.driver_connection  # VACUUM must run outside a transaction
        driver.autocommit = True
        vac = driver.cursor()
        vac.execute("VACUUM ANALYZE usage_event")  # the visibility map: index-only scans
        vac.close()
        driver.autocommit = False
    finally:
        raw.close()
        engine.dispose()


def _seed_warehouse(url: str, day: date) -> int:
    """The day's provider usage (Phala sandbox demo rows) in a fresh warehouse."""
    from usage_orchestration.providers.records import DayCoverage, FetchResult
    from usage_orchestration.sandbox.phala import demo_usage
    from usage_orchestration.settings import load_settings
    from usage_orchestration.warehouse.provider_load import store_fetch
    from usage_orchestration.warehouse.store import Warehouse

    settings = _settings()
    rows = demo_usage(7, settings, day)
    cov = [
        DayCoverage(provider="phala", account_id=a, usage_date=day, status="complete", row_count=1)
        for a in settings.phala.app_ids
    ]
    wh = Warehouse(url)
    wh.ensure_schema()
    n = store_fetch(
        wh, "phala", [day], FetchResult(rows=rows, coverage=cov), settings, "bench"
    ).rows_written
    wh.engine.dispose()
    del load_settings
    return n


def _settings() -> Any:
    from usage_orchestration.settings import load_settings

    # Phala only: the benchmark measures the ledger side, not the other sandboxes
    return load_settings(neon={"enabled": False}, forge={"enabled": False})


# ---------------------------------------------------------------------------------------------
# the measured children
# ---------------------------------------------------------------------------------------------
def _child_reconcile(ledger_url: str, warehouse_url: str, day: date, repeat: int) -> dict[str, Any]:
    from usage_orchestration.ledger.sql import SqlLedger
    from usage_orchestration.providers.registry import reconcile_config
    from usage_orchestration.warehouse.analysis import reconcile_days, write_reconciliation
    from usage_orchestration.warehouse.ledger_load import store_ledger_days
    from usage_orchestration.warehouse.store import Warehouse

    config = reconcile_config(_settings())
    reader = SqlLedger(ledger_url)
    wh = Warehouse(warehouse_url)
    wh.ensure_schema()

    def once() -> tuple[int, int]:
        usage = store_ledger_days(reader, wh, [day], "bench")
        rows = reconcile_days(wh, [day], config)[day]
        write_reconciliation(wh, [day], rows, "bench")
        return len(usage), sum(1 for r in rows if r.is_break)

    groups, breaks = once()  # warm-up
    times, read_times = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    for _ in range(repeat):  # the ledger read alone: the part that depends on the ledger's size
        t0 = time.perf_counter()
        reader.daily_usage(day)
        read_times.append(time.perf_counter() - t0)
    return {
        "seconds": statistics.median(times),
        "all": times,
        "groups": groups,
        "breaks": breaks,
        "ledger_read_s": statistics.median(read_times),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` (Linux) is per address space; ru_maxrss
    would also carry the *parent's* peak across fork+exec, which is not the reconcile's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


BARE_SQLITE = (
    "SELECT entity_id, entity_type, resource_type, unit, SUM(quantity), SUM(credits), COUNT(*) "
    "FROM usage_event WHERE occurred_at >= ? AND occurred_at < ? "
    "GROUP BY entity_id, entity_type, resource_type, unit"
)
BARE_POSTGRES = BARE_SQLITE.replace("?", "%s")


def _child_bare(ledger_url: str, day: date, repeat: int) -> dict[str, Any]:
    lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
    hi = lo + timedelta(days=1)
    if ledger_url.startswith("sqlite"):
        con: Any = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
        sql, params = (
            BARE_SQLITE,
            (lo.strftime("%Y-%m-%d %H:%M:%S.%f"), hi.strftime("%Y-%m-%d %H:%M:%S.%f")),
        )
    else:
        from usage_orchestration.warehouse.store import make_engine

        engine = make_engine(ledger_url)
        con = engine.raw_connection()
        sql, params = BARE_POSTGRES, (lo, hi)

    def once() -> int:
        cur = con.cursor()
        cur.execute(sql, params)
        n = len(cur.fetchall())
        cur.close()
        return n

    groups = once()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    con.close()
    return {"seconds": statistics.median(times), "all": times, "groups": groups}


def _run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def _pg_url(base: str, schema: str) -> str:
    from usage_orchestration.warehouse.store import normalize_url

    sep = "&" if "?" in base else "?"
    return f"{normalize_url(base)}{sep}options=-csearch_path%3D{schema}"


def _pg_schema(base: str, schema: str, *, drop: bool) -> None:
    from sqlalchemy.schema import CreateSchema, DropSchema

    from usage_orchestration.warehouse.store import make_engine

    engine = make_engine(base)
    with engine.begin() as conn:
        conn.execute(DropSchema(schema, cascade=True, if_exists=True))
        if not drop:
            conn.execute(CreateSchema(schema))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--small-events", type=int, default=100_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument(
        "--postgres-url", default=None, help="PostgreSQL instead of SQLite (schemas bench_*)"
    )
    p.add_argument("--workdir", default=None, help="SQLite files here (default: a temp dir)")
    p.add_argument(
        "--keep", action="store_true", help="keep the ledgers (and reuse them next time)"
    )
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "reconcile":
            res = _child_reconcile(rest[0], rest[1], date.fromisoformat(rest[2]), int(rest[3]))
        else:
            res = _child_bare(rest[0], date.fromisoformat(rest[1]), int(rest[2]))
        print(json.dumps(res))
        return 0

    day = START + timedelta(days=args.days // 2)  # a day in the middle of the ledger
    workdir = args.workdir or tempfile.mkdtemp(prefix="ledger-bench-")
    os.makedirs(workdir, exist_ok=True)
    backend = "postgresql" if args.postgres_url else "sqlite"
    results: dict[str, dict[str, Any]] = {}
    load_s: dict[str, float] = {}
    schemas: list[str] = []
    try:
        for size, events in (("small", args.small_events), ("large", args.events)):
            marker = os.path.join(workdir, f"{backend}-{size}.json")
            params = {"events": events, "days": args.days, "n_entities": N_ENTITIES}
            if backend == "sqlite":
                ledger_url = f"sqlite:///{os.path.join(workdir, f'ledger-{size}.sqlite')}"
                warehouse_url = f"sqlite:///{os.path.join(workdir, f'warehouse-{size}.sqlite')}"
            else:
                schemas += [f"bench_ledger_{size}", f"bench_wh_{size}"]
                ledger_url = _pg_url(args.postgres_url, f"bench_ledger_{size}")
                warehouse_url = _pg_url(args.postgres_url, f"bench_wh_{size}")
            reuse = args.keep and os.path.exists(marker) and json.load(open(marker)) == params
            t0 = time.perf_counter()
            if not reuse:
                print(
                    f"building the {size} ledger: {events:,} events over {args.days} days ({backend})",
                    flush=True,
                )
                if backend == "sqlite":
                    _build_sqlite(ledger_url.removeprefix("sqlite:///"), events, args.days)
                    if os.path.exists(warehouse_url.removeprefix("sqlite:///")):
                        os.remove(warehouse_url.removeprefix("sqlite:///"))
                else:
                    _pg_schema(args.postgres_url, f"bench_ledger_{size}", drop=False)
                    _pg_schema(args.postgres_url, f"bench_wh_{size}", drop=False)
                    _build_postgres(ledger_url, events, args.days)
                _seed_warehouse(warehouse_url, day)
                with open(marker, "w") as f:
                    json.dump(params, f)
            load_s[size] = time.perf_counter() - t0
            print(f"  {size}: ready in {load_s[size]:.1f} s; measuring {day}", flush=True)
            rec = _run_child(
                "reconcile", ledger_url, warehouse_url, day.isoformat(), str(args.repeat)
            )
            bare = _run_child("bare", ledger_url, day.isoformat(), str(args.repeat))
            results[size] = {"reconcile": rec, "bare": bare}
            print(
                f"  {size}: reconcile {rec['seconds']:.4f} s, bare GROUP BY {bare['seconds']:.4f} s, "
                f"(ledger read alone {rec['ledger_read_s']:.4f} s), peak RSS {rec['peak_rss_mb']:.1f} MB, {rec['groups']} groups, {rec['breaks']} breaks",
                flush=True,
            )
    finally:
        if not args.keep:
            for size in ("small", "large"):
                marker = os.path.join(workdir, f"{backend}-{size}.json")
                if os.path.exists(marker):
                    os.remove(marker)
            if backend == "postgresql":
                for s in schemas:
                    _pg_schema(args.postgres_url, s, drop=True)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    large, small = results["large"], results["small"]
    reconcile_s, bare_s = large["reconcile"]["seconds"], large["bare"]["seconds"]
    rss_small, rss_large = small["reconcile"]["peak_rss_mb"], large["reconcile"]["peak_rss_mb"]
    summary = {
        "backend": backend,
        "events": args.events,
        "events_small": args.small_events,
        "days": args.days,
        "day": day.isoformat(),
        "groups": large["reconcile"]["groups"],
        "reconcile_s": round(reconcile_s, 5),
        "bare_group_by_s": round(bare_s, 5),
        "ratio": round(reconcile_s / bare_s, 3) if bare_s else None,
        "ledger_read_s": round(large["reconcile"]["ledger_read_s"], 5),
        "warehouse_and_compare_s": round(reconcile_s - large["reconcile"]["ledger_read_s"], 5),
        "reconcile_s_small": round(small["reconcile"]["seconds"], 5),
        "bare_group_by_s_small": round(small["bare"]["seconds"], 5),
        "peak_rss_mb_small": round(rss_small, 1),
        "peak_rss_mb_large": round(rss_large, 1),
        "peak_rss_delta_mb": round(rss_large - rss_small, 1),
        "build_s_large": round(load_s["large"], 1),
        "repeat": args.repeat,
        "reconciled_with": "SqlLedger.daily_usage + store_ledger_days + analysis_io.reconcile_days + write_reconciliation",
        "ok_time": bool(bare_s and reconcile_s <= 1.5 * bare_s),
        "ok_memory": abs(rss_large - rss_small) <= 50,
    }
    print(json.dumps(summary, default=lambda o: str(o) if isinstance(o, Decimal) else o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
