"""The Forge GraphQL client against the in-process sandbox: request shape, parsing, grouping,
paging, the three error layers and retries."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import httpx
import pytest

from usage_orchestration.providers.forge import (
    FLAT,
    GROUPED,
    ForgeClient,
    coverage_account,
)
from usage_orchestration.providers.http import ProviderError, ProviderResponseError, RetryPolicy
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import Fault, json_response
from usage_orchestration.sandbox.forge import app_sites, site_usage
from usage_orchestration.settings import SettingsError, load_settings
from usage_orchestration.settings.forge import ForgeApp

NOW = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
TODAY = NOW.date()
SITE = "ari:cloud:jira::site/11111111-1111-1111-1111-111111111111"


def days(first: date, n: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(n)]


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.set_now(NOW)
    sandbox.state["forge"] = {"rate_limit": None}
    return sandbox


class Recorder:
    """Sends to the sandbox and keeps every request."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def transport(self) -> httpx.MockTransport:
        def handle(req: httpx.Request) -> httpx.Response:
            self.requests.append(req)
            return self.sb.handle(req)

        return httpx.MockTransport(handle)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


def make_client(sb: Sandbox, rec: Recorder | None = None, **kw: object) -> ForgeClient:
    rec = rec or Recorder(sb)
    defaults: dict[str, object] = {
        "experimental_api": "DevConsoleAppResourceUsage",
        "account_id": "acct-1",
        "transport": rec.transport(),
        "sleep": rec.sleeps.append,
        "today": lambda: TODAY,
        "retry": RetryPolicy(max_attempts=4, jitter=False),
    }
    defaults.update(kw)
    return ForgeClient(
        "http://sandbox.test/forge/graphql",
        sb.API_KEYS["forge_email"],
        sb.API_KEYS["forge"],
        **defaults,  # type: ignore[arg-type]
    )


def test_request_carries_auth_headers_one_query_and_variables(sb: Sandbox) -> None:
    rec = Recorder(sb)
    app = ForgeApp(app_id="app-a", resources=["FUNCTION_COMPUTE"])
    with make_client(sb, rec) as client:
        client.fetch_days([app], days(date(2026, 3, 1), 3))
    (req,) = rec.requests
    assert req.method == "POST" and req.url.path == "/forge/graphql"
    scheme, _, token = req.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert (
        base64.b64decode(token).decode() == f"{sb.API_KEYS['forge_email']}:{sb.API_KEYS['forge']}"
    )
    assert req.headers["X-ExperimentalAPI"] == "DevConsoleAppResourceUsage"
    assert req.headers["User-Agent"] == "ForgeMetricsExportServer/1.0.0"
    body = json.loads(req.content)
    query = body["query"]
    assert f"... on {FLAT}" in query and f"... on {GROUPED}" in query and "__typename" in query
    assert body["variables"] == {
        "appId": "app-a",
        "filters": {
            "resource": "FUNCTION_COMPUTE",
            "interval": {"start": "2026-03-01T00:00:00Z", "end": "2026-03-03T23:59:59Z"},
            "page": 1,
        },
    }


def test_flat_usage_parses_decimal_strings_to_the_partition_day(sb: Sandbox) -> None:
    app = ForgeApp(app_id="app-a", name="Insights")
    with make_client(sb) as client:
        result = client.fetch_days([app], days(date(2026, 3, 1), 3))
    assert [r.usage_date for r in result.rows] == days(date(2026, 3, 1), 3)
    sites = app_sites(sb.seed, "app-a")
    for row in result.rows:
        assert isinstance(row.consumed_quantity, Decimal)
        expected = sum(
            site_usage(sb.seed, "app-a", "FUNCTION_COMPUTE", row.usage_date, s, len(sites))
            for s in sites
        )
        assert row.consumed_quantity == expected  # exact: no float on the way
        assert (row.metric, row.consumed_unit, row.raw_unit) == (
            "FUNCTION_COMPUTE",
            "GB-seconds",
            "GB-seconds",
        )
        assert (
            row.sub_account_id is None
            and row.resource_id == "app-a"
            and row.resource_name == "Insights"
        )
        assert row.charge_period_start == datetime.combine(
            row.usage_date, datetime.min.time(), tzinfo=UTC
        )
        assert row.charge_period_end - row.charge_period_start == timedelta(days=1)
        assert row.billing_account_id == "acct-1"
    assert [c.status for c in result.coverage] == ["complete"] * 3
    assert {c.account_id for c in result.coverage} == {
        coverage_account("app-a", "FUNCTION_COMPUTE")
    }


