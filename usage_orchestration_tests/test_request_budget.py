"""The request budget shared across hosts (``request_budget.backend: warehouse``): the sliding
window's semantics in the warehouse (SQLite always, PostgreSQL when USAGE_TEST_POSTGRES_URL is
set), the setting that chooses it, the provider asset drawing from it, and two "hosts" (separate
processes with separate state dirs) against one sandbox limit on loopback: with the warehouse
budget they never trip it and send exactly the minimum requests; with the file budget (the
negative control) the same load does. A scaled limit (4 per 0.5 s) keeps the test short."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, materialize
from sqlalchemy import func, inspect, select

from usage_orchestration.defs.providers import ProviderApiResource, provider_asset
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.providers.http import ProviderError
from usage_orchestration.providers.registry import FORGE
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import SettingsError, load_settings
from usage_orchestration.warehouse import migrate
from usage_orchestration.warehouse.request_budget import (
    WarehouseBudgets,
    WarehouseRequestBudget,
    request_budget_slot,
    request_budgets,
)
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration_tests.test_profiles import README_SECRETS, readme_example
from usage_orchestration_tests.two_hosts_support import Load, run_takers, run_two_hosts

LOAD = Load()  # 2 hosts x 6 apps, one request each, against 4 requests per 0.5 s


class FakeTime:
    """A clock that only the sleeps move (every process of a test reads the same one)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def _budget(url: str, t: FakeTime, max_requests: int = 3, per_seconds: float = 10.0) -> Any:
    return WarehouseRequestBudget(
        Warehouse(url), "forge", "acct-1", max_requests, per_seconds, clock=t.clock, sleep=t.sleep
    )


def _slots(url: str, key: str = "forge:acct-1") -> list[float]:
    with Warehouse(url).engine.connect() as conn:
        return sorted(
            conn.execute(
                select(request_budget_slot.c.sent_at).where(request_budget_slot.c.budget_key == key)
            ).scalars()
        )


# -- the window's semantics -----------------------------------------------------------------------
def test_a_full_window_waits_until_its_oldest_send_leaves_it(db_url: str) -> None:
    t = FakeTime()
    budget = _budget(db_url, t)
    start = t.now
    for _ in range(3):
        assert budget.acquire() == 0.0
        t.now += 1.0  # sends at start, +1, +2
    t.now -= 1.0
    # the fourth waits for the first send (at start) to leave the 10 s window: 10 - 2 = 8 s
    assert budget.acquire() == pytest.approx(8.0)
    assert t.slept == [pytest.approx(8.0)]
    assert t.now == pytest.approx(start + 10.0)
    # the window is a log of the last sends, one row per slot: it never grows past the limit
    assert _slots(db_url) == pytest.approx([start + 1, start + 2, start + 10])
    # the next one waits for the send at +1: 1 s
    assert budget.acquire() == pytest.approx(1.0)
    assert len(_slots(db_url)) == 3


def test_every_process_draws_from_the_one_budget_and_accounts_are_separate(db_url: str) -> None:
    t = FakeTime()
    here, there = _budget(db_url, t), _budget(db_url, t)  # two processes, one warehouse
    assert [here.acquire(), there.acquire(), here.acquire()] == [0.0, 0.0, 0.0]
    assert there.try_acquire() == pytest.approx(10.0)  # full: nothing taken
    assert len(_slots(db_url)) == 3
    other = WarehouseBudgets(Warehouse(db_url), clock=t.clock, sleep=t.sleep).budget(
        "neon", "org-1", 3, 10.0
    )
    assert other.acquire() == 0.0  # another provider account has its own window
    assert _slots(db_url, "neon:org-1") == [t.now]


def test_a_lowered_limit_counts_every_send_still_in_the_window(db_url: str) -> None:
    t = FakeTime()
    start = t.now
    wide = _budget(db_url, t, max_requests=3)
    for _ in range(3):
        wide.acquire()
        t.now += 1.0
    # settings now say 2 per 10 s: two of the three sends must leave the window first
    narrow = _budget(db_url, t, max_requests=2)
    assert narrow.try_acquire() == pytest.approx(start + 1 + 10 - t.now)
    assert narrow.acquire() == pytest.approx(8.0)
    assert t.now == pytest.approx(start + 11.0)


def test_processes_racing_for_one_window_never_overdraw_it(db_url: str) -> None:
    """Two processes try 8 takes each, at once, from a window of 10: exactly 10 are granted
    (the lock serializes them: no slot is read free by two and taken twice)."""
    granted = run_takers(db_url, processes=2, attempts=8, max_requests=10)
    assert sum(granted) == 10
    assert len(_slots(db_url, "forge:race")) == 10


def test_an_unreachable_warehouse_fails_retryably_naming_the_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://usage:budget-pw-123@127.0.0.1:1/usage"  # nothing listens on port 1
    monkeypatch.setenv("USAGE_WAREHOUSE_URL", url)  # how a real password arrives: masked
    budget = WarehouseRequestBudget(Warehouse(url), "forge", "acct-1", 5, 60.0)
    with pytest.raises(ProviderError) as err:
        budget.acquire()
    assert err.value.retryable and err.value.account == "acct-1"
    assert str(err.value).startswith("forge, account acct-1: request budget forge:acct-1 in the")
    assert "budget-pw-123" not in str(err.value)


def test_the_tables_exist_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    assert WarehouseRequestBudget(Warehouse(url), "forge", "a", 1, 1.0).acquire() == 0.0
    assert migrate.current_revision(Warehouse(url).engine) == migrate.head_revision()
    assert {"request_budget", "request_budget_slot"} <= set(
        inspect(Warehouse(url).engine).get_table_names()
    )


