"""``phala_usage`` through Dagster: ranges as one run, every day written, idempotent replace."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from dagster import DagsterInstance, materialize
from sqlalchemy import func, select

from usage_orchestration.defs.providers import ProviderApiResource, provider_asset
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.providers.registry import PHALA
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import Fault
from usage_orchestration.sandbox.phala import phala_records
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.schema import provider_coverage, provider_usage
from usage_orchestration.warehouse.store import Warehouse

RANGE = {
    "dagster/asset_partition_range_start": "2026-11-01",
    "dagster/asset_partition_range_end": "2026-11-05",
}


def _settings(server: SandboxServer, db_url: str, tmp_path: Any) -> UsageSettings:
    return load_settings(
        warehouse_url=db_url,
        state_dir=str(tmp_path / "state"),
        phala={"base_url": server.url + "/phala", "page_size": 200},
    )


def _resources(settings: UsageSettings) -> dict[str, Any]:
    return {
        "settings": settings,
        "warehouse": WarehouseResource(url=settings.warehouse_url),
        "phala_api": ProviderApiResource(values={"api_key": Sandbox.API_KEYS["phala"]}),
    }


def _rows(url: str) -> list[tuple]:
    t = provider_usage
    cols = [c for c in t.c if c.name not in ("load_id", "fetched_at")]
    with Warehouse(url).engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(*cols)))


def test_range_run_writes_every_day(
    sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    result = materialize(
        [provider_asset(PHALA, settings)],
        resources=_resources(settings),
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
    )
    assert result.success
    mats = result.asset_materializations_for_node("phala_usage")
    assert sorted(m.partition for m in mats) == [f"2026-11-0{i}" for i in range(1, 6)]
    days = [date(2026, 11, i) for i in range(1, 6)]
    expected = sum(len(phala_records(7, app, d)) for app in settings.phala.app_ids for d in days)
    assert mats[0].metadata["rows_written"].value == expected
    assert {m.partition: m.metadata["rows"].value for m in mats} == {
        d.isoformat(): sum(len(phala_records(7, app, d)) for app in settings.phala.app_ids)
        for d in days
    }
    with Warehouse(db_url).engine.connect() as conn:
        per_day = dict(
            conn.execute(
                select(provider_usage.c.usage_date, func.count()).group_by(
                    provider_usage.c.usage_date
                )
            ).all()
        )
        coverage = conn.execute(
            select(provider_coverage.c.usage_date, provider_coverage.c.status)
        ).all()
    assert sorted(per_day) == days  # the last day of the range too, not only the window's start
    assert sum(per_day.values()) == expected
    assert len(coverage) == len(days) * len(settings.phala.app_ids)
    assert {s for _, s in coverage} == {"complete"}


def test_rematerializing_a_day_leaves_identical_rows(
    sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    res = _resources(settings)
    assert materialize(
        [provider_asset(PHALA, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
    ).success
    before = _rows(db_url)
    again = materialize(
        [provider_asset(PHALA, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        partition_key="2026-11-03",
    )
    assert again.success
    assert _rows(db_url) == before


def test_failed_fetch_leaves_the_table_as_it_was(
    sandbox: Sandbox, sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    res = _resources(settings)
    assert materialize(
        [provider_asset(PHALA, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
    ).success
    before = _rows(db_url)
    # the second app's first page comes back malformed: nothing of the range may be replaced
    sandbox.add_fault("phala", Fault(status=200, count=1, malformed='{"usage": "nope"}'))
    failed = materialize(
        [provider_asset(PHALA, settings)],
        resources=res,
        instance=DagsterInstance.ephemeral(),
        tags=RANGE,
        raise_on_error=False,
    )
    assert not failed.success
    assert _rows(db_url) == before


def test_mapping_is_applied_and_unmapped_usage_kept(
    sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    assert materialize(
        [provider_asset(PHALA, settings)],
        resources=_resources(settings),
        instance=DagsterInstance.ephemeral(),
        partition_key="2026-11-02",
    ).success
    with Warehouse(db_url).engine.connect() as conn:
        rows = conn.execute(
            select(
                provider_usage.c.metric,
                provider_usage.c.entity_id,
                provider_usage.c.resource_type,
                provider_usage.c.list_cost,
            )
        ).all()
    compute = [r for r in rows if r.metric == "compute"]
    storage = [r for r in rows if r.metric == "storage"]
    assert compute and all(
        r.entity_id and r.resource_type == "app_compute" and r.list_cost > 0 for r in compute
    )
    # the demo maps its apps' storage too (settings/defaults.py)
    assert storage and all(
        r.entity_id and r.resource_type == "app_storage" and r.list_cost > 0 for r in storage
    )


@pytest.mark.parametrize("bad_key", ["", "not-the-key"])
def test_wrong_credentials_fail_without_leaking_them(
    sandbox_server: SandboxServer, db_url: str, tmp_path: Any, bad_key: str
) -> None:
    settings = _settings(sandbox_server, db_url, tmp_path)
    res = {**_resources(settings), "phala_api": ProviderApiResource(values={"api_key": bad_key})}
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [provider_asset(PHALA, settings)],
        resources=res,
        instance=instance,
        partition_key="2026-11-02",
        raise_on_error=False,
    )
    assert not result.success
    logs = instance.all_logs(result.run_id)
    text = "\n".join(
        str(e.dagster_event.event_specific_data) if e.dagster_event else e.user_message
        for e in logs
    )
    assert "phala" in text
    if bad_key:
        assert bad_key not in text


def test_a_long_retry_after_retries_the_step_the_dagster_way(
    sandbox: Sandbox, sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    """429 with a Retry-After beyond the client's cap: the step is retried after that wait (a
    Dagster step retry, not a failed run, so nothing pages) and the run succeeds."""
    settings = load_settings(
        warehouse_url=db_url,
        state_dir=str(tmp_path / "state"),
        phala={"base_url": sandbox_server.url + "/phala", "retry_after_cap_s": 0.5},
    )
    sandbox.add_fault("phala", Fault(status=429, count=1, headers={"Retry-After": "1"}))
    result = materialize(
        [provider_asset(PHALA, settings)],
        resources=_resources(settings),
        instance=DagsterInstance.ephemeral(),
        partition_key="2026-11-02",
    )
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1
    assert sandbox.request_count("phala", 429) == 1 and _rows(db_url)


def test_transient_failures_fail_the_run_once_step_retries_are_spent(
    sandbox: Sandbox, sandbox_server: SandboxServer, db_url: str, tmp_path: Any
) -> None:
    settings = load_settings(
        warehouse_url=db_url,
        state_dir=str(tmp_path / "state"),
        phala={"base_url": sandbox_server.url + "/phala", "max_attempts": 2},
        step_retries={"max_retries": 1, "wait_s": 0},
    )
    sandbox.add_fault("phala", Fault(status=503, count=100))
    Warehouse(db_url).ensure_schema()
    result = materialize(
        [provider_asset(PHALA, settings)],
        resources=_resources(settings),
        instance=DagsterInstance.ephemeral(),
        partition_key="2026-11-02",
        raise_on_error=False,
    )
    assert not result.success
    assert sandbox.request_count("phala", 503) == 4  # 2 attempts in each of 2 step runs
    assert _rows(db_url) == []