def test_json_number_and_unknown_unit_stay_exact_strings() -> None:
    body = {
        "data": {
            "ecosystem": {
                "devConsole": {
                    "appResourceUsage": {
                        "__typename": FLAT,
                        "flatUsage": [
                            {
                                "period": "2026-03-01",
                                "resolution": "ONE_DAY",
                                "tokensConsumed": 0.1,
                                "tokenUnit": "furlongs",
                            },
                            {
                                "period": "2026-03-02T00:00:00Z",
                                "resolution": "ONE_DAY",
                                "tokensConsumed": "1.024000",
                                "tokenUnit": "furlongs",
                            },
                        ],
                        "pagination": {"page": 1, "pageSize": 100},
                        "error": None,
                    }
                }
            }
        }
    }
    transport = httpx.MockTransport(lambda _r: json_response(200, body))
    client = ForgeClient(
        "http://x/graphql",
        "e@x",
        "tok",
        experimental_api="v",
        account_id="a",
        transport=transport,
        today=lambda: TODAY,
    )
    result = client.fetch_days(
        [ForgeApp(app_id="app", resources=["SOME_NEW_RESOURCE"])], days(date(2026, 3, 1), 2)
    )
    assert [
        (r.usage_date, r.consumed_quantity, r.consumed_unit, r.metric) for r in result.rows
    ] == [
        (date(2026, 3, 1), Decimal("0.1"), "furlongs", "SOME_NEW_RESOURCE"),
        (date(2026, 3, 2), Decimal("1.024000"), "furlongs", "SOME_NEW_RESOURCE"),
    ]


def test_grouped_by_environment_keeps_the_group_and_sums_to_flat(sb: Sandbox) -> None:
    window = days(date(2026, 3, 1), 4)
    with make_client(sb) as client:
        flat = client.fetch_days([ForgeApp(app_id="app-a")], window)
        grouped = client.fetch_days([ForgeApp(app_id="app-a", group_by="ENVIRONMENT_ID")], window)
    assert len(grouped.rows) == 3 * len(window)
    assert len({r.sub_account_id for r in grouped.rows}) == 3
    assert len({r.source_key for r in grouped.rows}) == len(grouped.rows)
    for d in window:
        total = sum(r.consumed_quantity for r in grouped.rows if r.usage_date == d)
        assert total == next(r.consumed_quantity for r in flat.rows if r.usage_date == d)
    assert all(json.loads(r.details or "{}")["group_by"] == "ENVIRONMENT_ID" for r in grouped.rows)


def test_context_aris_without_group_by_are_grouped_by_site(sb: Sandbox) -> None:
    rec = Recorder(sb)
    app = ForgeApp(app_id="app-a", context_aris=[SITE])
    with make_client(sb, rec) as client:
        result = client.fetch_days([app], days(date(2026, 3, 1), 2))
    variables = rec.bodies()[0]["variables"]
    assert "groupBy" not in variables and variables["filters"]["contextAris"] == [SITE]
    assert [r.sub_account_id for r in result.rows] == [SITE, SITE]
    assert all(SITE in r.source_key for r in result.rows)


def test_pages_until_a_short_page(sb: Sandbox) -> None:
    sb.state["forge"]["page_size"] = 7
    rec = Recorder(sb)
    with make_client(sb, rec) as client:
        result = client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 2, 1), 20))
    assert [b["variables"]["filters"]["page"] for b in rec.bodies()] == [1, 2, 3]  # 7 + 7 + 6
    assert len(result.rows) == 20 and len({r.usage_date for r in result.rows}) == 20
    # an exact multiple of the page size needs the empty page that proves the end
    rec2 = Recorder(sb)
    with make_client(sb, rec2) as client:
        result = client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 2, 1), 21))
    assert [b["variables"]["filters"]["page"] for b in rec2.bodies()] == [1, 2, 3, 4]
    assert len(result.rows) == 21


