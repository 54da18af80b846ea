"""The Forge sandbox parses and executes the GraphQL operation (not canned JSON), groups, pages,
answers errors on demand and enforces its rate limit; ``demo_usage`` matches what it serves."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from usage_orchestration.providers.forge import USAGE_QUERY, ForgeClient
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.forge import FLAT, GROUPED, GraphQLError, demo_usage, parse
from usage_orchestration.settings import load_settings

NOW = datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
SITE_A = "ari:cloud:jira::site/aaaa"
SITE_B = "ari:cloud:jira::site/bbbb"

# The documentation's flat sample, verbatim in shape: it selects only the flat fragment.
DOC_FLAT_QUERY = """
query AppResourceUsageFlat($appId: ID!, $filters: DevConsoleAppResourceUsageFiltersInput!) {
  ecosystem { devConsole { appResourceUsage(appId: $appId, filters: $filters) {
    ... on DevConsoleAppResourceUsageFlatResponse {
      resourceUsage { period resolution tokensConsumed tokenUnit }
      pagination { page pageSize }
      error { message identifier extensions { errorType statusCode } }
    }
  } } }
}
"""


@pytest.fixture
def sb(sandbox: Sandbox) -> Sandbox:
    sandbox.set_now(NOW)
    sandbox.state["forge"] = {"rate_limit": None}
    return sandbox


def post(
    sb: Sandbox,
    query: str,
    variables: dict | None = None,
    *,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    operation: str | None = None,
) -> httpx.Response:
    with httpx.Client(transport=sb.transport()) as c:
        return c.post(
            "http://sandbox.test/forge/graphql",
            auth=auth or (sb.API_KEYS["forge_email"], sb.API_KEYS["forge"]),
            headers={"X-ExperimentalAPI": "v", **(headers or {})},
            json={"query": query, "variables": variables or {}, "operationName": operation},
        )


def filters(**extra: object) -> dict:
    return {
        "resource": "FUNCTION_COMPUTE",
        "interval": {"start": "2026-03-01T00:00:00Z", "end": "2026-03-03T23:59:59Z"},
        **extra,
    }


def usage(resp: httpx.Response) -> dict:
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]["ecosystem"]["devConsole"]["appResourceUsage"]


def test_flat_and_grouped_answers_follow_the_variables(sb: Sandbox) -> None:
    flat = usage(post(sb, USAGE_QUERY, {"appId": "app-1", "filters": filters()}))
    assert flat["__typename"] == FLAT and set(flat) == {
        "__typename",
        "flatUsage",
        "pagination",
        "error",
    }
    assert [x["period"] for x in flat["flatUsage"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert flat["pagination"] == {"page": 1, "pageSize": 100} and flat["error"] is None
    grouped = usage(
        post(sb, USAGE_QUERY, {"appId": "app-1", "filters": filters(), "groupBy": "ENVIRONMENT_ID"})
    )
    assert grouped["__typename"] == GROUPED
    assert {g["groupBy"] for x in grouped["groupedUsage"] for g in x["groups"]} == {
        "ENVIRONMENT_ID"
    }


def test_context_aris_without_group_by_group_automatically(sb: Sandbox) -> None:
    out = usage(
        post(sb, USAGE_QUERY, {"appId": "app-1", "filters": filters(contextAris=[SITE_A, SITE_B])})
    )
    assert out["__typename"] == GROUPED
    assert [g["groupValue"] for g in out["groupedUsage"][0]["groups"]] == [SITE_A, SITE_B]
    # the trap: the documentation's flat-only query then gets no usage at all
    doc = usage(
        post(sb, DOC_FLAT_QUERY, {"appId": "app-1", "filters": filters(contextAris=[SITE_A])})
    )
    assert doc == {}


def test_the_operation_is_parsed_fragments_aliases_defaults_and_directives(sb: Sandbox) -> None:
    query = """
    # a named fragment, an alias, a variable default and @skip
    query Q($app: ID!, $f: DevConsoleAppResourceUsageFiltersInput!, $noPage: Boolean = true) {
      ecosystem { devConsole { u: appResourceUsage(appId: $app, filters: $f) { kind: __typename ...Flat } } }
    }
    fragment Flat on DevConsoleAppResourceUsageFlatResponse {
      days: resourceUsage { day: period tokensConsumed }
      pagination @skip(if: $noPage) { page }
    }
    query Other { ecosystem { devConsole { __typename } } }
    """
    resp = post(sb, query, {"app": "app-1", "f": filters(page=1)}, operation="Q")
    u = resp.json()["data"]["ecosystem"]["devConsole"]["u"]
    assert u["kind"] == FLAT and "pagination" not in u
    assert [set(d) for d in u["days"]] == [{"day", "tokensConsumed"}] * 3
    # literals instead of variables work too
    literal = (
        'query { ecosystem { devConsole { appResourceUsage(appId: "app-1", filters: {resource: "KVS_READ", '
        'interval: {start: "2026-03-01T00:00:00Z", end: "2026-03-01T23:59:59Z"}}, groupBy: CONTEXT_ARI) '
        "{ ... on DevConsoleAppResourceUsageGroupedResponse { resourceUsage { groups { tokenUnit } } } } } } }"
    )
    out = post(sb, literal).json()["data"]["ecosystem"]["devConsole"]["appResourceUsage"]
    assert {g["tokenUnit"] for g in out["resourceUsage"][0]["groups"]} == {"GB"}


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        (
            'query { ecosystem { devConsole { appResourceUsage(appId: "a", filters: {resource: "X", interval: '
            '{start: "2026-03-01T00:00:00Z", end: "2026-03-02T00:00:00Z"}}) { ... on '
            "DevConsoleAppResourceUsageFlatResponse { resourceUsage { cost } } } } } }",
            {},
            "Cannot query field 'cost'",
        ),
        (
            USAGE_QUERY,
            {"filters": filters()},
            "Variable '$appId' of required type 'ID!' was not provided",
        ),
        (
            USAGE_QUERY,
            {"appId": "a", "filters": filters(), "groupBy": "SITE"},
            "does not exist in 'DevConsoleGroupBy'",
        ),
        ('query { ecosystem { devConsole { appResourceUsage(appId: "a" ', {}, "Syntax Error"),
    ],
)
def test_invalid_operations_answer_graphql_errors(
    sb: Sandbox, query: str, variables: dict, message: str
) -> None:
    resp = post(sb, query, variables)
    assert resp.status_code == 200
    body = resp.json()
    assert body["data"] is None and message in body["errors"][0]["message"]


def test_pages_and_auth_and_experimental_header(sb: Sandbox) -> None:
    sb.state["forge"]["page_size"] = 2
    pages = [
        usage(post(sb, USAGE_QUERY, {"appId": "a", "filters": filters(page=p)}))["flatUsage"]
        for p in (1, 2, 3)
    ]
    assert [len(p) for p in pages] == [2, 1, 0]
    assert (
        post(sb, USAGE_QUERY, {}, auth=("someone@example.com", sb.API_KEYS["forge"])).status_code
        == 401
    )
    body = post(
        sb, USAGE_QUERY, {"appId": "a", "filters": filters()}, headers={"X-ExperimentalAPI": ""}
    ).json()
    assert "X-ExperimentalAPI" in body["errors"][0]["message"]


def test_unknown_app_and_injected_errors_come_in_band(sb: Sandbox) -> None:
    sb.state["forge"]["apps"] = ["known"]
    out = usage(post(sb, USAGE_QUERY, {"appId": "other", "filters": filters()}))
    assert (
        out["error"]["extensions"] == {"errorType": "NOT_FOUND", "statusCode": 404}
        and out["flatUsage"] is None
    )
    sb.state["forge"]["inband_errors"] = [{"statusCode": 500, "message": "boom", "count": 1}]
    out = usage(post(sb, USAGE_QUERY, {"appId": "known", "filters": filters()}))
    assert out["error"]["message"] == "boom" and out["error"]["extensions"]["statusCode"] == 500
    assert usage(post(sb, USAGE_QUERY, {"appId": "known", "filters": filters()}))["error"] is None


def test_rate_limit_answers_429_per_account_above_the_window(sb: Sandbox) -> None:
    sb.state["forge"]["rate_limit"] = {"max_requests": 3, "per_seconds": 60}
    statuses = [
        post(sb, USAGE_QUERY, {"appId": "a", "filters": filters()}).status_code for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    resp = post(sb, USAGE_QUERY, {"appId": "a", "filters": filters()})
    assert resp.status_code == 429 and 1 <= int(resp.headers["Retry-After"]) <= 60
    assert sb.request_count("forge", 429) == 3


def test_the_default_rate_limit_is_the_documented_five_a_minute(sandbox: Sandbox) -> None:
    sandbox.set_now(NOW)
    statuses = [
        post(sandbox, USAGE_QUERY, {"appId": "a", "filters": filters()}).status_code
        for _ in range(6)
    ]
    assert statuses == [200] * 5 + [429]


def test_lookback_and_today_bound_the_data(sb: Sandbox) -> None:
    out = usage(
        post(
            sb,
            USAGE_QUERY,
            {
                "appId": "a",
                "filters": filters(
                    interval={"start": "2025-12-01T00:00:00Z", "end": "2026-03-25T00:00:00Z"}
                ),
            },
        )
    )
    periods = [x["period"] for x in out["flatUsage"]]
    assert periods[0] == (NOW.date() - timedelta(days=60)).isoformat()
    assert periods[-1] == (NOW.date() - timedelta(days=1)).isoformat()


def test_parser_rejects_garbage() -> None:
    with pytest.raises(GraphQLError):
        parse("query { a(b: ) }")
    with pytest.raises(GraphQLError):
        parse("")


def test_demo_usage_is_what_the_client_fetches(sb: Sandbox) -> None:
    settings = load_settings()
    day = date(2026, 3, 10)
    demo = sorted(r.model_dump_json() for r in demo_usage(sb.seed, settings, day))
    client = ForgeClient(
        "http://sandbox.test/forge/graphql",
        sb.API_KEYS["forge_email"],
        sb.API_KEYS["forge"],
        experimental_api="v",
        account_id=settings.forge.account_id,
        transport=sb.transport(),
        today=lambda: NOW.date(),
    )
    fetched = sorted(
        r.model_dump_json() for r in client.fetch_days(settings.forge.apps, [day]).rows
    )
    assert demo == fetched and len(demo) == 3  # the demo app, grouped by environment
