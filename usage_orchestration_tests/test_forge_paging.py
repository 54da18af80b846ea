"""The Forge client under every reading of the contract, against the sandbox serving each one:
``pageSize`` counting periods or grouped rows (a day's groups split over two pages), servers that
ignore aliases, omit ``__typename`` or answer the bare appResourceUsage object; and coverage that
says ``complete`` only for days the answer had a period entry for."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from usage_orchestration.providers.forge import FLAT, ForgeClient, effective_group_by
from usage_orchestration.providers.http import ProviderError, RetryPolicy
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import json_response
from usage_orchestration.sandbox.forge import usage_items
from usage_orchestration.settings.forge import ForgeApp

NOW = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
TODAY = NOW.date()
SITES = ["ari:cloud:jira::site/aaaa", "ari:cloud:jira::site/bbbb"]


def days(first: date, n: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(n)]


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.set_now(NOW)
    sandbox.state["forge"] = {"rate_limit": None}
    return sandbox


def client(
    sb: Sandbox,
    pages: list[int] | None = None,
    route: Callable[[httpx.Request], httpx.Response] | None = None,
    **kw: object,
) -> ForgeClient:
    """A client of the sandbox (or of ``route``), recording the page of every request."""

    def handle(req: httpx.Request) -> httpx.Response:
        if pages is not None:
            pages.append(json.loads(req.content)["variables"]["filters"]["page"])
        return (route or sb.handle)(req)

    return ForgeClient(
        "http://sandbox.test/forge/graphql",
        sb.API_KEYS["forge_email"],
        sb.API_KEYS["forge"],
        experimental_api="v",
        account_id="acct",
        transport=httpx.MockTransport(handle),
        today=lambda: TODAY,
        retry=RetryPolicy(max_attempts=1),
        **kw,  # type: ignore[arg-type]
    )


def expected_rows(sb: Sandbox, app: ForgeApp, window: list[date]) -> list[tuple]:
    """What the sandbox's own data functions say the window holds, as (day, group, quantity)."""
    group_by = effective_group_by(app)
    out = []
    for item in usage_items(
        sb.seed, app.app_id, "FUNCTION_COMPUTE", window, app.context_aris, group_by
    ):
        day = date.fromisoformat(item["period"])
        if group_by is None:
            out.append((day, None, Decimal(item["tokensConsumed"])))
        else:
            out += [(day, g["groupValue"], Decimal(g["tokensConsumed"])) for g in item["groups"]]
    return sorted(out, key=str)


def fetched(result: object) -> list[tuple]:
    rows = result.rows  # type: ignore[attr-defined]
    return sorted(((r.usage_date, r.sub_account_id, r.consumed_quantity) for r in rows), key=str)


FLAT_APP = ForgeApp(app_id="app-p")
ENV_APP = ForgeApp(app_id="app-p", group_by="ENVIRONMENT_ID")  # 3 groups a day


# (reading, app, pageSize, days, requests): a page full by EITHER count is followed by another.
@pytest.mark.parametrize(
    ("counts", "app", "page_size", "n_days", "requests"),
    [
        pytest.param("periods", FLAT_APP, 7, 20, 3, id="periods-flat-short-last-page"),
        pytest.param("periods", FLAT_APP, 7, 21, 4, id="periods-flat-exact-multiple"),
        pytest.param("rows", FLAT_APP, 7, 20, 3, id="rows-flat-short-last-page"),
        pytest.param("rows", FLAT_APP, 7, 21, 4, id="rows-flat-exact-multiple"),
        # 7, 7, 6 periods; the last holds 18 rows >= 7, so one more (empty) page
        pytest.param("periods", ENV_APP, 7, 20, 4, id="periods-grouped-rows-overflow"),
        pytest.param("periods", ENV_APP, 7, 21, 4, id="periods-grouped-exact-multiple"),
        pytest.param("periods", ENV_APP, 10, 2, 1, id="periods-grouped-one-short-page"),
        pytest.param("periods", ENV_APP, 2, 3, 3, id="periods-grouped-tiny-pages"),
        # 60 rows: 8 pages of 7 (about 3 periods each: short by periods, full by rows) + 4
        pytest.param("rows", ENV_APP, 7, 20, 9, id="rows-grouped-days-split"),
        pytest.param("rows", ENV_APP, 6, 20, 11, id="rows-grouped-exact-multiple"),
        pytest.param("rows", ENV_APP, 2, 3, 5, id="rows-grouped-day-over-three-pages"),
        pytest.param("rows", ENV_APP, 4, 5, 4, id="rows-grouped-non-multiple"),
    ],
)
def test_both_readings_of_page_size_give_the_exact_rows(
    sb: Sandbox, counts: str, app: ForgeApp, page_size: int, n_days: int, requests: int
) -> None:
    sb.state["forge"].update(page_size=page_size, page_size_counts=counts)
    window = days(date(2026, 2, 1), n_days)
    pages: list[int] = []
    with client(sb, pages) as c:
        result = c.fetch_days([app], window)
    assert pages == list(range(1, requests + 1)) and result.requests == requests
    assert fetched(result) == expected_rows(sb, app, window)
    assert len({r.source_key for r in result.rows}) == len(result.rows)
    assert [c.status for c in result.coverage] == ["complete"] * n_days


