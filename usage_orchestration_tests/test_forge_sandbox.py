"""The Forge sandbox executes the GraphQL operation with graphql-core against a schema written
from the spec (not canned JSON), groups, pages under both readings of ``pageSize``, answers errors
on demand, mimics naive servers on request and enforces its rate limit; ``demo_usage`` matches
what it serves."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import graphql
import httpx
import pytest

from usage_orchestration.providers.forge import USAGE_QUERY, ForgeClient
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.forge import (
    FLAT,
    GROUPED,
    SCHEMA,
    demo_usage,
    environment_id,
    usage_items,
)
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
        (  # a variable of the wrong type
            USAGE_QUERY,
            {"appId": "a", "filters": filters(page="one")},
            "Int cannot represent non-integer value",
        ),
        (
            USAGE_QUERY,
            {"appId": "a", "filters": filters(interval={"start": "yesterday", "end": "now"})},
            "Expected type 'DateTime'",
        ),
        (  # a variable declared with a type the argument does not take
            "query Q($appId: String!, $f: DevConsoleAppResourceUsageFiltersInput!) { ecosystem "
            "{ devConsole { appResourceUsage(appId: $appId, filters: $f) { __typename } } } }",
            {"appId": "a", "filters": filters()},
            "Variable '$appId' of type 'String!' used in position expecting type 'ID!'",
        ),
        (  # a required argument left out
            'query { ecosystem { devConsole { appResourceUsage(appId: "a") { __typename } } } }',
            {},
            "argument 'filters' of type 'DevConsoleAppResourceUsageFiltersInput!' is required",
        ),
        (
            "mutation { ecosystem { __typename } }",
            {},
            "Schema is not configured to execute mutation operation",
        ),
    ],
)
def test_invalid_operations_answer_graphql_errors(
    sb: Sandbox, query: str, variables: dict, message: str
) -> None:
    resp = post(sb, query, variables)
    assert resp.status_code == 200
    body = resp.json()
    assert body.get("data") is None and message in body["errors"][0]["message"]


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


def test_aliases_are_honoured_and_naive_modes_answer_by_field_name(sb: Sandbox) -> None:
    variables = {"appId": "a", "filters": filters()}
    out = usage(post(sb, USAGE_QUERY, variables))
    assert "flatUsage" in out and "resourceUsage" not in out
    sb.state["forge"]["honour_aliases"] = False
    naive = usage(post(sb, USAGE_QUERY, variables))
    assert naive["resourceUsage"] == out["flatUsage"] and "flatUsage" not in naive
    sb.state["forge"].update(bare_envelope=True, omit_typename=True)
    bare = post(sb, USAGE_QUERY, variables).json()
    assert set(bare) == {"resourceUsage", "pagination", "error"}  # the document's sample shape
    assert bare["resourceUsage"] == out["flatUsage"]


@pytest.mark.parametrize("counts", ["periods", "rows"])
def test_page_size_counts_periods_or_grouped_rows(sb: Sandbox, counts: str) -> None:
    sb.state["forge"].update(page_size=4, page_size_counts=counts)
    variables = {"appId": "a", "groupBy": "ENVIRONMENT_ID"}
    window = {"start": "2026-03-01T00:00:00Z", "end": "2026-03-05T23:59:59Z"}
    pages = [
        usage(post(sb, USAGE_QUERY, {**variables, "filters": filters(interval=window, page=p)}))[
            "groupedUsage"
        ]
        for p in range(1, 6)
    ]
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(5)]
    expected = usage_items(sb.seed, "a", "FUNCTION_COMPUTE", days, None, "ENVIRONMENT_ID")
    envs = [environment_id(sb.seed, "a", e) for e in ("production", "staging", "development")]
    assert [g["groupValue"] for g in expected[0]["groups"]] == envs
    if counts == "periods":  # 5 days of 3 environments: 4 + 1 periods
        assert [len(p) for p in pages] == [4, 1, 0, 0, 0]
    else:  # 15 rows: 4 + 4 + 4 + 3, a day's groups straddle pages
        assert [sum(len(x["groups"]) for x in p) for p in pages] == [4, 4, 4, 3, 0]
        assert [x["period"] for x in pages[1]] == ["2026-03-02", "2026-03-03"]
    flat_rows = [(x["period"], g) for p in pages for x in p for g in x["groups"]]
    assert flat_rows == [(x["period"], g) for x in expected for g in x["groups"]]


def test_the_clients_query_validates_against_the_schema() -> None:
    assert graphql.validate(SCHEMA, graphql.parse(USAGE_QUERY)) == []
    # and the document's own samples do too: the schema follows the spec
    assert graphql.validate(SCHEMA, graphql.parse(DOC_FLAT_QUERY)) == []


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
