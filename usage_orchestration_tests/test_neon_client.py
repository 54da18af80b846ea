"""Neon consumption client against the in-process sandbox: requests, paging, errors, retries,
parsing and units."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from usage_orchestration.providers.http import ProviderError, ProviderResponseError, RetryPolicy
from usage_orchestration.providers.neon import NeonClient, to_billing_quantity
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import Fault
from usage_orchestration.sandbox.neon import daily_metrics, project_ids
from usage_orchestration.settings.neon import DEMO_PROJECTS

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
KEY = Sandbox.API_KEYS["neon"]
ORG = "org-sandbox-1"
ALL = [
    "compute_unit_seconds",
    "root_branch_bytes_month",
    "public_network_transfer_bytes",
    "extra_branches_month",
]


@pytest.fixture
def sb() -> Sandbox:
    return Sandbox(seed=7, now=NOW)


def make_client(sb: Sandbox, sleeps: list[float] | None = None, **kw: object) -> NeonClient:
    opts: dict[str, object] = {
        "metrics": ALL,
        "transport": sb.transport(),
        "now": sb.now,
        "retry": RetryPolicy(max_attempts=4, base_delay_s=0.5, jitter=False),
        "sleep": (sleeps.append if sleeps is not None else (lambda _s: None)),
    }
    opts.update(kw)
    return NeonClient("http://sandbox/neon", KEY, ORG, **opts)  # type: ignore[arg-type]


def params(entry: dict) -> dict[str, str]:
    return {k: ",".join(v) for k, v in entry["params"].items()}


def test_required_parameters_are_always_sent_with_bearer_auth(sb: Sandbox) -> None:
    seen: list[httpx.Request] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sb.handle(request)

    with make_client(sb, transport=httpx.MockTransport(spy)) as c:
        c.fetch_days([date(2026, 3, 1), date(2026, 3, 2)])
    assert len(seen) == 1
    req = seen[0]
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    q = req.url.params
    assert q["org_id"] == ORG
    assert q["metrics"].split(",") == ALL
    assert q["granularity"] == "daily"
    assert q["from"] == "2026-03-01T00:00:00Z"
    assert q["to"] == "2026-03-03T00:00:00Z"
    assert q["limit"] == "100"
    assert "project_ids" not in q


def test_whole_org_is_paged_by_cursor_until_an_empty_page(sb: Sandbox) -> None:
    # 200 projects, limit 100: two full pages, the second still carrying a cursor, then empty
    sb.state["neon"] = {"projects": 200}
    with make_client(sb) as c:
        projects = c.fetch_projects(
            "daily", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
        )
    calls = [params(e) for e in sb.received("neon")]
    assert len(calls) == 3
    assert "cursor" not in calls[0]
    assert calls[1]["cursor"] == projects[99].project_id
    assert calls[2]["cursor"] == projects[199].project_id
    assert len({p.project_id for p in projects}) == 200


def test_paging_stops_on_a_short_page(sb: Sandbox) -> None:
    sb.state["neon"] = {"projects": 150}
    with make_client(sb) as c:
        projects = c.fetch_projects(
            "daily", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
        )
    assert len(sb.received("neon")) == 2
    assert len(projects) == 150


def test_paging_stops_when_the_last_page_has_no_cursor(sb: Sandbox) -> None:
    sb.state["neon"] = {"projects": 200, "last_page_cursor": False}
    with make_client(sb) as c:
        c.fetch_projects(
            "daily", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
        )
    assert len(sb.received("neon")) == 2


def test_configured_projects_go_in_chunks_of_at_most_100(sb: Sandbox) -> None:
    sb.state["neon"] = {"projects": 260}
    ids = project_ids(7, 250)
    with make_client(sb, project_ids=ids) as c:
        projects = c.fetch_projects(
            "daily", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
        )
    calls = [params(e) for e in sb.received("neon")]
    chunks = [c["project_ids"].split(",") for c in calls]
    assert [len(x) for x in chunks] == [100, 100, 50]  # one request per chunk, no extra pages
    assert sum(chunks, []) == ids
    assert {p.project_id for p in projects} == set(ids)


def test_chunks_are_no_longer_than_page_limit_when_the_provider_ignores_limit(
    sb: Sandbox,
) -> None:
    """The document does not say ``limit`` applies when ``project_ids`` is given: a provider
    answering every asked project on one page must not exceed the page limit we check."""
    sb.state["neon"] = {"projects": 3}
    ids = project_ids(7, 3)
    sent: list[list[str]] = []

    def ignores_limit(request: httpx.Request) -> httpx.Response:
        asked = request.url.params.get("project_ids")
        if asked:
            sent.append(asked.split(","))
            request = httpx.Request(
                "GET", request.url.copy_set_param("limit", "100"), headers=request.headers
            )
        return sb.handle(request)

    days = [date(2026, 3, 1), date(2026, 3, 2)]
    with make_client(
        sb, transport=httpx.MockTransport(ignores_limit), project_ids=ids, page_limit=2
    ) as c:
        result = c.fetch_days(days)
    assert [len(x) for x in sent] == [2, 1] and sum(sent, []) == ids
    assert {r.resource_id for r in result.rows} == set(ids)
    assert sorted((cv.account_id, cv.usage_date, cv.status) for cv in result.coverage) == sorted(
        (p, d, "complete") for p in ids for d in days
    )


def test_a_repeated_cursor_is_an_error(sb: Sandbox) -> None:
    def loop(request: httpx.Request) -> httpx.Response:
        projects = [{"project_id": f"p-{i}", "periods": []} for i in range(2)]
        return httpx.Response(200, json={"projects": projects, "pagination": {"cursor": "p-1"}})

    with make_client(sb, transport=httpx.MockTransport(loop), page_limit=2) as c:
        with pytest.raises(ProviderResponseError, match="cursor 'p-1'") as err:
            c.fetch_days([date(2026, 3, 1)])
    assert "org org-sandbox-1" in str(err.value)


@pytest.mark.parametrize(
    ("state", "status", "hint"),
    [
        ({"eligible": False}, 403, "plan is not eligible"),
        ({"orgs": ["another-org"]}, 404, "does not belong to this organization"),
    ],
)
def test_403_and_404_are_clear_and_not_retried(
    sb: Sandbox, state: dict, status: int, hint: str
) -> None:
    sb.state["neon"] = state
    with make_client(sb) as c, pytest.raises(ProviderError) as err:
        c.fetch_days([date(2026, 3, 1)])
    msg = str(err.value)
    assert err.value.status == status and hint in msg
    assert "org org-sandbox-1" in msg and "2026-03-01T00:00:00Z..2026-03-02T00:00:00Z" in msg
    assert "granularity daily" in msg
    assert KEY not in msg
    assert len(sb.received("neon")) == 1


def test_406_outside_the_window_is_clear_and_not_retried(sb: Sandbox) -> None:
    # The client's clock says the day is inside the window; Neon's (sandbox) clock disagrees.
    with (
        make_client(sb, now=lambda: NOW - timedelta(days=30)) as c,
        pytest.raises(ProviderError) as err,
    ):
        c.fetch_days([date(2026, 1, 5)])
    msg = str(err.value)
    assert err.value.status == 406 and "granularity daily" in msg and "lookback" in msg
    assert len(sb.received("neon")) == 1


@pytest.mark.parametrize("status", [429, 503, 423])
def test_retryable_statuses_back_off_and_retry(sb: Sandbox, status: int) -> None:
    sb.add_fault("neon", Fault(status=status, count=2))
    sleeps: list[float] = []
    with make_client(sb, sleeps) as c:
        result = c.fetch_days([date(2026, 3, 1)])
    assert result.rows and result.requests == 3 and result.retries == 2
    assert sleeps == [0.5, 1.0]  # exponential backoff: no Retry-After was sent


def test_retry_after_is_honoured_when_present(sb: Sandbox) -> None:
    sb.add_fault("neon", Fault(status=429, count=1, headers={"Retry-After": "7"}))
    sleeps: list[float] = []
    with make_client(sb, sleeps) as c:
        c.fetch_days([date(2026, 3, 1)])
    assert sleeps == [7.0]


def test_connection_errors_are_retried_then_reported(sb: Sandbox) -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return sb.handle(request)

    with make_client(sb, transport=httpx.MockTransport(flaky)) as c:
        assert c.fetch_days([date(2026, 3, 1)]).rows

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sleeps: list[float] = []
    with (
        make_client(sb, sleeps, transport=httpx.MockTransport(down)) as c,
        pytest.raises(ProviderError) as err,
    ):
        c.fetch_days([date(2026, 3, 1)])
    assert (
        "gave up after 4 attempts" in str(err.value) and len(sleeps) == 3
    )  # no sleep after the last


def test_several_billing_periods_are_flattened_and_add_up(sb: Sandbox) -> None:
    """A billing period boundary splits its day across two periods: both rows are kept, keyed
    on the period, and together they equal the day's consumption."""
    pid = DEMO_PROJECTS[0]
    days = [date(2026, 2, 1) + timedelta(days=i) for i in range(35)]
    with make_client(sb, metrics=["compute_unit_seconds"], project_ids=[pid]) as c:
        rows = c.fetch_days(days).rows
    periods = {json.loads(r.details or "{}")["period_id"] for r in rows}
    assert len(periods) >= 2
    by_day: dict[date, list] = {}
    for r in rows:
        by_day.setdefault(r.usage_date, []).append(r)
    split = [d for d, rs in by_day.items() if len(rs) == 2]
    assert split, "a boundary day appears in two periods"
    for d in days:
        total = sum(r.raw_quantity for r in by_day[d])
        assert total == daily_metrics(7, pid, d).get("compute_unit_seconds", 0)
    assert len({r.source_key for r in rows}) == len(rows)