def test_page_cap_fails_loudly_naming_app_resource_and_interval(sb: Sandbox) -> None:
    sb.state["forge"]["page_size"] = 5
    with make_client(sb, max_pages=2) as client, pytest.raises(ProviderResponseError) as err:
        client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 2, 1), 20))
    msg = str(err.value)
    assert "more than 2 pages" in msg and "app-a" in msg and "FUNCTION_COMPUTE" in msg
    assert "2026-02-01..2026-02-20" in msg


def test_one_request_series_per_app_and_resource_for_a_whole_range(sb: Sandbox) -> None:
    rec = Recorder(sb)
    apps = [
        ForgeApp(app_id=f"app-{i}", resources=["FUNCTION_COMPUTE", "KVS_READ"]) for i in range(3)
    ]
    window = days(date(2026, 2, 1), 45)
    with make_client(sb, rec) as client:
        result = client.fetch_days(apps, window)
    assert result.requests == 6
    intervals = {json.dumps(b["variables"]["filters"]["interval"]) for b in rec.bodies()}
    assert intervals == {
        json.dumps({"start": "2026-02-01T00:00:00Z", "end": "2026-03-17T23:59:59Z"})
    }
    assert len(result.rows) == 3 * 2 * 45
    kvs = {r.consumed_unit for r in result.rows if r.metric == "KVS_READ"}
    assert kvs == {"GB"}


def test_days_outside_the_lookback_are_unavailable_not_zero(sb: Sandbox) -> None:
    rec = Recorder(sb)
    window = [TODAY - timedelta(days=62), TODAY - timedelta(days=61), TODAY - timedelta(days=5)]
    with make_client(sb, rec) as client:
        result = client.fetch_days([ForgeApp(app_id="app-a")], window)
    assert [r.usage_date for r in result.rows] == [TODAY - timedelta(days=5)]
    interval = rec.bodies()[0]["variables"]["filters"]["interval"]
    assert interval["start"].startswith((TODAY - timedelta(days=5)).isoformat())
    status = {c.usage_date: (c.status, c.reason) for c in result.coverage}
    assert status[TODAY - timedelta(days=62)][0] == "unavailable"
    assert "60-day" in (status[TODAY - timedelta(days=61)][1] or "")
    assert status[TODAY - timedelta(days=5)][0] == "complete"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_http_429_and_5xx_are_retried_honouring_retry_after(sb: Sandbox, status: int) -> None:
    sb.add_fault("forge", Fault(status=status, count=2, headers={"Retry-After": "7"}))
    rec = Recorder(sb)
    with make_client(sb, rec) as client:
        result = client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 2))
    assert len(result.rows) == 2 and result.retries == 2 and len(rec.requests) == 3
    assert rec.sleeps == [7.0, 7.0]


@pytest.mark.parametrize("code", [429, 500, 503])
def test_inband_429_and_5xx_are_retried(sb: Sandbox, code: int) -> None:
    sb.state["forge"]["inband_errors"] = [{"statusCode": code, "message": "busy", "count": 2}]
    rec = Recorder(sb)
    with make_client(sb, rec) as client:
        result = client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 2))
    assert len(result.rows) == 2 and result.retries == 2 and len(rec.requests) == 3


def _rate_limited(layer: str) -> dict:
    """A 200 answer whose GraphQL error (top-level or in-band) says 429."""
    if layer == "errors":
        return {
            "data": None,
            "errors": [{"message": "rate limited", "extensions": {"statusCode": 429}}],
        }
    error = {"message": "rate limited", "extensions": {"statusCode": 429}}
    node = {"__typename": FLAT, "resourceUsage": None, "pagination": None, "error": error}
    return {"data": {"ecosystem": {"devConsole": {"appResourceUsage": node}}}}