def _page_past_the_end(sb: Sandbox, req: httpx.Request, answer: str) -> httpx.Response:
    """How a server whose ``pageSize`` counts periods may answer a page past its last one
    (page 1 here): an in-band 4xx in either GraphQL layer, or its last page again, echoing the
    page asked for or the page it clamped to."""
    body = json.loads(req.content)
    error = {
        "message": "page out of range",
        "extensions": {"statusCode": 400, "errorType": "BAD_REQUEST"},
    }
    if answer == "inband-400":
        node = {"__typename": None, "resourceUsage": None, "pagination": None, "error": error}
        return json_response(
            200, {"data": {"ecosystem": {"devConsole": {"appResourceUsage": node}}}}
        )
    if answer == "errors-400":
        return json_response(200, {"data": None, "errors": [error]})
    if answer == "inband-429":
        error["extensions"]["statusCode"] = 429
        return json_response(200, {"data": None, "errors": [error]})
    asked = body["variables"]["filters"]["page"]
    body["variables"]["filters"]["page"] = 1
    headers = {k: v for k, v in req.headers.items() if k.lower() != "content-length"}
    last = sb.handle(httpx.Request("POST", req.url, headers=headers, json=body))
    if answer == "repeat-as-asked":
        out = json.loads(last.content)
        out["data"]["ecosystem"]["devConsole"]["appResourceUsage"]["pagination"]["page"] = asked
        return json_response(200, out)
    assert answer == "repeat-as-last"
    return last


PAST_THE_END = ["inband-400", "errors-400", "repeat-as-asked", "repeat-as-last"]


def _ends_after_page_1(sb: Sandbox, answer: str, pages: list[int]) -> ForgeClient:
    def route(req: httpx.Request) -> httpx.Response:
        page = json.loads(req.content)["variables"]["filters"]["page"]
        return sb.handle(req) if page == 1 else _page_past_the_end(sb, req, answer)

    return client(sb, pages, route)


@pytest.mark.parametrize("answer", PAST_THE_END)
def test_a_page_asked_for_only_because_rows_filled_the_last_may_end_the_series(
    sb: Sandbox, answer: str
) -> None:
    # 60 days x 3 environments: 60 periods (short of 100) but 180 rows (full), so page 2 is a
    # probe; a periods-counting server refusing or repeating it has said everything
    sb.state["forge"].update(page_size=100, page_size_counts="periods")
    window = days(date(2026, 1, 19), 60)
    pages: list[int] = []
    with _ends_after_page_1(sb, answer, pages) as c:
        result = c.fetch_days([ENV_APP], window)
    assert pages == [1, 2]
    assert fetched(result) == expected_rows(sb, ENV_APP, window) and len(result.rows) == 180
    assert [c.status for c in result.coverage] == ["complete"] * 60


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("inband-400", "page out of range"),
        ("errors-400", "page out of range"),
        ("repeat-as-asked", "repeats periods of earlier pages"),
        ("repeat-as-last", "asked for page 2, got page 1"),
    ],
)
def test_after_a_page_full_by_both_counts_a_refusal_or_a_repeat_still_fails(
    sb: Sandbox, answer: str, error: str
) -> None:
    # 20 periods and 60 rows of 20: full whatever pageSize counts, so page 2 is owed
    sb.state["forge"].update(page_size=20, page_size_counts="periods")
    window = days(date(2026, 1, 19), 60)
    with _ends_after_page_1(sb, answer, []) as c, pytest.raises(ProviderError) as err:
        c.fetch_days([ENV_APP], window)
    msg = str(err.value)
    assert error in msg and "app-p" in msg and "FUNCTION_COMPUTE" in msg and "page 2" in msg


