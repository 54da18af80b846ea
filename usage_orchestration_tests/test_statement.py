"""The monthly statement: closing after the late-data window, the burn-down series, the HTML page
(escaped, figures equal to budget_status) and the asset over a seeded warehouse and over the
demo data set, on SQLite and (USAGE_TEST_POSTGRES_URL) PostgreSQL."""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, materialize
from sqlalchemy import select

from usage_orchestration.core.budgets import BudgetRow
from usage_orchestration.core.dates import days_in_month
from usage_orchestration.core.money import format_credits
from usage_orchestration.core.statement import (
    BreakLine,
    ProviderLine,
    build_statement,
    burn_down,
    closes_at,
    is_closed,
)
from usage_orchestration.core.statement_html import render_statement
from usage_orchestration.defs.budgets import compute_budgets
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.defs.statement import (
    _months_to_refresh,
    build_statement_asset,
    statements_dir,
)
from usage_orchestration.settings import load_settings
from usage_orchestration.warehouse.analysis import write_rows
from usage_orchestration.warehouse.analysis_schema import (
    budget_status,
    monthly_statement,
    monthly_statement_break,
    provider_cap_status,
    usage_reconciliation,
)
from usage_orchestration.warehouse.store import Warehouse

MARCH = date(2026, 3, 1)


def day(
    d: date,
    eid: str,
    used: str,
    budget: str | None = "300",
    forecast: str | None = None,
    name: str | None = "Team A",
) -> BudgetRow:
    b = D(budget) if budget is not None else None
    u = D(used)
    return BudgetRow(
        as_of_date=d,
        month=d.strftime("%Y-%m"),
        entity_id=eid,
        entity_type="app",
        entity_name=name,
        credits_used=u,
        monthly_budget=b,
        budget_percent=(u / b * 100).quantize(D("0.01")) if b else None,
        budget_remaining=b - u if b is not None else None,
        over_budget=b is not None and u > b,
        forecast_month_end=D(forecast) if forecast else None,
        forecast_percent=None,
        forecast_overrun=None,
        days_of_data=d.day,
        highest_threshold_crossed=None,
        thresholds_crossed="",
        days_elapsed=d.day,
        days_in_month=days_in_month(d),
    )


# --- closing ---------------------------------------------------------------------------------


def test_a_month_closes_exactly_when_its_late_window_ends() -> None:
    # March ends at April 1 00:00 UTC; a 3-day window closes it at April 4 00:00 UTC
    assert closes_at(MARCH, 3) == datetime(2026, 4, 4, tzinfo=UTC)
    just_before = datetime(2026, 4, 3, 23, 59, 59, tzinfo=UTC)
    assert not is_closed(MARCH, just_before, 3)
    assert is_closed(MARCH, datetime(2026, 4, 4, tzinfo=UTC), 3)
    # another zone, same instant: April 4 02:00 in UTC+2 is the closing instant
    plus2 = datetime(2026, 4, 4, 2, tzinfo=UTC).astimezone().tzinfo
    assert is_closed(MARCH, datetime(2026, 4, 4, 0, tzinfo=UTC).astimezone(plus2), 3)
    # no window: closed at month end; December rolls into the next year
    assert is_closed(MARCH, datetime(2026, 4, 1, tzinfo=UTC), 0)
    assert closes_at(date(2026, 12, 1), 3) == datetime(2027, 1, 4, tzinfo=UTC)