@pytest.mark.parametrize("layer", ["errors", "inband"])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_graphql_429_with_http_200_honours_retry_after(sb: Sandbox, layer: str, form: str) -> None:
    # the Gateway may rate-limit inside a 200 answer; its Retry-After is the wait it asks for
    header = "30"
    if form == "http-date":
        header = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    rec = Recorder(sb)
    sent = rec.transport()

    def handle(req: httpx.Request) -> httpx.Response:
        if not rec.requests:
            rec.requests.append(req)
            return json_response(200, _rate_limited(layer), headers={"Retry-After": header})
        return sent.handle_request(req)

    with make_client(sb, rec, transport=httpx.MockTransport(handle)) as client:
        result = client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 2))
    assert len(result.rows) == 2 and result.retries == 1 and len(rec.requests) == 2
    assert len(rec.sleeps) == 1 and rec.sleeps[0] == pytest.approx(30.0, abs=2.0)


@pytest.mark.parametrize("layer", ["errors", "inband"])
def test_graphql_429_retry_after_beyond_the_cap_is_handed_to_the_caller(
    sb: Sandbox, layer: str
) -> None:
    rec = Recorder(sb)

    def handle(req: httpx.Request) -> httpx.Response:
        rec.requests.append(req)
        return json_response(200, _rate_limited(layer), headers={"Retry-After": "3600"})

    client = make_client(sb, rec, transport=httpx.MockTransport(handle))
    with client, pytest.raises(ProviderError) as err:
        client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 2))
    assert err.value.retryable and err.value.retry_after_s == 3600.0
    assert len(rec.requests) == 1 and rec.sleeps == []
    msg = str(err.value)
    assert "3600" in msg and "app-a" in msg and "FUNCTION_COMPUTE" in msg and "rate limited" in msg


def test_inband_client_error_is_not_retried_and_names_app_resource_interval(sb: Sandbox) -> None:
    sb.state["forge"]["inband_errors"] = [
        {
            "statusCode": 403,
            "message": "not the app owner",
            "errorType": "FORBIDDEN",
            "identifier": "id-9",
        }
    ]
    rec = Recorder(sb)
    with make_client(sb, rec) as client, pytest.raises(ProviderError) as err:
        client.fetch_days(
            [ForgeApp(app_id="app-a", resources=["KVS_READ"])], days(date(2026, 3, 1), 2)
        )
    msg = str(err.value)
    assert len(rec.requests) == 1
    for part in (
        "forge",
        "app-a",
        "KVS_READ",
        "2026-03-01..2026-03-02",
        "not the app owner",
        "403",
        "FORBIDDEN",
    ):
        assert part in msg
    assert sb.API_KEYS["forge"] not in msg


def test_top_level_graphql_errors_are_checked_and_retried_only_when_retryable(sb: Sandbox) -> None:
    sb.state["forge"]["graphql_errors"] = [{"message": "gateway hiccup", "statusCode": 502}]
    with make_client(sb) as client:
        result = client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 1))
    assert result.retries == 1 and len(result.rows) == 1

    sb.state["forge"]["graphql_errors"] = [{"message": "Field 'x' is invalid", "statusCode": 400}]
    rec = Recorder(sb)
    with make_client(sb, rec) as client, pytest.raises(ProviderError) as err:
        client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 1))
    assert len(rec.requests) == 1
    assert "GraphQL errors: Field 'x' is invalid" in str(err.value) and "app-a" in str(err.value)


def test_missing_experimental_header_value_is_a_clear_error(sb: Sandbox) -> None:
    sb.state["forge"]["experimental_api"] = "TheRealValue"
    with make_client(sb) as client, pytest.raises(ProviderError) as err:
        client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 1))
    assert "X-ExperimentalAPI" in str(err.value)


