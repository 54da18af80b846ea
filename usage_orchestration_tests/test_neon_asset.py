"""``neon_usage`` end to end: sandbox on loopback → Dagster range run → warehouse (SQLite and,
when configured, PostgreSQL); mapping, coverage of days outside the window, demo data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from dagster import BackfillPolicy, DagsterInstance, materialize
from sqlalchemy import select

from usage_orchestration.core.mapping import to_ledger_quantity
from usage_orchestration.defs.location import build_definitions
from usage_orchestration.defs.providers import ProviderApiResource, provider_asset
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.providers.neon import client_from_settings
from usage_orchestration.providers.registry import NEON
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.neon import demo_usage
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.settings.defaults import MAPPED_NEON_PROJECTS
from usage_orchestration.settings.neon import ANALYTICS_WAREHOUSE, DEMO_PROJECTS
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse

KEY = Sandbox.API_KEYS["neon"]


@pytest.fixture
def settings(sandbox_server: SandboxServer, db_url: str, tmp_path: Path) -> UsageSettings:
    return load_settings(
        warehouse_url=db_url,
        state_dir=str(tmp_path / "state"),
        neon={"base_url": f"{sandbox_server.url}/neon"},
    )


def run_range(settings: UsageSettings, first: date, last: date) -> dict:
    result = materialize(
        [provider_asset(NEON, settings)],
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
            "neon_api": ProviderApiResource(values={"api_key": KEY}),
        },
        instance=DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    assert result.success
    mats = result.asset_materializations_for_node("neon_usage")
    meta = {k: v.value for k, v in mats[-1].metadata.items()}
    # each partition's own figures, beside what is true of the whole run
    meta["per_day"] = {
        date.fromisoformat(m.partition): {k: v.value for k, v in m.metadata.items()} for m in mats
    }
    return meta


def test_a_range_run_fills_each_day_and_records_unavailable_days(
    settings: UsageSettings, sandbox: Sandbox
) -> None:
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=62), today - timedelta(days=55)
    meta = run_range(settings, first, last)
    assert meta["requests"] == 1  # one request (one chunk, one short page) for 8 days
    assert meta["days"] == 8 and meta["days_unavailable"] == 3

    wh = Warehouse(settings.warehouse_url)
    with wh.engine.connect() as conn:
        usage = (
            conn.execute(select(provider_usage).where(provider_usage.c.provider == "neon"))
            .mappings()
            .all()
        )
        cov = (
            conn.execute(select(provider_coverage).where(provider_coverage.c.provider == "neon"))
            .mappings()
            .all()
        )
    by_day = {c["usage_date"]: c for c in cov}
    assert sorted(by_day) == [first + timedelta(days=i) for i in range(8)]
    for d in (first, first + timedelta(days=1), first + timedelta(days=2)):
        assert (
            by_day[d]["status"] == "unavailable" and "provider_unavailable" in by_day[d]["reason"]
        )
        assert by_day[d]["row_count"] == 0
    complete = {d for d, c in by_day.items() if c["status"] == "complete"}
    assert {r["usage_date"] for r in usage} == complete  # never zero rows for unavailable days
    assert meta["rows_written"] == len(usage)
    for d in complete:
        assert by_day[d]["row_count"] == sum(1 for r in usage if r["usage_date"] == d)
    for d, figures in meta["per_day"].items():  # each day its own rows, unavailable accounts
        assert figures["rows"] == by_day[d]["row_count"]
        assert figures["accounts_unavailable"] == (by_day[d]["status"] == "unavailable")
        assert "billed_cost_usd" not in figures  # Neon answers no cost: absent, not 0

    # mapping: every metric of the demo projects → Analytics Warehouse, except the one project
    # the demo keeps deliberately unmapped (settings/defaults.py)
    for r in usage:
        if r["resource_id"] in MAPPED_NEON_PROJECTS and r["metric"] == "compute_unit_seconds":
            assert (r["entity_id"], r["entity_type"], r["resource_type"]) == (
                ANALYTICS_WAREHOUSE,
                "workspace",
                "job_compute",
            )
        elif r["resource_id"] in MAPPED_NEON_PROJECTS and r["metric"].endswith("_bytes_month"):
            assert r["resource_type"] == "workspace_storage"
        elif r["resource_id"] in MAPPED_NEON_PROJECTS and r["metric"] == "extra_branches_month":
            assert r["resource_type"] == "extra_branches"
        elif r["resource_id"] in MAPPED_NEON_PROJECTS:
            assert r["resource_type"] == "data_transfer"
        else:
            assert r["entity_id"] is None  # reported as unmapped, not dropped
    for d, figures in meta["per_day"].items():  # each day's unmapped rows, reported
        unmapped = sum(1 for r in usage if r["entity_id"] is None and r["usage_date"] == d)
        assert figures["unmapped_rows"] == unmapped
    assert sum(1 for r in usage if r["entity_id"] is None) > 0

    # re-running the range replaces it exactly
    run_range(settings, first, last)
    with wh.engine.connect() as conn:
        again = conn.execute(
            select(provider_usage.c.source_key).where(provider_usage.c.provider == "neon")
        ).all()
    assert len(again) == len(usage)


def test_storage_converts_to_average_bytes_and_compute_to_seconds(settings: UsageSettings) -> None:
    day = datetime.now(UTC).date() - timedelta(days=3)
    with client_from_settings(settings.neon, KEY, settings.state_dir) as c:
        rows = c.fetch_days([day]).rows
    card = settings.rate_card
    storage = next(r for r in rows if r.metric == "root_branch_bytes_month" and r.raw_quantity > 0)
    avg_bytes = to_ledger_quantity(
        card, "workspace_storage", storage.consumed_quantity, storage.consumed_unit
    )
    assert abs(avg_bytes - storage.raw_quantity / 24) < Decimal("0.001")
    compute = next(r for r in rows if r.metric == "compute_unit_seconds" and r.raw_quantity > 0)
    seconds = to_ledger_quantity(
        card, "job_compute", compute.consumed_quantity, compute.consumed_unit
    )
    assert abs(seconds - compute.raw_quantity) < Decimal("0.000001")


def test_demo_usage_matches_what_the_sandbox_serves(settings: UsageSettings) -> None:
    """The demo ledger is seeded from demo_usage: it must be the very rows neon_usage fetches."""
    day = datetime.now(UTC).date() - timedelta(days=2)
    with client_from_settings(settings.neon, KEY, settings.state_dir) as c:
        fetched = {
            (r.source_key, r.raw_quantity)
            for r in c.fetch_days([day]).rows
            if r.resource_id in DEMO_PROJECTS
        }
    demo = demo_usage(7, settings, day)
    assert {(r.source_key, r.raw_quantity) for r in demo} == fetched
    assert any(r.metric == "compute_unit_seconds" and r.raw_quantity > 0 for r in demo)


def test_definitions_use_the_neon_pool_and_single_run_backfills() -> None:
    defs = build_definitions(load_settings())
    asset = defs.resolve_assets_def("neon_usage")
    assert asset.backfill_policy == BackfillPolicy.single_run()
    assert asset.op.pool == "neon"
    assert "neon_api" in defs.resources
    off = build_definitions(load_settings(neon={"enabled": False}))
    assert not [
        k
        for k in off.resolve_asset_graph().get_all_asset_keys()
        if k.to_user_string() == "neon_usage"
    ]