def test_the_schedule_requests_the_month_partitions() -> None:
    from dagster import Definitions, build_schedule_context

    from usage_orchestration.defs.statement import definitions

    settings = load_settings()
    defs = Definitions.merge(
        definitions(settings),
        Definitions(
            resources={"settings": settings, "warehouse": WarehouseResource(url="sqlite://")}
        ),
    )
    sched = defs.resolve_schedule_def("monthly_statement_schedule")
    ctx = build_schedule_context(
        scheduled_execution_time=datetime(2026, 4, 2, 14, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    requests = list(sched.evaluate_tick(ctx).run_requests or [])
    # April 2: April so far (provisional) and March, still inside its window
    assert [r.partition_key for r in requests] == ["2026-03-01", "2026-04-01"]
    assert requests[0].run_key == "statement-2026-03-01-2026-04-02"


def test_the_schedule_refreshes_yesterdays_month_and_the_month_closing() -> None:
    # April 2..4: March is still being closed (window of 3); April 5: only April
    assert _months_to_refresh(date(2026, 4, 1), 3) == [MARCH]
    assert _months_to_refresh(date(2026, 4, 4), 3) == [MARCH, date(2026, 4, 1)]
    assert _months_to_refresh(date(2026, 4, 5), 3) == [date(2026, 4, 1)]


# --- the model -------------------------------------------------------------------------------


def test_burn_down_forecast_runs_from_the_last_day_to_month_end() -> None:
    # 10 a day for 10 days of March (31 days): forecast 310 at month end
    days = [day(MARCH + timedelta(days=i), "a", str(10 * (i + 1))) for i in range(10)]
    last = days[-1]
    days[-1] = replace(last, forecast_month_end=D(310))
    b = burn_down(MARCH, list(reversed(days)))  # any order
    assert b.days_in_month == 31 and b.budget == D(300)
    assert b.actual[0] == (MARCH, D(10)) and b.actual[-1] == (date(2026, 3, 10), D(100))
    assert len(b.forecast) == 22  # March 10 .. 31
    assert b.forecast[0] == (date(2026, 3, 10), D(100))
    assert b.forecast[1] == (date(2026, 3, 11), D(110))  # the run rate: 10 a day
    assert b.forecast[-1] == (date(2026, 3, 31), D(310))


def test_no_forecast_line_before_the_forecast_exists() -> None:
    b = burn_down(MARCH, [day(MARCH, "a", "5")])
    assert b.forecast == [] and b.actual == [(MARCH, D(5))]


def _statement(now: datetime, name: str = "Team A") -> Any:
    budget_days = [
        day(date(2026, 3, 1), "a", "10", name=name),
        day(date(2026, 3, 2), "a", "20", forecast="310", name=name),
        day(date(2026, 3, 2), "b", "400", budget="350", name="Team B"),
    ]
    lines = [
        ProviderLine("a", "phala", "app_compute", "second", D(2000), D(20), D(18), D(-2), 2),
        ProviderLine("a", "neon", "db_compute", "cu-hour", D(5), D(5), D(5), D(0), 2),
        ProviderLine("", "neon", "storage_bytes", "byte", D(9), None, None, None, 1),
    ]
    breaks = [
        BreakLine("a", "phala", "app_compute", "ledger_under", 1, D(-2)),
        BreakLine("", "neon", "storage_bytes", "unmapped", 1, None),
        BreakLine("a", "neon", "db_compute", "matched", 2, D(0)),  # never a break
    ]
    return build_statement(MARCH, budget_days, lines, breaks, [], now=now, late_days=3)


def test_statement_takes_the_last_days_budget_figures_and_sums_providers() -> None:
    s = _statement(datetime(2026, 4, 10, tzinfo=UTC))
    assert s.closed and s.as_of == date(2026, 3, 2) and s.days_materialized == 2
    assert [e.entity_id for e in s.entities] == ["a", "b", ""]  # unmapped usage last
    a = s.entities[0]
    assert a.budget is not None and a.budget.credits_used == D(20)
    assert (a.expected_credits, a.credits_charged, a.delta_credits) == (D(25), D(23), D(-2))
    assert s.entities[2].expected_credits is None  # unknown stays unknown, not 0
    assert s.breaks_by_status() == {"ledger_under": (1, D(-2)), "unmapped": (1, None)}
    rows = s.records("run")
    entity_a = next(r for r in rows if r["entity_id"] == "a" and r["provider"] == "all")
    assert entity_a["breaks"] == "ledger_under 1 (-2.00)" and entity_a["break_rows"] == 1
    assert entity_a["forecast_month_end"] == D(310) and entity_a["closed"] is True
    phala = next(r for r in rows if r["provider"] == "phala")
    assert phala["monthly_budget"] is None and phala["usage_quantity"] == D(2000)
    assert len(s.break_records("run")) == 2


def test_a_month_inside_its_window_is_provisional() -> None:
    s = _statement(datetime(2026, 4, 3, 12, tzinfo=UTC))
    assert not s.closed and s.state == "provisional"
    assert all(r["closed"] is False for r in s.records("run"))
    assert "Provisional" in render_statement(s)


# --- the page --------------------------------------------------------------------------------


class _Figures(HTMLParser):
    """Per entity row of table#entities: {data-field: text}; and the SVGs' entities."""

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.entity: str | None = None
        self.field: str | None = None
        self.rows: dict[str, dict[str, str]] = {}
        self.plots: dict[str, set[str]] = {}
        self._svg: str | None = None
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self.table = a.get("id")
        elif tag == "tr" and self.table == "entities" and "data-entity" in a:
            self.entity = a["data-entity"] or ""
            self.rows[self.entity] = {}
        elif tag == "td" and self.entity is not None and a.get("data-field"):
            self.field = a["data-field"]
            self.rows[self.entity][self.field] = ""
        elif tag == "svg":
            self._svg = a.get("data-entity") or ""
            self.plots[self._svg] = set()
        elif self._svg is not None and tag in ("polyline", "line") and a.get("class"):
            self.plots[self._svg].add(a["class"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.field = None
        elif tag == "tr":
            self.entity = None
        elif tag == "table":
            self.table = None
        elif tag == "svg":
            self._svg = None

    def handle_data(self, data: str) -> None:
        if self.entity is not None and self.field is not None:
            self.rows[self.entity][self.field] += data


def parse(html: str) -> _Figures:
    p = _Figures()
    p.feed(html)
    return p


def test_a_hostile_entity_name_is_escaped() -> None:
    hostile = '<script>alert("x")</script>&'
    html = render_statement(_statement(datetime(2026, 4, 10, tzinfo=UTC), name=hostile))
    assert "<script>" not in html and "&lt;script&gt;" in html
    page = parse(html)
    assert page.scripts == 0
    assert page.rows["a"]["entity_name"] == hostile  # shown as text, intact


def test_the_page_shows_figures_at_two_decimals_and_a_plot_per_entity() -> None:
    page = parse(render_statement(_statement(datetime(2026, 4, 10, tzinfo=UTC))))
    a = page.rows["a"]
    assert (a["monthly_budget"], a["credits_used"], a["budget_percent"]) == (
        "300.00",
        "20.00",
        "6.67 %",
    )
    assert a["forecast_month_end"] == "310.00" and a["delta_credits"] == "-2.00"
    assert page.rows["b"]["budget_percent"] == "114.29 %"
    assert page.rows[""]["expected_credits"] == "-"  # unmapped: not priced
    assert page.plots["a"] == {"budget", "actual", "forecast"}
    assert page.plots["b"] == {"budget", "actual"}  # no forecast yet
    assert "" not in page.plots  # unmapped usage has no budget to burn down


# --- the asset over a seeded warehouse -------------------------------------------------------


def _rec(d: date, eid: str, rt: str, status: str, exp: str, got: str) -> dict[str, Any]:
    return {
        "usage_date": d,
        "entity_id": eid,
        "entity_type": "app",
        "resource_type": rt,
        "provider": "phala",
        "ledger_unit": "second",
        "expected_quantity": D(exp) * 100,
        "expected_credits": D(exp),
        "recorded_quantity": D(got) * 100,
        "recorded_credits": D(got),
        "delta_quantity": (D(got) - D(exp)) * 100,
        "delta_credits": D(got) - D(exp),
        "delta_pct": None,
        "status": status,
        "within_tolerance": status == "matched",
        "reason": None,
        "load_id": "seed",
        "provider_rows": 1,
        "ledger_events": 1,
        "compared_on": "quantity",
        "blocking": False,
    }


def _materialize(settings: Any, key: str) -> Any:
    result = materialize(
        [build_statement_asset(settings)],
        partition_key=key,
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
        },
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    return result


def test_the_asset_writes_table_csv_and_html_and_replaces_the_month(
    db_url: str, tmp_path: Path
) -> None:
    settings = load_settings(warehouse_url=db_url, state_dir=str(tmp_path / "state"))
    wh = Warehouse(db_url)
    days = [MARCH, date(2026, 3, 2)]
    budgets = [
        {**day(MARCH, "a", "10.005").__dict__},
        {**day(date(2026, 3, 2), "a", "20.125", forecast="311.9375").__dict__},
    ]
    for b in budgets:
        b.update(month="2026-03", highest_threshold_crossed=None, thresholds_crossed="")
        b.update(days_elapsed=b["as_of_date"].day, days_in_month=31, load_id="seed")
    recs = [
        _rec(MARCH, "a", "app_compute", "matched", "10.005", "10.005"),
        _rec(date(2026, 3, 2), "a", "app_compute", "ledger_under", "12.5", "10.12"),
        _rec(date(2026, 4, 1), "a", "app_compute", "ledger_under", "99", "1"),  # April: not here
    ]
    cap = {
        "as_of_date": date(2026, 3, 2),
        "month": "2026-03",
        "provider": "forge",
        "metric": "FUNCTION_COMPUTE",
        "unit": "GB-seconds",
        "cap_quantity": D(100000),
        "used_quantity": D("104000.5"),
        "percent_used": D("104.00"),
        "remaining_quantity": D("-4000.5"),
        "over_cap": True,
        "days_of_data": 2,
        "forecast_month_end": None,
        "forecast_overage": None,
        "projected_exhaustion_date": None,
        "reason": None,
        "load_id": "seed",
    }
    write_rows(
        wh,
        {
            provider_cap_status: ([date(2026, 3, 2)], [cap], "as_of_date"),
            budget_status: (days, budgets, "as_of_date"),
            usage_reconciliation: ([*days, date(2026, 4, 1)], recs, "usage_date"),
        },
    )
    result = _materialize(settings, "2026-03-01")
    meta = result.asset_materializations_for_node("monthly_statement")[0].metadata
    assert meta["closed"].value is True  # March 2026 is long past its window
    html_path = Path(meta["html"].value)
    assert meta["html_url"].value == html_path.as_uri()
    assert (
        html_path.parent == statements_dir(settings) and html_path.name == "statement_2026-03.html"
    )
    shown = meta["statement"].value.records
    assert [r.data["entity_id"] for r in shown] == ["a"]
    assert shown[0].data["credits_used"] == 20.13  # the UI's table: 2 decimals

    with wh.engine.connect() as conn:
        rows = {
            r.provider: r
            for r in conn.execute(
                select(monthly_statement).where(monthly_statement.c.month == "2026-03")
            )
        }
        breaks = conn.execute(select(monthly_statement_break)).all()
    entity = rows["all"]
    assert entity.credits_used == D("20.125") and entity.forecast_month_end == D("311.9375")
    assert entity.expected_credits == D("22.505") and entity.credits_charged == D("20.125")
    assert entity.delta_credits == D("-2.38") and entity.break_rows == 1
    assert rows["phala"].usage_quantity == D("2250.5") and rows["phala"].monthly_budget is None
    assert [(b.status, b.row_count, b.delta_credits) for b in breaks] == [
        ("ledger_under", 1, D("-2.38"))
    ]

    text = html_path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.rows["a"]["credits_used"] == "20.13"  # 20.125 half up, as finance rounds
    assert 'data-field="percent_used">104.00 %' in text  # the Forge cap, over
    assert "104,000.5 GB-seconds" in text
    assert html_path.stat().st_mode & 0o777 == 0o644
    with Path(meta["csv"].value).open(newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    assert [(r["provider"], r["credits_used"]) for r in lines] == [
        ("all", "20.125000000000"),
        ("phala", ""),
    ]

    # re-materializing after a correction replaces the month, it does not add to it
    with wh.engine.begin() as conn:
        conn.execute(
            usage_reconciliation.delete().where(usage_reconciliation.c.status != "matched")
        )
    _materialize(settings, "2026-03-01")
    with wh.engine.connect() as conn:
        assert conn.execute(select(monthly_statement_break)).all() == []
        assert len(conn.execute(select(monthly_statement)).all()) == 2


def test_the_month_in_progress_materializes_as_provisional(db_url: str, tmp_path: Path) -> None:
    settings = load_settings(warehouse_url=db_url, state_dir=str(tmp_path / "state"))
    today = datetime.now(UTC).date()
    result = _materialize(settings, today.replace(day=1).isoformat())  # nothing there yet
    meta = result.asset_materializations_for_node("monthly_statement")[0].metadata
    assert meta["closed"].value is False
    assert "provisional until" in meta["state"].value
    assert meta["entities"].value == 0
    assert "No budget day" in Path(meta["html"].value).read_text(encoding="utf-8")


# --- the must-show: the statement over the demo data set -------------------------------------


def _demo_warehouse(db_url: str, ledger_url: str, days: list[date]) -> Any:
    """The demo data set through the daily pipeline's own functions (as test_reconcile_demo):
    provider usage, the ledger's daily aggregate, reconciliation and budget_status per day."""
    from usage_orchestration.ledger.sql import SqlLedger
    from usage_orchestration.providers.records import DayCoverage, FetchResult
    from usage_orchestration.providers.registry import expected_accounts, reconcile_config
    from usage_orchestration.sandbox.demo_ledger import DEMO_USAGE, seed_demo_ledger
    from usage_orchestration.warehouse.analysis import reconcile_days, write_reconciliation
    from usage_orchestration.warehouse.provider_load import store_fetch
    from usage_orchestration.warehouse.schema import ledger_daily_usage

    settings = load_settings(warehouse_url=db_url, ledger={"database_url": ledger_url})
    seed_demo_ledger(ledger_url, settings, days, 7)
    wh = Warehouse(db_url)
    wh.ensure_schema()
    for provider, accounts in expected_accounts(settings).items():
        rows = [r for d in days for r in DEMO_USAGE[provider](7, settings, d)]
        coverage = [
            DayCoverage(provider=provider, account_id=a.account_id, usage_date=d, status="complete")
            for d in days
            for a in accounts
        ]
        store_fetch(wh, provider, days, FetchResult(rows=rows, coverage=coverage), settings, "demo")
    reader = SqlLedger(ledger_url)
    daily = [
        {**u.model_dump(), "unit": u.unit or "", "load_id": "demo"}
        for d in days
        for u in reader.daily_usage(d)
    ]
    wh.replace_days(ledger_daily_usage, days, daily)
    by_day = reconcile_days(wh, days, reconcile_config(settings))
    write_reconciliation(wh, days, [r for rows in by_day.values() for r in rows], "demo")
    budgets, _pools = compute_budgets(reader, days, settings)
    write_rows(wh, {budget_status: (days, [b.record("demo") for b in budgets], "as_of_date")})
    return wh


def test_the_demo_statement_shows_each_entitys_budget_status_figures(
    db_url: str, ledger_url: str, tmp_path: Path
) -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(12)]  # Nov 1..12
    wh = _demo_warehouse(db_url, ledger_url, days)
    settings = load_settings(warehouse_url=db_url, state_dir=str(tmp_path / "state"))
    result = _materialize(settings, "2026-11-01")
    meta = result.asset_materializations_for_node("monthly_statement")[0].metadata
    page = parse(Path(meta["html"].value).read_text(encoding="utf-8"))

    with wh.engine.connect() as conn:
        last = days[-1]
        expected = conn.execute(
            select(budget_status).where(budget_status.c.as_of_date == last)
        ).all()
    assert len(expected) >= 2
    for b in expected:
        shown = page.rows[b.entity_id]
        assert shown["entity_name"] == (b.entity_name or "-")
        assert shown["monthly_budget"] == format_credits(b.monthly_budget)
        assert shown["credits_used"] == format_credits(b.credits_used)
        assert shown["budget_percent"] == (
            "-" if b.budget_percent is None else f"{b.budget_percent:,.2f} %"
        )
        assert shown["forecast_month_end"] == format_credits(b.forecast_month_end)
        assert b.forecast_month_end is not None  # 12 days of data: every entity is forecast
        assert page.plots[b.entity_id] >= {"actual", "forecast"}
    assert any(b.over_budget for b in expected)  # the demo's overrun is in the statement
    assert set(page.rows) - {""} == {b.entity_id for b in expected}


def test_a_range_of_months_as_one_run_writes_each_month(tmp_path: Path) -> None:
    settings = load_settings(
        warehouse_url=f"sqlite:///{tmp_path / 'wh.sqlite'}", state_dir=str(tmp_path / "state")
    )
    result = materialize(
        [build_statement_asset(settings)],
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
        },
        instance=DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": "2026-02-01",
            "dagster/asset_partition_range_end": "2026-03-01",
        },
    )
    assert result.success
    meta = result.asset_materializations_for_node("monthly_statement")[0].metadata
    for key in ("html_2026_02", "html_2026_03"):
        assert Path(meta[key].value).is_file(), key