def test_sparse_metrics_are_zero_not_missing(sb: Sandbox) -> None:
    with make_client(sb, project_ids=list(DEMO_PROJECTS)) as c:
        rows = c.fetch_days([date(2026, 3, d) for d in range(1, 11)]).rows
    zeros = [r for r in rows if r.raw_quantity == 0]
    assert zeros, "the sandbox omits metrics without usage"
    # every requested metric has a row for every (project, period, day) that has consumption
    frames = {(r.resource_id, r.source_key.split("|")[1], r.usage_date) for r in rows}
    assert len(rows) == len(frames) * len(ALL)
    assert all(z.consumed_quantity == 0 for z in zeros)


def test_units_are_converted_and_raw_values_kept(sb: Sandbox) -> None:
    with make_client(sb, project_ids=[DEMO_PROJECTS[1]]) as c:
        rows = c.fetch_days([date(2026, 3, 3)]).rows
    by_metric = {r.metric: r for r in rows}
    cu = by_metric["compute_unit_seconds"]
    assert (cu.raw_unit, cu.consumed_unit) == ("CU-second", "CU-hour")
    assert cu.consumed_quantity == cu.raw_quantity / 3600
    st = by_metric["root_branch_bytes_month"]
    assert (st.raw_unit, st.consumed_unit) == ("byte-hour", "GB-month")
    assert st.consumed_quantity == st.raw_quantity / Decimal(744) / Decimal(10**9)
    tx = by_metric["public_network_transfer_bytes"]
    assert (tx.raw_unit, tx.consumed_unit) == ("byte", "GB")
    assert tx.consumed_quantity == tx.raw_quantity / Decimal(10**9)
    br = by_metric["extra_branches_month"]
    assert (br.raw_unit, br.consumed_unit) == ("branch-hour", "branch-month")
    assert to_billing_quantity("compute_unit_seconds", 7200) == Decimal(2)
    assert all(isinstance(r.consumed_quantity, Decimal) for r in rows)
    assert cu.charge_period_start == datetime(2026, 3, 3, tzinfo=UTC)
    assert cu.charge_period_end == datetime(2026, 3, 4, tzinfo=UTC)
    assert cu.billing_account_id == ORG and cu.resource_id == DEMO_PROJECTS[1]


