"""The chaos backfill outside pytest: a fault-free baseline and N seeds of a 30-day range run of
every asset behind the fault proxy (20 % 5xx, 10 % 429, 5 % timeouts, 1 % bad bodies), each in
its own process, compared row for row with the baseline (docs/chaos.md).

    .venv/bin/python benchmarks/chaos.py [--seeds 10 --workers 11]

Figures: ``seeds_passed`` (run succeeded, no step retry, warehouse equal to the baseline),
``faults`` injected by kind over all seeds, ``requests`` the proxy received, ``wall_s`` from the
first process started to the last one ended, and ``seed_wall_s`` per seed. The last line printed
is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usage_orchestration_tests.chaos_support import (
    backfill_days,
    run_seed_subprocess,
    snapshot,
    snapshot_diff,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=11)
    args = parser.parse_args()
    last_day = backfill_days()[-1].isoformat()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        jobs: list[int | None] = [None, *range(args.seeds)]
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(
                pool.map(lambda s: run_seed_subprocess(s, root / f"s{s}", last_day), jobs)
            )
        wall = time.monotonic() - started
        expected = snapshot(f"sqlite:///{root / 'sNone' / 'warehouse.sqlite'}")
        passed, faults = 0, Counter()
        for r in results[1:]:
            faults.update(r["faults"])
            db = root / f"s{r['seed']}" / "warehouse.sqlite"
            diff = snapshot_diff(expected, snapshot(f"sqlite:///{db}")) if r["success"] else "-"
            ok = r["success"] and r["retried_steps"] == 0 and not diff
            passed += ok
            print(f"seed {r['seed']}: {'ok' if ok else 'FAILED'} {r.get('wall_s')} s {diff}")
    figures = {
        "seeds": args.seeds,
        "seeds_passed": passed,
        "baseline_success": results[0]["success"],
        "faults": dict(faults),
        "requests": sum(r.get("requests") or 0 for r in results[1:]),
        "wall_s": round(wall, 1),
        "seed_wall_s": [r.get("wall_s") for r in results[1:]],
    }
    print(json.dumps(figures))
    return 0 if passed == args.seeds else 1


if __name__ == "__main__":
    sys.exit(main())
