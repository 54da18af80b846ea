"""``forge_usage`` through Dagster: a range is one run and one request series, every day is
written with its mapping, re-runs are idempotent, and the month is tracked against the free
allowance."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from dagster import AssetKey, DagsterInstance, materialize
from sqlalchemy import func, select

from usage_orchestration.defs.location import build_definitions
from usage_orchestration.defs.providers import ProviderApiResource, provider_asset
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.providers.registry import FORGE
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.settings.forge import DEMO_APP_ID, JIRA_INSIGHTS
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse

# recent days: the API (and the sandbox) only cover the last 60 days
LAST = datetime.now(UTC).date() - timedelta(days=2)
DAYS = [LAST - timedelta(days=i) for i in range(4, -1, -1)]
RANGE = {
    "dagster/asset_partition_range_start": DAYS[0].isoformat(),
    "dagster/asset_partition_range_end": LAST.isoformat(),
}
SITE = "ari:cloud:confluence::site/42"


def _settings(server: SandboxServer, db_url: str, tmp_path: Any) -> UsageSettings:
    # a scaled rate limit (the documented 5/min would make re-runs wait a minute)
    server.sandbox.state["forge"] = {"rate_limit": {"max_requests": 20, "per_seconds": 1}}
    return load_settings(
        warehouse_url=db_url,
        state_dir=str(tmp_path / "state"),
        forge={
            "base_url": server.url + "/forge/graphql",
            "rate_limit_max_requests": 20,
            "rate_limit_per_seconds": 1,
            "rate_limit_margin_s": 0.1,
            "apps": [
                {"app_id": DEMO_APP_ID, "name": "Jira Insights", "group_by": "ENVIRONMENT_ID"},
                {
                    "app_id": "app-unmapped",
                    "resources": ["FUNCTION_COMPUTE", "KVS_READ"],
                    "context_aris": [SITE],
                },
            ],
        },
    )


def _resources(settings: UsageSettings) -> dict[str, Any]:
    return {
        "settings": settings,
        "warehouse": WarehouseResource(url=settings.warehouse_url),
        "forge_api": ProviderApiResource(
            values={
                "email": Sandbox.API_KEYS["forge_email"],
                "api_token": Sandbox.API_KEYS["forge"],
            }
        ),
    }


def _rows(url: str) -> list[tuple]:
    cols = [c for c in provider_usage.c if c.name not in ("load_id", "fetched_at")]
    with Warehouse(url).engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(*cols)))


def test_range_run_writes_every_day_in_one_request_series(
    sandbox: Sandbox, sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    result = materialize(
        [provider_asset(FORGE, settings)],
        resources=_resources(settings),
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
    )
    assert result.success
    mats = result.asset_materializations_for_node("forge_usage")
    assert sorted(m.partition for m in mats) == [d.isoformat() for d in DAYS]
    meta = mats[0].metadata
    # three series (demo app compute; unmapped app compute + KVS), one request each for 5 days
    assert meta["requests"].value == 3 and len(sandbox.received("forge")) == 3
    # 5 days x (3 environments + 1 site + 1 site); each partition shows its own day's rows
    assert meta["rows_written"].value == 25
    assert {m.partition: m.metadata["rows"].value for m in mats} == {d.isoformat(): 5 for d in DAYS}
    with Warehouse(db_url).engine.connect() as conn:
        per_day = dict(
            conn.execute(
                select(provider_usage.c.usage_date, func.count()).group_by(
                    provider_usage.c.usage_date
                )
            ).all()
        )
        mapped = conn.execute(
            select(provider_usage.c.entity_id, provider_usage.c.resource_type, func.count())
            .where(provider_usage.c.provider == "forge")
            .group_by(provider_usage.c.entity_id, provider_usage.c.resource_type)
        ).all()
        coverage = conn.execute(
            select(provider_coverage.c.account_id, provider_coverage.c.status)
        ).all()
        month_total = conn.execute(
            select(func.sum(provider_usage.c.consumed_quantity)).where(
                provider_usage.c.metric == "FUNCTION_COMPUTE",
                provider_usage.c.usage_date >= LAST.replace(day=1),
            )
        ).scalar_one()
    assert sorted(per_day) == DAYS and set(per_day.values()) == {5}
    assert sorted(mapped, key=str) == sorted(
        [(JIRA_INSIGHTS, "app_compute", 15), (None, None, 10)], key=str
    )
    assert len(coverage) == 3 * len(DAYS) and {s for _, s in coverage} == {"complete"}
    # month to date against the free allowance, from the warehouse: on the run's last day
    meta = {m.partition: m.metadata for m in mats}[LAST.isoformat()]
    assert "free_allowance" not in mats[0].metadata or mats[0].partition == LAST.isoformat()
    assert abs(meta["month_to_date_function_compute_gb_seconds"].value - float(month_total)) < 1e-6
    pct = (Decimal(str(month_total)) * 100 / 100_000).quantize(Decimal("0.01"))
    assert meta["free_allowance_used_pct_function_compute_gb_seconds"].value == float(pct)
    assert [r.data["allowance"] for r in meta["free_allowance"].records] == [100000.0]
    assert not any(Sandbox.API_KEYS["forge"] in str(e) for e in result.all_events)


def test_rematerializing_a_day_leaves_identical_rows(
    sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    res = _resources(settings)
    assert materialize(
        [provider_asset(FORGE, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
    ).success
    before = _rows(db_url)
    again = materialize(
        [provider_asset(FORGE, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        partition_key=DAYS[2].isoformat(),
    )
    assert again.success and _rows(db_url) == before


def test_a_failed_fetch_writes_nothing(
    sandbox: Sandbox, sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    res = _resources(settings)
    assert materialize(
        [provider_asset(FORGE, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
    ).success
    before = _rows(db_url)
    # the second app's series fails (in-band 404, not retried) after the first app's succeeded
    sandbox.state["forge"]["apps"] = [DEMO_APP_ID]
    failed = materialize(
        [provider_asset(FORGE, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
        raise_on_error=False,
    )
    assert not failed.success
    assert _rows(db_url) == before
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.step_failure_data.error)
    assert "app-unmapped" in message and "NOT_FOUND" in message and "interval" in message
    # the token never reaches the event log
    assert not any(Sandbox.API_KEYS["forge"] in str(e) for e in failed.all_events)


def test_definitions_wire_the_pool_backfill_policy_and_env_credentials(monkeypatch: Any) -> None:
    monkeypatch.setenv("FORGE_EMAIL", "someone@example.com")
    monkeypatch.setenv("FORGE_API_TOKEN", "tok")
    defs = build_definitions(load_settings())
    asset = defs.resolve_assets_def(AssetKey("forge_usage"))
    assert (
        asset.backfill_policy is not None and asset.backfill_policy.max_partitions_per_run is None
    )
    assert provider_asset(FORGE, load_settings()).op.pool == "forge"
    assert "forge_api" in defs.resources
    off = build_definitions(load_settings(forge={"enabled": False}))
    assert AssetKey("forge_usage") not in {
        k for a in off.assets or [] for k in getattr(a, "keys", [])
    }


def test_days_before_the_lookback_are_unavailable(
    sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    old = date.today() - timedelta(days=90)
    result = materialize(
        [provider_asset(FORGE, settings)],
        resources=_resources(settings),
        instance=DagsterInstance.ephemeral(),
        partition_key=old.isoformat(),
    )
    assert result.success
    assert result.asset_materializations_for_node("forge_usage")[0].metadata["requests"].value == 0
    with Warehouse(db_url).engine.connect() as conn:
        statuses = conn.execute(
            select(provider_coverage.c.status, provider_coverage.c.reason)
        ).all()
    assert {s for s, _ in statuses} == {"unavailable"} and all(
        "60-day" in (r or "") for _, r in statuses
    )
    assert _rows(db_url) == []