def test_bad_credentials_are_not_retried_and_never_echo_the_token(sb: Sandbox) -> None:
    rec = Recorder(sb)
    client = ForgeClient(
        "http://sandbox.test/forge/graphql",
        sb.API_KEYS["forge_email"],
        "wrong-token-s3cret",
        experimental_api="v",
        account_id="a",
        transport=rec.transport(),
        today=lambda: TODAY,
    )
    with pytest.raises(ProviderError) as err:
        client.fetch_days([ForgeApp(app_id="app-a")], days(date(2026, 3, 1), 1))
    assert err.value.status == 401 and len(rec.requests) == 1
    assert "wrong-token-s3cret" not in str(err.value)


def test_malformed_tokens_consumed_names_the_field() -> None:
    body = {
        "data": {
            "ecosystem": {
                "devConsole": {
                    "appResourceUsage": {
                        "__typename": FLAT,
                        "flatUsage": [
                            {
                                "period": "2026-03-01",
                                "tokensConsumed": "lots",
                                "tokenUnit": "GB-seconds",
                            }
                        ],
                        "pagination": {"page": 1, "pageSize": 100},
                    }
                }
            }
        }
    }
    transport = httpx.MockTransport(lambda _r: json_response(200, body))
    client = ForgeClient(
        "http://x/graphql",
        "e@x",
        "t",
        experimental_api="v",
        account_id="a",
        transport=transport,
        today=lambda: TODAY,
    )
    with pytest.raises(ProviderResponseError) as err:
        client.fetch_days([ForgeApp(app_id="app-z")], [date(2026, 3, 1)])
    assert "tokensConsumed" in str(err.value) and "app-z" in str(err.value)


def test_a_resolution_other_than_a_day_is_refused() -> None:
    body = {
        "data": {
            "ecosystem": {
                "devConsole": {
                    "appResourceUsage": {
                        "__typename": FLAT,
                        "flatUsage": [
                            {
                                "period": "2026-03-01",
                                "resolution": "ONE_HOUR",
                                "tokensConsumed": "1",
                                "tokenUnit": "GB-seconds",
                            }
                        ],
                        "pagination": {"page": 1, "pageSize": 100},
                    }
                }
            }
        }
    }
    transport = httpx.MockTransport(lambda _r: json_response(200, body))
    client = ForgeClient(
        "http://x/graphql",
        "e@x",
        "t",
        experimental_api="v",
        account_id="a",
        transport=transport,
        today=lambda: TODAY,
    )
    with pytest.raises(ProviderResponseError, match="resolution"):
        client.fetch_days([ForgeApp(app_id="app-z")], [date(2026, 3, 1)])


def test_settings_validate_apps_and_group_by() -> None:
    s = load_settings(
        forge={
            "apps": [
                {
                    "app_id": "a1",
                    "resources": ["FUNCTION_COMPUTE", "KVS_WRITE"],
                    "group_by": "CONTEXT_ARI",
                }
            ]
        }
    )
    assert s.forge.apps[0].group_by == "CONTEXT_ARI"
    with pytest.raises(SettingsError, match=r"forge\.apps\.0\.group_by"):
        load_settings(forge={"apps": [{"app_id": "a1", "group_by": "SITE"}]})
    with pytest.raises(SettingsError, match="duplicate app_id"):
        load_settings(forge={"apps": [{"app_id": "a1"}, {"app_id": "a1"}]})
    with pytest.raises(SettingsError, match=r"forge\.rate_limit_max_requests"):
        load_settings(forge={"rate_limit_max_requests": 0})
    # the demo app maps to Jira Insights; GB-seconds convert into app_compute seconds
    d = load_settings()
    m = next(m for m in d.mappings if m.provider == "forge")
    assert (m.entity_id, m.resource_type, m.metric) == (
        "dddddddd-dddd-dddd-dddd-dddddddddddd",
        "app_compute",
        "FUNCTION_COMPUTE",
    )
    assert d.rate_card["app_compute"].conversions["GB-seconds"].apply(Decimal("2.5")) == Decimal(
        "2.5"
    )
    cap = next(c for c in d.budgets.provider_caps if c.provider == "forge")
    assert (cap.metric, cap.unit, cap.monthly_quantity) == (
        "FUNCTION_COMPUTE",
        "GB-seconds",
        Decimal(100_000),
    )
