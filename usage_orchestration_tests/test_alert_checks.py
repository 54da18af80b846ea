"""Caps in the catalog: ``provider_cap_status:within_cap`` is red (ERROR) when a provider
allowance is used up, yellow (WARN) when it is only forecast to be, green otherwise — the same
conditions the ``provider_cap`` alert pages or posts."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal as D

import pytest

from usage_orchestration.defs.budgets import build_provider_caps_asset
from usage_orchestration.providers.records import DayCoverage, FetchResult, UsageRow
from usage_orchestration.warehouse.provider_load import store_fetch
from usage_orchestration.warehouse.store import Warehouse
from usage_orchestration_tests.test_budgets_assets import MARCH, make_settings, run


@pytest.mark.parametrize(
    ("per_day", "passed", "severity"),
    [("40000", False, "ERROR"), ("10000", False, "WARN"), ("100", True, None)],
)
def test_within_cap_follows_the_allowance(
    db_url: str, ledger_url: str, per_day: str, passed: bool, severity: str | None
) -> None:
    # the Forge free allowance: 100,000 GB-seconds a month; three days of usage
    settings = make_settings(db_url, ledger_url, phala={"enabled": False}, neon={"enabled": False})
    app = settings.forge.apps[0].app_id if settings.forge.apps else "forge-app"
    days = [MARCH + timedelta(days=i) for i in range(3)]
    rows = [
        UsageRow(
            provider="forge",
            billing_account_id="dev",
            resource_id=app,
            metric="FUNCTION_COMPUTE",
            charge_period_start=datetime.combine(d, time(0), tzinfo=UTC),
            charge_period_end=datetime.combine(d + timedelta(days=1), time(0), tzinfo=UTC),
            usage_date=d,
            consumed_quantity=D(per_day),
            consumed_unit="GB-seconds",
            raw_quantity=D(per_day),
            raw_unit="GB-seconds",
            source_key=f"{app}:{d}",
        )
        for d in days
    ]
    cov = [
        DayCoverage(
            provider="forge",
            account_id=f"{app}|FUNCTION_COMPUTE",
            usage_date=d,
            status="complete",
            row_count=1,
        )
        for d in days
    ]
    store_fetch(
        Warehouse(db_url), "forge", days, FetchResult(rows=rows, coverage=cov), settings, "l"
    )
    result = run(settings, [build_provider_caps_asset(settings)], partition_key="2026-03-03")
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "within_cap" and check.passed is passed
    if severity:
        assert check.severity.value == severity
        assert date(2026, 3, 3).isoformat() in (check.description or "")