def test_a_budget_needs_a_positive_limit_and_window(tmp_path: Path) -> None:
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.sqlite'}")
    with pytest.raises(ValueError, match="request budget forge:a: needs max_requests >= 1"):
        WarehouseRequestBudget(wh, "forge", "a", 0, 1.0)
    with pytest.raises(ValueError, match="per_seconds > 0"):
        WarehouseRequestBudget(wh, "forge", "a", 1, 0.0)


def test_the_database_clock_is_the_default_on_postgresql(db_url: str, db_backend: str) -> None:
    """Without an injected clock the sends are stamped with the database's time (PostgreSQL)
    or the process's (SQLite): within a second of this process's clock here."""
    budget = WarehouseRequestBudget(Warehouse(db_url), "forge", "acct-1", 5, 60.0)
    before = time.time()
    assert budget.acquire() == 0.0
    (stamp,) = _slots(db_url)
    assert before - 1.0 <= stamp <= time.time() + 1.0, db_backend


# -- the setting ----------------------------------------------------------------------------------
def test_the_file_is_the_default_and_warehouse_is_chosen_by_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    demo = load_settings(warehouse_url=url)
    assert demo.request_budget.backend == "auto" and demo.request_budget_backend == "file"
    assert request_budgets(demo, Warehouse(url)) is None  # the files under state_dir
    chosen = load_settings(warehouse_url=url, request_budget={"backend": "warehouse"})
    assert isinstance(request_budgets(chosen, Warehouse(url)), WarehouseBudgets)
    monkeypatch.setenv("USAGE_REQUEST_BUDGET__BACKEND", "warehouse")
    assert load_settings(warehouse_url=url).request_budget_backend == "warehouse"


def test_an_unknown_backend_is_refused_naming_the_key() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(request_budget={"backend": "redis"})
    assert "request_budget.backend" in str(err.value)
    assert "'file'" in str(err.value) and "'warehouse'" in str(err.value)
    assert "'redis'" in str(err.value)


def test_production_on_postgresql_defaults_to_the_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in README_SECRETS.items():
        monkeypatch.setenv(k, v)
    example = tmp_path / "usage_orchestration.yaml"
    example.write_text(readme_example())
    production = load_settings(example)
    assert production.profile == "production"
    assert production.warehouse_url.startswith("postgresql")
    assert production.request_budget_backend == "warehouse"
    # one host may keep the file on purpose
    assert load_settings(example, request_budget={"backend": "file"}).request_budget_backend == (
        "file"
    )


# -- the provider asset draws from the warehouse budget -------------------------------------------
def test_the_provider_asset_draws_from_the_warehouse_budget(
    sandbox: Sandbox, sandbox_server: SandboxServer, db_url: str, tmp_path: Path
) -> None:
    sandbox.state["forge"] = {"rate_limit": {"max_requests": 20, "per_seconds": 1}}
    state_dir = tmp_path / "state"
    settings = load_settings(
        warehouse_url=db_url,
        state_dir=str(state_dir),
        request_budget={"backend": "warehouse"},
        forge={
            "base_url": sandbox_server.url + "/forge/graphql",
            "rate_limit_max_requests": 20,
            "rate_limit_per_seconds": 1,
            "rate_limit_margin_s": 0.1,
        },
    )
    day = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()
    result = materialize(
        [provider_asset(FORGE, settings)],
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=db_url),
            "forge_api": ProviderApiResource(
                values={
                    "email": Sandbox.API_KEYS["forge_email"],
                    "api_token": Sandbox.API_KEYS["forge"],
                }
            ),
        },
        instance=DagsterInstance.ephemeral(),
        partition_key=day,
    )
    assert result.success
    sent = sandbox.request_count("forge")
    assert sent >= 1
    # every request took a slot of the account's window in the warehouse, none a file
    assert len(_slots(db_url, f"forge:{settings.forge.account_id}")) == sent
    assert not list(state_dir.glob("forge-*"))


# -- two hosts, one sandbox limit -----------------------------------------------------------------
def test_two_hosts_sharing_the_warehouse_budget_never_trip_the_limit(
    sandbox: Sandbox, sandbox_server: SandboxServer, db_url: str, tmp_path: Path
) -> None:
    hosts = [tmp_path / "host-a" / "state", tmp_path / "host-b" / "state"]  # nothing shared
    results, elapsed = run_two_hosts(sandbox, sandbox_server.url, db_url, hosts, "warehouse")
    requests = sum(r.requests for r in results)
    assert sandbox.request_count("forge", 429) == 0
    assert requests == LOAD.minimum_requests == sandbox.request_count("forge", 200)
    assert [r.rows for r in results] == [LOAD.apps_per_host * LOAD.days_per_app] * 2
    # the limit itself imposes this much time on 12 requests at 4 per 0.5 s
    assert elapsed >= (requests - 1) // LOAD.max_requests * LOAD.per_seconds
    assert sum(r.budget_wait_s for r in results) > 0  # a host waited for the other's sends
    assert not any(d.exists() and any(d.iterdir()) for d in hosts)  # no budget file anywhere


def test_two_hosts_with_file_budgets_trip_the_limit(
    sandbox: Sandbox, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """The negative control: the same load, each host with the file budget of its own state
    dir (the embedded default), exceeds the sandbox's limit."""
    hosts = [tmp_path / "host-a" / "state", tmp_path / "host-b" / "state"]
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    results, _ = run_two_hosts(sandbox, sandbox_server.url, url, hosts, "file")
    assert sandbox.request_count("forge", 429) > 0
    assert sum(r.requests for r in results) > LOAD.minimum_requests  # the refused were retried
    assert all(any(d.glob("forge-*")) for d in hosts)  # each host kept its own budget file
    with Warehouse(url).engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(request_budget_slot)).scalar() == 0
