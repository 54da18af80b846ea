"""``ledger_daily_usage`` through Dagster: every day of a range, idempotent replacement of a day,
history as of that day, sync status as metadata and check, both backends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions, materialize
from sqlalchemy import delete, insert, select

from usage_orchestration.defs.ledger import LedgerResource, build_ledger_asset, definitions
from usage_orchestration.defs.location import build_definitions
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.ledger.schema import usage_event
from usage_orchestration.ledger.sql import SqlLedger
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.demo_ledger import SALES_DASHBOARD, seed_demo_ledger
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.schema import ledger_daily_usage as table
from usage_orchestration.warehouse.store import Warehouse, make_engine

DAYS = [date(2026, 5, 1) + timedelta(days=i) for i in range(6)]
RANGE = {
    "dagster/asset_partition_range_start": "2026-05-01",
    "dagster/asset_partition_range_end": "2026-05-06",
}


@pytest.fixture
def seeded(ledger_url: str, tmp_path: Path) -> str:
    seed_demo_ledger(ledger_url, load_settings(state_dir=str(tmp_path / "state")), DAYS, seed=7)
    return ledger_url


def _run(ledger: LedgerResource, db_url: str, **kw: Any) -> Any:
    result = materialize(
        [build_ledger_asset(load_settings(warehouse_url=db_url))],
        resources={"ledger": ledger, "warehouse": WarehouseResource(url=db_url)},
        instance=DagsterInstance.ephemeral(),
        **kw,
    )
    assert result.success
    return result


def _rows(db_url: str) -> list[tuple[Any, ...]]:
    cols = [c for c in table.c if c.name != "load_id"]
    with Warehouse(db_url).engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(*cols)))


def test_range_run_writes_every_day_and_rerun_is_idempotent(seeded: str, db_url: str) -> None:
    ledger = LedgerResource(database_url=seeded)
    result = _run(ledger, db_url, tags=RANGE)
    mats = result.asset_materializations_for_node("ledger_daily_usage")
    assert sorted(m.partition for m in mats) == [d.isoformat() for d in DAYS]
    reader = SqlLedger(seeded)
    expected = sorted(
        (
            u.usage_date,
            u.entity_id,
            u.entity_type,
            u.resource_type,
            u.unit,
            u.quantity,
            u.credits,
            u.events,
        )
        for d in DAYS
        for u in reader.daily_usage(d)
    )
    got = _rows(db_url)
    assert {r[0] for r in got} == set(DAYS)
    assert [
        (
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            Decimal(r[5]).quantize(Decimal("0.000001")),
            Decimal(r[6]).quantize(Decimal("0.000001")),
            r[7],
        )
        for r in got
    ] == expected
    # each partition carries its own day's figures, not the range's totals
    for m in mats:
        day = [e for e in expected if e[0].isoformat() == m.partition]
        meta = m.metadata
        assert meta["rows"].value == len(day)
        assert meta["events"].value == sum(e[7] for e in day)
        assert meta["credits_total"].value == float(
            sum((e[6] for e in day), Decimal(0)).quantize(Decimal("0.01"))
        )
        assert meta["ledger_coverage"].value == "complete"
        assert meta["sync_ok"].value is True
        assert "app_compute" in [r.data["resource_type"] for r in meta["by_resource_type"].records]
    assert len({m.metadata["events"].value for m in mats}) > 1  # a real series, not flat
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("ledger_license_sync", True)]

    _run(ledger, db_url, tags=RANGE)
    assert _rows(db_url) == got  # same rows, nothing doubled


def test_a_day_without_any_ledger_event_is_coverage_unavailable(seeded: str, db_url: str) -> None:
    # the ledger lost May 3 entirely (a sync or ledger problem): no row, coverage unavailable
    engine = make_engine(seeded)
    with engine.begin() as conn:
        conn.execute(
            delete(usage_event).where(
                usage_event.c.occurred_at >= datetime(2026, 5, 3, tzinfo=UTC),
                usage_event.c.occurred_at < datetime(2026, 5, 4, tzinfo=UTC),
            )
        )
    engine.dispose()
    result = _run(LedgerResource(database_url=seeded), db_url, tags=RANGE)
    coverage = {
        m.partition: (m.metadata["ledger_coverage"].value, m.metadata["rows"].value)
        for m in result.asset_materializations_for_node("ledger_daily_usage")
    }
    assert coverage.pop("2026-05-03") == ("unavailable", 0)
    assert {c for c, _rows in coverage.values()} == {"complete"}
    assert all(n > 0 for _c, n in coverage.values())
    assert date(2026, 5, 3) not in {r[0] for r in _rows(db_url)}


def test_one_day_rematerialized_sees_only_that_day(seeded: str, db_url: str) -> None:
    ledger = LedgerResource(database_url=seeded)
    _run(ledger, db_url, tags=RANGE)
    before = _rows(db_url)
    # a late event appended to the ledger for May 3, and one for a later day
    engine = make_engine(seeded)
    with engine.begin() as conn:
        for when in (datetime(2026, 5, 3, 23, 59, tzinfo=UTC), datetime(2026, 5, 9, 1, tzinfo=UTC)):
            conn.execute(
                insert(usage_event),
                [
                    {
                        "occurred_at": when,
                        "actor": "jdoe",
                        "actor_type": "user",
                        "entity_id": SALES_DASHBOARD,
                        "entity_type": "app",
                        "resource_type": "app_compute",
                        "quantity": Decimal(100),
                        "unit": "second",
                        "credits": Decimal(1),
                        "metadata": None,
                    }
                ],
            )
    engine.dispose()
    _run(ledger, db_url, partition_key="2026-05-03")
    after = _rows(db_url)
    changed = [r for r in after if r not in before]
    assert [r[0] for r in changed] == [date(2026, 5, 3)]
    assert (
        changed[0][1] == SALES_DASHBOARD
        and changed[0][7] == [r for r in before if r[:5] == changed[0][:5]][0][7] + 1
    )
    assert [r for r in after if r[0] != date(2026, 5, 3)] == [
        r for r in before if r[0] != date(2026, 5, 3)
    ]


def test_failed_sync_warns_without_failing_the_run(
    ledger_url: str, db_url: str, tmp_path: Path
) -> None:
    seed_demo_ledger(
        ledger_url,
        load_settings(state_dir=str(tmp_path / "s")),
        DAYS,
        seed=7,
        sync_failure="lm_error",
    )
    result = _run(LedgerResource(database_url=ledger_url), db_url, partition_key="2026-05-02")
    meta = result.asset_materializations_for_node("ledger_daily_usage")[0].metadata
    assert meta["sync_ok"].value is False
    assert meta["sync_failure_code"].value == "lm_error"
    assert "lm_error" in meta["sync_problem"].value
    (check,) = result.get_asset_check_evaluations()
    assert check.passed is False and check.severity.value == "WARN"


def test_http_backend_writes_credits_without_quantities(tmp_path: Path, db_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    seed_demo_ledger(url, load_settings(state_dir=str(tmp_path / "s")), DAYS, seed=7)
    server = SandboxServer(Sandbox(seed=7, ledger_url=url)).start()
    try:
        ledger = LedgerResource(
            backend="http",
            api_base_url=server.url + "/ledger",
            api_token=Sandbox.API_KEYS["ledger"],
        )
        result = _run(ledger, db_url, partition_key="2026-05-04")
    finally:
        server.stop()
    rows = _rows(db_url)
    sql = SqlLedger(url).daily_usage(date(2026, 5, 4))
    assert [
        (r[1], r[3], r[4], r[5], Decimal(r[6]).quantize(Decimal("0.000001")), r[7]) for r in rows
    ] == [(u.entity_id, u.resource_type, "", None, u.credits, u.events) for u in sql]
    meta = result.asset_materializations_for_node("ledger_daily_usage")[0].metadata
    assert meta["backend"].value == "http"
    assert Sandbox.API_KEYS["ledger"] not in str({k: v.value for k, v in meta.items()})


def test_definitions_load_without_the_token_for_sql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_API_TOKEN", raising=False)
    settings = load_settings(state_dir=str(tmp_path / "s"))
    defs = build_definitions(settings)
    Definitions.validate_loadable(defs)
    assert defs.resolve_assets_def("ledger_daily_usage") is not None
    assert definitions(settings).resources["ledger"].api_token is None
    http = definitions(load_settings(state_dir=str(tmp_path / "s"), ledger={"backend": "http"}))
    assert http.resources["ledger"].api_token is not None  # an EnvVar, resolved at run time


class _TwoTypesOneId:
    """A ledger answering one entity id under two entity types on one day."""

    def daily_usage(self, day: date) -> list[Any]:
        from usage_orchestration.ledger.base import LedgerDailyUsage

        return [
            LedgerDailyUsage(
                usage_date=day, entity_id="e1", entity_type=kind, resource_type="app_compute",
                unit=None, quantity=None, credits=Decimal(credits), events=2,
            )
            for kind, credits in (("app", "5"), ("workspace", "7"))
        ]  # fmt: skip


def test_one_entity_id_twice_on_a_day_is_a_clear_error_and_writes_nothing(db_url: str) -> None:
    from usage_orchestration.warehouse.ledger_load import LedgerAnswerError, store_ledger_days

    wh = Warehouse(db_url)
    wh.ensure_schema()
    day = date(2026, 5, 3)
    with pytest.raises(LedgerAnswerError, match="2026-05-03: entity e1 resource type app_compute"):
        store_ledger_days(_TwoTypesOneId(), wh, [day], "load-1")  # type: ignore[arg-type]
    assert _rows(db_url) == []