def test_a_rate_limit_on_a_probe_page_is_not_taken_for_its_end(sb: Sandbox) -> None:
    sb.state["forge"].update(page_size=100, page_size_counts="periods")
    with _ends_after_page_1(sb, "inband-429", []) as c, pytest.raises(ProviderError) as err:
        c.fetch_days([ENV_APP], days(date(2026, 1, 19), 60))
    assert "gave up" in str(err.value) and "statusCode 429" in str(err.value)


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"honour_aliases": False}, id="aliases-ignored"),
        pytest.param({"omit_typename": True}, id="no-typename"),
        pytest.param({"bare_envelope": True}, id="bare-envelope"),
        pytest.param(
            {"honour_aliases": False, "omit_typename": True, "bare_envelope": True},
            id="all-naive",
        ),
    ],
)
@pytest.mark.parametrize(
    "app",
    [
        pytest.param(FLAT_APP, id="flat"),
        pytest.param(ENV_APP, id="grouped"),
        pytest.param(ForgeApp(app_id="app-p", context_aris=SITES), id="auto-grouped"),
    ],
)
def test_naive_servers_still_give_the_exact_rows(sb: Sandbox, knobs: dict, app: ForgeApp) -> None:
    sb.state["forge"].update(page_size=4, **knobs)
    window = days(date(2026, 3, 1), 10)
    with client(sb) as c:
        result = c.fetch_days([app], window)
    assert fetched(result) == expected_rows(sb, app, window) and result.rows
    assert {c.status for c in result.coverage} == {"complete"}


def test_a_day_without_a_period_entry_is_unavailable_not_zero(sb: Sandbox) -> None:
    # the sandbox (like Forge before its 12:00 UTC refresh) has nothing for today yet
    window = [TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY]
    with client(sb) as c:
        result = c.fetch_days([ForgeApp(app_id="app-p", resources=["KVS_READ"])], window)
    assert [r.usage_date for r in result.rows] == window[:2]
    status = {c.usage_date: (c.status, c.reason, c.row_count) for c in result.coverage}
    assert status[window[0]] == ("complete", None, 1)
    assert status[window[1]] == ("complete", None, 1)
    assert status[TODAY][0] == "unavailable" and status[TODAY][2] == 0
    reason = status[TODAY][1] or ""
    assert "no period in Forge's answer for app app-p resource KVS_READ" in reason
    assert "12:00 UTC" in reason


def _answer(items: list[dict], typename: str = FLAT) -> httpx.MockTransport:
    node = {
        "__typename": typename,
        "resourceUsage": items,
        "pagination": {"page": 1, "pageSize": 100},
        "error": None,
    }
    body = {"data": {"ecosystem": {"devConsole": {"appResourceUsage": node}}}}
    return httpx.MockTransport(lambda _r: json_response(200, body))


def _direct(transport: httpx.MockTransport) -> ForgeClient:
    return ForgeClient(
        "http://x/graphql",
        "e@x",
        "t",
        experimental_api="v",
        account_id="a",
        transport=transport,
        today=lambda: TODAY,
    )


def test_an_app_whose_answer_has_no_periods_is_unavailable_every_day() -> None:
    window = days(date(2026, 3, 1), 3)
    with _direct(_answer([])) as c:
        result = c.fetch_days([ForgeApp(app_id="app-empty")], window)
    assert result.rows == []
    assert [(c.usage_date, c.status) for c in result.coverage] == [
        (d, "unavailable") for d in window
    ]
    assert all("app-empty" in (c.reason or "") for c in result.coverage)


def test_a_reported_zero_or_an_empty_group_list_is_complete() -> None:
    items = [
        {"period": "2026-03-01", "resolution": "ONE_DAY", "groups": []},
        {
            "period": "2026-03-02",
            "resolution": "ONE_DAY",
            "groups": [
                {
                    "groupBy": "ENVIRONMENT_ID",
                    "groupValue": "env-1",
                    "tokensConsumed": "0.000000",
                    "tokenUnit": "GB-seconds",
                }
            ],
        },
    ]
    window = days(date(2026, 3, 1), 3)
    app = ForgeApp(app_id="app-z", group_by="ENVIRONMENT_ID")
    with _direct(_answer(items, "DevConsoleAppResourceUsageGroupedResponse")) as c:
        result = c.fetch_days([app], window)
    assert fetched(result) == [(date(2026, 3, 2), "env-1", Decimal(0))]
    assert [(c.status, c.row_count) for c in result.coverage] == [
        ("complete", 0),
        ("complete", 1),
        ("unavailable", 0),
    ]
