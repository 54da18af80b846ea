"""Chaos: the fault proxy does what it says, and a 30-day backfill of every asset through it
(20 % 5xx, 10 % 429, 5 % timeouts, 1 % bad bodies) succeeds on its first attempt in at least 9 of
10 seeds with a warehouse equal, row for row, to the fault-free one.

Each seed (and the fault-free baseline) runs as its own subprocess (chaos_support.py
``faults``): the runs mostly sleep in backoff, so they overlap on two cores.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.faults import FAULT_KINDS, FaultProxy, FaultRates, choose_fault
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration_tests.chaos_support import (
    CHAOS_RATES,
    backfill_days,
    run_seed_subprocess,
    snapshot,
    snapshot_diff,
)

ROOT = Path(__file__).resolve().parents[1]
SEEDS = list(range(10))
WORKERS = int(os.environ.get("CHAOS_WORKERS", "11"))  # all at once: the runs mostly sleep
PHALA_PATH = "/phala/api/v1/apps/a1b2c3d4e5f60718293a4b5c6d7e8f9012345678/usage"
PHALA_HEADERS = {"X-API-Key": Sandbox.API_KEYS["phala"]}


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    s = SandboxServer(Sandbox(seed=7)).start()
    yield s
    s.stop()


def _phala_get(client: httpx.Client, url: str) -> httpx.Response:
    params = {"start_date": "2026-11-01T00:00:00Z", "end_date": "2026-11-02T00:00:00Z", "limit": 5}
    return client.get(url + PHALA_PATH, params=params, headers=PHALA_HEADERS)


def test_fault_choice_is_deterministic_per_seed_and_follows_the_rates() -> None:
    rates = FaultRates(**CHAOS_RATES)
    first = [choose_fault(rates, 3, n) for n in range(4000)]
    assert first == [choose_fault(rates, 3, n) for n in range(4000)]
    assert first != [choose_fault(rates, 4, n) for n in range(4000)]
    kinds = Counter(k or "none" for k in first)
    share = {
        "5xx": sum(kinds[k] for k in FAULT_KINDS if k.startswith("http_5")) / 4000,
        "429": (kinds["http_429"] + kinds["http_429_retry_after"]) / 4000,
        "timeout": kinds["timeout"] / 4000,
    }
    assert share["5xx"] == pytest.approx(0.20, abs=0.03)
    assert share["429"] == pytest.approx(0.10, abs=0.02)
    assert share["timeout"] == pytest.approx(0.05, abs=0.015)
    assert set(kinds) == {*FAULT_KINDS, "none"}
    with pytest.raises(ValueError):
        FaultRates(http_5xx=0.8, http_429=0.3)


def test_without_faults_the_proxy_forwards_the_sandbox_answer(server: SandboxServer) -> None:
    with FaultProxy(server.url, FaultRates(), seed=1) as proxy, httpx.Client() as client:
        direct = _phala_get(client, server.url)
        proxied = _phala_get(client, proxy.url)
    assert direct.status_code == proxied.status_code == 200
    assert proxied.content == direct.content
    assert proxy.counts == Counter(forwarded=1)


def test_status_faults_reach_the_client(server: SandboxServer) -> None:
    rates = FaultRates(http_5xx=0.5, http_429=0.5, retry_after_s=(1,))
    with FaultProxy(server.url, rates, seed=1) as proxy, httpx.Client() as client:
        answers = [_phala_get(client, proxy.url) for _ in range(40)]
    faults = proxy.faults()
    assert {r.status_code for r in answers} <= {429, 500, 502, 503, 504}
    assert Counter(r.status_code for r in answers)[429] == (
        faults["http_429"] + faults["http_429_retry_after"]
    )
    with_header = [r for r in answers if r.status_code == 429 and "Retry-After" in r.headers]
    assert len(with_header) == faults["http_429_retry_after"] > 0
    assert {r.headers["Retry-After"] for r in with_header} == {"1"}
    assert faults["http_429"] > 0 and sum(faults[f"http_{s}"] for s in (500, 502, 503, 504)) > 0


def test_a_slow_answer_outlasts_the_client_timeout(server: SandboxServer) -> None:
    with (
        FaultProxy(server.url, FaultRates(timeout=1.0), seed=1, timeout_sleep_s=0.6) as proxy,
        httpx.Client(timeout=0.2) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            _phala_get(client, proxy.url)
    assert proxy.faults()["timeout"] == 1


def test_bad_bodies_are_cut_or_garbled(server: SandboxServer) -> None:
    seen: Counter[str] = Counter()
    with FaultProxy(server.url, FaultRates(bad_body=1.0), seed=2) as proxy:
        for _ in range(30):
            with httpx.Client() as client:  # a broken connection must not spoil the next call
                try:
                    r = _phala_get(client, proxy.url)
                except httpx.RemoteProtocolError:
                    seen["broken"] += 1
                    continue
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == len(r.content)
            with pytest.raises(ValueError):
                r.json()
            seen["unparsable"] += 1
    faults = proxy.faults()
    assert seen["broken"] == faults["truncated_conn"] > 0
    assert seen["unparsable"] == faults["truncated"] + faults["garbled"]
    assert faults["truncated"] > 0 and faults["garbled"] > 0


# -- the backfill under faults ---------------------------------------------------------------------
def _report(r: dict[str, Any], diff: str) -> str:
    met = {k: v for k, v in r.get("faults", {}).items() if v}
    return (
        f"seed {r['seed']}: success={r['success']} step retries={r.get('retried_steps')} "
        f"requests={r.get('requests')} faults={met}\n"
        f"{r.get('failure') or r.get('crash') or ''}\n{diff}\n"
        f"faults met, in order:\n{r.get('fault_log', '')}"
    )


@pytest.mark.timeout(900)
def test_30_day_backfill_of_every_asset_survives_faults(tmp_path: Path) -> None:
    last_day = backfill_days()[-1].isoformat()
    jobs: list[int | None] = [None, *SEEDS]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(
            pool.map(lambda s: run_seed_subprocess(s, tmp_path / f"seed_{s}", last_day), jobs)
        )
    baseline, seeded = results[0], results[1:]
    assert baseline["success"] and baseline["retried_steps"] == 0, _report(baseline, "")
    assert not any(baseline["faults"].values())
    expected = snapshot(f"sqlite:///{tmp_path / 'seed_None' / 'warehouse.sqlite'}")
    assert expected["provider_usage"] and expected["budget_status"]  # the baseline holds data

    passed, failures = [], []
    for r in seeded:
        diff = ""
        if r["success"]:
            db = tmp_path / f"seed_{r['seed']}" / "warehouse.sqlite"
            diff = snapshot_diff(expected, snapshot(f"sqlite:///{db}"))
        if r["success"] and r["retried_steps"] == 0 and not diff:
            passed.append(r["seed"])
        else:
            failures.append(_report(r, diff))
    totals = Counter()
    for r in seeded:
        totals.update(r["faults"])
    print(
        f"\nchaos: {len(passed)}/{len(seeded)} seeds passed; faults injected {dict(totals)}; "
        f"requests {sum(r.get('requests') or 0 for r in seeded)}; "
        f"wall per seed {[r.get('wall_s') for r in seeded]}"
    )
    for f in failures:
        print(f)  # a failing seed says which faults it met
    assert len(passed) >= 9, "\n\n".join(failures)
    assert all(totals[k] > 0 for k in FAULT_KINDS), f"a fault kind was never injected: {totals}"


def test_fault_rates_name_only_known_groups_and_sum_to_at_most_one() -> None:
    assert FaultRates(http_5xx=0.2).rate("timeout") == 0.0
    with pytest.raises(ValueError, match="unknown fault groups"):
        FaultRates(http_503=0.1)  # a status, not a group: must not silently inject nothing
    with pytest.raises(ValueError, match="at most 1"):
        FaultRates(http_5xx=0.6, http_429=0.5)
