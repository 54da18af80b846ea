"""Write, audit, publish (warehouse/provider_load.py): every audit fails with a clear error naming
provider, account, day and field and leaves the tables as they were; identical duplicates are
dropped; a day whose usage vanished or fell sharply is refused unless the run accepts it; and two
writers of the same days at once serialize (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from sqlalchemy import func, select

from usage_orchestration.providers.http import ProviderError
from usage_orchestration.providers.records import (
    DayCoverage,
    FetchChunk,
    FetchResult,
    FetchStats,
    FetchStream,
    UsageRow,
)
from usage_orchestration.settings import UsageSettings, load_settings
from usage_orchestration.warehouse.audit import AuditError
from usage_orchestration.warehouse.provider_load import DropAuditError, store_fetch
from usage_orchestration.warehouse.schema import (
    provider_coverage,
    provider_usage,
    provider_usage_staging,
)
from usage_orchestration.warehouse.store import Warehouse

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
APP = "a" * 40


def row(day: date = D1, qty: str = "10", key: str = "k1", **kw: Any) -> UsageRow:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    values: dict[str, Any] = {
        "provider": "phala",
        "billing_account_id": "team-1",
        "resource_id": APP,
        "metric": "compute",
        "charge_period_start": start,
        "charge_period_end": start + timedelta(hours=1),
        "usage_date": day,
        "consumed_quantity": D(qty),
        "consumed_unit": "minute",
        "raw_quantity": D(qty),
        "raw_unit": "minute",
        "billed_cost": D("0.5"),
        "billing_currency": "USD",
        "source_key": key,
    }
    values.update(kw)
    return UsageRow(**values)


def fetch(rows: list[UsageRow], days: list[date]) -> FetchResult:
    cov = [
        DayCoverage(provider="phala", account_id=APP, usage_date=d, status="complete") for d in days
    ]
    return FetchResult(rows=rows, coverage=cov)


@pytest.fixture
def settings(db_url: str) -> UsageSettings:
    return load_settings(warehouse_url=db_url)


@pytest.fixture
def wh(db_url: str) -> Warehouse:
    w = Warehouse(db_url)
    w.ensure_schema()
    return w


def snapshot(wh: Warehouse) -> tuple[list[tuple], list[tuple], int]:
    with wh.engine.connect() as conn:
        usage = sorted(
            tuple(r)
            for r in conn.execute(
                select(
                    provider_usage.c.usage_date,
                    provider_usage.c.source_key,
                    provider_usage.c.consumed_quantity,
                    provider_usage.c.load_id,
                )
            )
        )
        cov = sorted(
            tuple(r)
            for r in conn.execute(
                select(provider_coverage.c.usage_date, provider_coverage.c.load_id)
            )
        )
        staged = conn.execute(select(func.count()).select_from(provider_usage_staging)).scalar()
    return usage, cov, int(staged or 0)


def test_a_good_load_is_published_with_its_audit_counts(wh: Warehouse, settings) -> None:
    rows = [row(D1, "10", "k1"), row(D1, "10", "k1"), row(D2, "5", "k2")]  # k1 twice, identical
    report = store_fetch(wh, "phala", [D1, D2], fetch(rows, [D1, D2]), settings, "load-1")
    assert (report.rows_written, report.rows_audited, report.duplicates_dropped) == (2, 3, 1)
    usage, cov, staged = snapshot(wh)
    assert [(u[0], u[1], D(str(u[2]))) for u in usage] == [(D1, "k1", D(10)), (D2, "k2", D(5))]
    assert len(cov) == 2 and staged == 0  # the staging rows are gone after publishing


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (row(qty="-1"), "raw_quantity"),
        (row(billed_cost=D("-0.01")), "billed_cost"),
        (row(qty="1.0000000000001"), "raw_quantity"),  # 13 decimals: would be rounded
        (row(qty="1" + "0" * 26), "raw_quantity"),  # 27 integer digits: beyond NUMERIC(38, 12)
        (row(day=D2), "usage_date"),  # outside the requested days (only D1)
        (
            row(charge_period_start=datetime(2026, 2, 28, 23, tzinfo=UTC)),
            "charge_period_start",
        ),  # its day is not the day its period starts
        (
            row(charge_period_end=datetime(2026, 3, 1, tzinfo=UTC)),
            "charge_period_end",
        ),  # empty period
    ],
)
def test_each_row_audit_names_provider_account_day_and_field_and_writes_nothing(
    wh: Warehouse, settings: UsageSettings, bad: UsageRow, field: str
) -> None:
    store_fetch(wh, "phala", [D1], fetch([row(D1, "10", "k0")], [D1]), settings, "load-0")
    before = snapshot(wh)
    with pytest.raises(AuditError) as exc:
        store_fetch(wh, "phala", [D1], fetch([row(D1, "10", "k0"), bad], [D1]), settings, "l1")
    msg = str(exc.value)
    assert "phala" in msg and APP in msg and f"field {field}" in msg
    assert bad.usage_date.isoformat() in msg
    assert snapshot(wh) == before


def test_conflicting_duplicates_fail_and_leave_the_tables(wh: Warehouse, settings) -> None:
    store_fetch(wh, "phala", [D1], fetch([row(D1, "10", "k1")], [D1]), settings, "load-0")
    before = snapshot(wh)
    rows = [row(D1, "10", "k1"), row(D1, "11", "k1")]
    with pytest.raises(AuditError, match=r"phala account a+ day 2026-03-01 field source_key"):
        store_fetch(wh, "phala", [D1], fetch(rows, [D1]), settings, "load-1")
    assert snapshot(wh) == before


def test_a_day_whose_usage_vanishes_or_halves_is_refused_unless_accepted(
    wh: Warehouse, settings: UsageSettings
) -> None:
    first = [row(D1, "100", "k1"), row(D2, "100", "k2")]
    store_fetch(wh, "phala", [D1, D2], fetch(first, [D1, D2]), settings, "load-0")
    before = snapshot(wh)
    # D1 falls to 40 (a 60 % drop, beyond the default 50 %); D2 has no rows any more
    again = [row(D1, "40", "k1")]
    with pytest.raises(DropAuditError) as exc:
        store_fetch(wh, "phala", [D1, D2], fetch(again, [D1, D2]), settings, "load-1")
    assert {(d.usage_date, d.after) for d in exc.value.drops} == {(D1, D(40)), (D2, None)}
    assert "usage/allow_drop=true" in str(exc.value)
    assert snapshot(wh) == before
    # within the share: accepted without a flag
    report = store_fetch(
        wh, "phala", [D1, D2], fetch([row(D1, "60", "k1"), row(D2, "100", "k2")], [D1, D2]),
        settings, "load-2",
    )  # fmt: skip
    assert report.drops == [] and not report.drop_overridden
    # the operator accepts a real correction
    report = store_fetch(
        wh, "phala", [D1, D2], fetch(again, [D1, D2]), settings, "load-3", allow_drop=True
    )
    assert report.drop_overridden and [d.usage_date for d in report.drops] == [D2]  # D1: 60 → 40
    assert [u[1] for u in snapshot(wh)[0]] == ["k1"]


def test_two_writers_of_the_same_days_serialize(db_url: str, settings: UsageSettings) -> None:
    """Both loads succeed one after the other: the days hold exactly one load's rows, never a mix
    and never a primary-key failure."""
    days = [D1 + timedelta(days=i) for i in range(5)]
    loads = {
        name: fetch([row(d, qty, f"k{i}") for i, d in enumerate(days)], days)
        for name, qty in (("a", "10"), ("b", "12"))
    }
    Warehouse(db_url).ensure_schema()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            wh = Warehouse(db_url)  # its own engine and connections, like another run
            barrier.wait(10)
            store_fetch(wh, "phala", days, loads[name], settings, f"load-{name}")
        except BaseException as exc:
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=write, args=(n,)) for n in loads]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        usage, cov, staged = snapshot(Warehouse(db_url))
        assert len(usage) == len(days) and staged == 0
        assert len({u[3] for u in usage}) == 1  # one load's rows, not a mix
        assert len(cov) == len(days) and len({c[1] for c in cov}) == 1


def test_the_asset_fails_a_drop_with_the_override_named_and_accepts_it_when_tagged(
    db_url: str, settings: UsageSettings
) -> None:
    """Through Dagster: the audit is the blocking check ``no_unexplained_drop``; a refused drop
    fails the run (the failure names the run tag), writes nothing, and the tagged re-run passes."""
    import dataclasses

    from dagster import DagsterInstance, materialize

    from usage_orchestration.defs.providers import (
        AUDIT_CHECK,
        ProviderApiResource,
        provider_asset,
    )
    from usage_orchestration.defs.resources import WarehouseResource
    from usage_orchestration.providers.registry import PHALA

    answers = {"qty": "100"}

    def fake_fetch(_settings: Any, _credentials: Any, days: list[date], **_kw: Any) -> FetchResult:
        return fetch([row(d, answers["qty"], f"k-{d}") for d in days], list(days))

    asset = provider_asset(
        dataclasses.replace(PHALA, fetch=fake_fetch, stream_fetch=None), settings
    )
    resources = {
        "settings": settings,
        "warehouse": WarehouseResource(url=db_url),
        "phala_api": ProviderApiResource(values={"api_key": "unused"}),
    }

    def run(**tags: str) -> Any:
        return materialize(
            [asset],
            resources=resources,
            instance=DagsterInstance.ephemeral(),
            partition_key="2026-03-01",
            tags=tags,
            raise_on_error=False,
        )

    first = run()
    assert first.success
    (check,) = first.get_asset_check_evaluations()
    assert check.check_name == AUDIT_CHECK and check.passed
    before = snapshot(Warehouse(db_url))

    answers["qty"] = "10"
    refused = run()
    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "usage/allow_drop=true" in (failure.description or "")
    assert snapshot(Warehouse(db_url)) == before

    accepted = run(**{"usage/allow_drop": "true"})
    assert accepted.success
    (check,) = accepted.get_asset_check_evaluations()
    assert check.passed and "accepted" in (check.description or "")
    assert [D(str(u[2])) for u in snapshot(Warehouse(db_url))[0]] == [D(10)]


def _unavailable(day: date, reason: str = "outside the provider's window") -> DayCoverage:
    return DayCoverage(
        provider="phala", account_id=APP, usage_date=day, status="unavailable", reason=reason
    )


def test_days_nobody_answers_for_now_keep_the_previous_complete_load(
    wh: Warehouse, settings
) -> None:
    # D1 was answered before and is now past the provider's window: kept as it was, neither
    # emptied nor refused as a vanished day; D2 is answered now and replaced
    store_fetch(
        wh, "phala", [D1, D2], fetch([row(D1), row(D2, key="k2")], [D1, D2]), settings, "l1"
    )
    later = fetch([row(D2, "12", key="k2")], [D2])
    later = later.model_copy(update={"coverage": [_unavailable(D1), *later.coverage]})
    report = store_fetch(wh, "phala", [D1, D2], later, settings, "l2")
    assert report.days_kept == [D1] and report.drops == []
    usage, cov, staged = snapshot(wh)
    assert usage == [(D1, "k1", D("10"), "l1"), (D2, "k2", D("12"), "l2")]
    assert cov == [(D1, "l1"), (D2, "l2")] and staged == 0


def test_an_unanswered_day_without_a_previous_load_is_recorded_unavailable(
    wh: Warehouse, settings
) -> None:
    result = FetchResult(rows=[], coverage=[_unavailable(D1)])
    report = store_fetch(wh, "phala", [D1], result, settings, "l1")
    assert report.days_kept == []
    with wh.engine.connect() as conn:
        cov = conn.execute(select(provider_coverage.c.status, provider_coverage.c.reason)).all()
    assert [tuple(c) for c in cov] == [("unavailable", "outside the provider's window")]
    assert snapshot(wh)[0] == []


def test_rows_a_dead_load_left_staged_are_cleared_but_a_live_loads_are_kept(
    wh: Warehouse, settings
) -> None:
    from usage_orchestration.warehouse.store import insert_rows

    staged = [_staged_record(settings, sid) for sid in ("dead-run", "live-run")]
    with wh.engine.begin() as conn:
        insert_rows(conn, provider_usage_staging, staged)
    report = store_fetch(
        wh, "phala", [D1], fetch([row(D1)], [D1]), settings, "l1", live_loads={"live-run"}
    )
    assert report.abandoned_rows_cleared == 1
    with wh.engine.connect() as conn:
        left = conn.execute(select(provider_usage_staging.c.stage_id)).scalars().all()
    assert left == ["live-run"]
    assert snapshot(wh)[0] == [(D1, "k1", D("10"), "l1")]


def _staged_record(settings: UsageSettings, stage_id: str) -> dict[str, Any]:
    from usage_orchestration.warehouse.provider_load import usage_record

    rec = usage_record(row(D2, key=f"k-{stage_id}"), settings, stage_id, datetime.now(UTC))
    return {**rec, "stage_id": stage_id}


def _stream(
    wh: Warehouse, chunks: list[FetchChunk], seen: list[int], fail_after: int | None = None
) -> FetchStream:
    """A fetch arriving chunk by chunk; ``seen`` records how many rows were staged when each
    next chunk was asked for; ``fail_after``: a provider failure after that many chunks."""

    def gen() -> Any:
        for i, chunk in enumerate(chunks):
            if fail_after is not None and i == fail_after:
                raise ProviderError("phala", "connection reset", retryable=True)
            yield chunk
            with wh.engine.connect() as conn:
                staged = select(func.count()).select_from(provider_usage_staging)
                seen.append(int(conn.execute(staged).scalar() or 0))

    return FetchStream(gen(), FetchStats(requests=len(chunks)))


def test_a_streamed_range_is_staged_chunk_by_chunk_and_published_at_the_end(
    wh: Warehouse, settings: UsageSettings
) -> None:
    cov = fetch([], [D1, D2]).coverage
    chunks = [
        FetchChunk([row(D1, "10", "k1")]),
        FetchChunk([row(D1, "10", "k1"), row(D2, "5", "k2")]),  # k1 again, identical
        FetchChunk([], cov),
    ]
    seen: list[int] = []
    report = store_fetch(wh, "phala", [D1, D2], _stream(wh, chunks, seen), settings, "load-s")
    # each chunk was in staging before the next page was asked for: memory holds one chunk
    assert seen == [1, 3, 3]
    assert (report.rows_written, report.rows_audited, report.duplicates_dropped) == (2, 3, 1)
    usage, published_cov, staged = snapshot(wh)
    assert [(u[0], u[1]) for u in usage] == [(D1, "k1"), (D2, "k2")]
    assert len(published_cov) == 2 and staged == 0
    assert [c.usage_date for c in report.coverage] == [D1, D2]


def test_a_provider_failure_mid_stream_publishes_nothing_and_clears_its_stage(
    wh: Warehouse, settings: UsageSettings
) -> None:
    store_fetch(wh, "phala", [D1, D2], fetch([row(D1, "7", "old")], [D1, D2]), settings, "load-0")
    before = snapshot(wh)
    chunks = [FetchChunk([row(D1, "10", "k1")]), FetchChunk([row(D2, "5", "k2")])]
    with pytest.raises(ProviderError, match="connection reset"):
        store_fetch(
            wh, "phala", [D1, D2], _stream(wh, chunks, [], fail_after=1), settings, "load-f"
        )
    assert snapshot(wh) == before  # the old load stands; the failed load's staged rows are gone