def test_a_non_integer_value_is_a_clear_error(sb: Sandbox) -> None:
    body = {
        "projects": [
            {
                "project_id": "p-1",
                "periods": [
                    {
                        "period_id": "x",
                        "period_start": "2026-02-02T18:04:52Z",
                        "consumption": [
                            {
                                "timeframe_start": "2026-03-01T00:00:00Z",
                                "timeframe_end": "2026-03-02T00:00:00Z",
                                "metrics": [{"metric_name": "compute_unit_seconds", "value": 1.5}],
                            }
                        ],
                    }
                ],
            }
        ],
        "pagination": {},
    }
    sb.add_fault("neon", Fault(malformed=json.dumps(body)))
    with make_client(sb) as c, pytest.raises(ProviderResponseError) as err:
        c.fetch_days([date(2026, 3, 1)])
    msg = str(err.value)
    assert (
        "value" in msg
        and "integer" in msg
        and "org org-sandbox-1" in msg
        and "granularity daily" in msg
    )


@pytest.mark.parametrize("bad", ["p-one,p-two", "P-One", "p one"])
def test_the_client_refuses_project_ids_that_would_change_the_filter(sb: Sandbox, bad: str) -> None:
    with pytest.raises(ValueError, match=r"project_ids\[1\]"):
        make_client(sb, project_ids=["p-zero", bad])
