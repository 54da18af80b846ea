"""Atlassian Forge app resource usage: ``POST /forge/graphql`` (the GraphQL Gateway) per
specs/forge-app-resource-usage.md and provider-notes.md.

The operation is executed by graphql-core against a schema written in SDL from the spec
(``SDL``): aliases, fragments, variables and directives work as on a real GraphQL server, and a
bad operation (syntax error, unknown field, wrong variable type, missing required argument)
answers the validation's ``errors[]``. The answer is flat or grouped by the variables
(``contextAris`` without ``groupBy`` groups by CONTEXT_ARI), paged by ``filters.page``, and
deterministic from (seed, app, resource, day, group).

Knobs (``state['forge']``):
- ``rate_limit``: ``{"max_requests": 5, "per_seconds": 60}`` per account (the basic-auth email),
  sliding window; above it HTTP 429 with Retry-After. ``None`` disables it.
- ``page_size`` (default 100); ``page_size_counts``: ``"periods"`` (default: a page holds
  ``page_size`` resourceUsage entries) or ``"rows"`` (a page is a slice of the flattened
  (day, group) rows, regrouped by period: a day's groups may straddle two pages).
- ``lookback_days`` (default 60; None = unlimited; only days before the sandbox's today are
  reported), ``apps`` (app ids that exist; default any).
- ``inband_errors``: a queue of ``{"statusCode": 500, "message": ..., "errorType": ...,
  "identifier": ..., "count": 1}`` answered as the in-band ``appResourceUsage.error``.
- ``graphql_errors``: a queue of ``{"message": ..., "statusCode": 400, "count": 1}`` answered as
  top-level ``errors[]`` with HTTP 200.
- ``experimental_api``: the X-ExperimentalAPI value required (default: any non-empty value).
- Naive-server modes (what other fakes of this API do): ``honour_aliases: False`` answers every
  field under its own name whatever the alias; ``bare_envelope: True`` answers the bare
  appResourceUsage object, as the document's sample response; ``omit_typename: True`` drops
  ``__typename``.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import graphql
import httpx

from usage_orchestration.sandbox.core import json_response
from usage_orchestration.sandbox.data import rng, stable_id

if TYPE_CHECKING:
    from usage_orchestration.providers.records import UsageRow
    from usage_orchestration.sandbox.core import Sandbox
    from usage_orchestration.settings import UsageSettings

FLAT = "DevConsoleAppResourceUsageFlatResponse"
GROUPED = "DevConsoleAppResourceUsageGroupedResponse"
RESPONSE_UNION = "DevConsoleAppResourceUsageResponse"
DEFAULT_RATE_LIMIT = {"max_requests": 5, "per_seconds": 60.0}
DEFAULT_PAGE_SIZE = 100
PAGE_SIZE_COUNTS = ("periods", "rows")
ENVIRONMENTS = (
    ("production", Decimal("0.80")),
    ("staging", Decimal("0.15")),
    ("development", None),
)

UNITS = {
    "FUNCTION_COMPUTE": "GB-seconds",
    "KVS_READ": "GB",
    "KVS_WRITE": "GB",
    "LOGS_WRITE": "GB",
    "SQL_COMPUTE_DURATION": "hours",
    "SQL_COMPUTE_REQUESTS": "requests",
    "SQL_STORAGE": "GB",
}
_Q = Decimal("0.000001")

# The slice of the Gateway's schema this API exposes, from the document's sample queries and
# the notes. Names the document does not show (the interval input, the item types) are ours;
# the resource is a String because its enum names are not public.
SDL = """
scalar DateTime

type Query {
  ecosystem: EcosystemQuery
}

type EcosystemQuery {
  devConsole: DevConsoleQuery
}

type DevConsoleQuery {
  appResourceUsage(
    appId: ID!
    filters: DevConsoleAppResourceUsageFiltersInput!
    groupBy: DevConsoleGroupBy
  ): DevConsoleAppResourceUsageResponse
}

enum DevConsoleGroupBy {
  CONTEXT_ARI
  ENVIRONMENT_ID
}

input DevConsoleAppResourceUsageFiltersInput {
  resource: String!
  interval: DevConsoleDateTimeIntervalInput!
  contextAris: [ID!]
  page: Int
}

input DevConsoleDateTimeIntervalInput {
  start: DateTime!
  end: DateTime!
}

union DevConsoleAppResourceUsageResponse =
  | DevConsoleAppResourceUsageFlatResponse
  | DevConsoleAppResourceUsageGroupedResponse

type DevConsoleAppResourceUsageFlatResponse {
  resourceUsage: [DevConsoleResourceUsage!]
  pagination: DevConsolePagination
  error: DevConsoleError
}

type DevConsoleAppResourceUsageGroupedResponse {
  resourceUsage: [DevConsoleGroupedResourceUsage!]
  pagination: DevConsolePagination
  error: DevConsoleError
}

type DevConsoleResourceUsage {
  period: String!
  resolution: String
  tokensConsumed: String!
  tokenUnit: String!
}

type DevConsoleGroupedResourceUsage {
  period: String!
  resolution: String
  groups: [DevConsoleResourceUsageGroup!]!
}

type DevConsoleResourceUsageGroup {
  groupBy: DevConsoleGroupBy
  groupValue: String!
  tokensConsumed: String!
  tokenUnit: String!
}

type DevConsolePagination {
  page: Int!
  pageSize: Int!
}

type DevConsoleError {
  message: String
  identifier: String
  extensions: DevConsoleErrorExtensions
}

type DevConsoleErrorExtensions {
  errorType: String
  statusCode: Int
}
"""


def _datetime_value(value: Any) -> datetime:
    """DateTime input: an RFC 3339 string (no zone = UTC)."""
    if not isinstance(value, str):
        raise TypeError("DateTime must be an RFC 3339 string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _datetime_literal(node: Any, _variables: Any = None) -> datetime:
    if not isinstance(node, graphql.StringValueNode):
        raise TypeError("DateTime must be a string")
    return _datetime_value(node.value)


def build_forge_schema() -> graphql.GraphQLSchema:
    schema = graphql.build_schema(SDL)
    scalar = schema.type_map["DateTime"]
    assert isinstance(scalar, graphql.GraphQLScalarType)
    scalar.parse_value = _datetime_value  # type: ignore[method-assign]
    scalar.parse_literal = _datetime_literal  # type: ignore[method-assign,assignment]
    return schema


SCHEMA = build_forge_schema()


def gql_error(message: str, status: int = 400, error_type: str = "BAD_REQUEST") -> dict[str, Any]:
    """A top-level ``errors[]`` entry as the Gateway shapes it."""
    return {"message": message, "extensions": {"statusCode": status, "errorType": error_type}}


class ResolverError(graphql.GraphQLError):
    """An argument the schema accepts but the API refuses (raised inside the resolver)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"statusCode": 400, "errorType": "BAD_REQUEST"})


# --------------------------------------------------------------------------------------------
# Data
def app_sites(seed: int, app_id: str) -> list[str]:
    n = 2 + rng(seed, "forge-sites", app_id).randint(0, 1)
    return [
        f"ari:cloud:jira::site/{uuid.UUID(stable_id(seed, 'forge-site', app_id, i, length=32))}"
        for i in range(n)
    ]


def environment_id(seed: int, app_id: str, env: str) -> str:
    return str(uuid.UUID(stable_id(seed, "forge-env", app_id, env, length=32)))


def unit_of(resource: str) -> str:
    return UNITS.get(resource, "units")


def site_usage(
    seed: int, app_id: str, resource: str, day: date, site: str, n_sites: int = 1
) -> Decimal:
    """One site's tokens on ``day``. Function compute averages 3,500 GB-seconds a day per app
    (split over its sites): a 30-day month runs just over the free 100,000."""
    r = rng(seed, "forge-usage", app_id, resource, day, site)
    if resource == "FUNCTION_COMPUTE":
        value = Decimal(str(round(r.uniform(3000, 4000) / n_sites, 3)))
    else:
        value = Decimal(str(round(r.uniform(0.001, 0.05), 6)))
    return value.quantize(_Q)


def day_groups(
    seed: int, app_id: str, resource: str, day: date, sites: list[str], group_by: str | None
) -> list[tuple[str | None, Decimal]]:
    """(group value, tokens) for one day: one flat total, or one entry per site/environment."""
    per_site = [(s, site_usage(seed, app_id, resource, day, s, len(sites))) for s in sites]
    total = sum((q for _, q in per_site), Decimal(0))
    if group_by is None:
        return [(None, total)]
    if group_by == "CONTEXT_ARI":
        return [(s, q) for s, q in per_site]
    out: list[tuple[str | None, Decimal]] = []
    left = total
    for env, share in ENVIRONMENTS:
        q = left if share is None else (total * share).quantize(_Q)
        left -= q
        out.append((environment_id(seed, app_id, env), q))
    return out


def usage_items(
    seed: int,
    app_id: str,
    resource: str,
    days: list[date],
    context_aris: list[str] | None,
    group_by: str | None,
) -> list[dict[str, Any]]:
    """resourceUsage entries for ``days`` (flat when ``group_by`` is None)."""
    sites = list(context_aris) if context_aris else app_sites(seed, app_id)
    unit = unit_of(resource)
    items: list[dict[str, Any]] = []
    for d in days:
        groups = day_groups(seed, app_id, resource, d, sites, group_by)
        if group_by is None:
            items.append(
                {
                    "period": d.isoformat(),
                    "resolution": "ONE_DAY",
                    "tokensConsumed": f"{groups[0][1]:.6f}",
                    "tokenUnit": unit,
                }
            )
        else:
            items.append(
                {
                    "period": d.isoformat(),
                    "resolution": "ONE_DAY",
                    "groups": [
                        {
                            "groupBy": group_by,
                            "groupValue": g,
                            "tokensConsumed": f"{q:.6f}",
                            "tokenUnit": unit,
                        }
                        for g, q in groups
                    ],
                }
            )
    return items


def _take_queued(state: dict[str, Any], key: str) -> dict[str, Any] | None:
    queue = state.get(key) or []
    if not queue:
        return None
    item = queue[0]
    item["count"] = int(item.get("count", 1)) - 1
    if item["count"] <= 0:
        queue.pop(0)
    return item


# --------------------------------------------------------------------------------------------
# Execution
def _formatted(errors: list[graphql.GraphQLError], status: int, kind: str) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        item = dict(e.formatted)
        item["extensions"] = {"statusCode": status, "errorType": kind, **(e.extensions or {})}
        out.append(item)
    return out


def _alias_map(doc: graphql.DocumentNode) -> dict[str, str]:
    """alias → field name over the whole document (a naive server answers by name)."""
    aliases: dict[str, str] = {}

    class Collect(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_args: Any) -> None:
            if node.alias is not None:
                aliases[node.alias.value] = node.name.value

    graphql.visit(doc, Collect())
    return aliases


def _rename(value: Any, aliases: dict[str, str], drop: set[str]) -> Any:
    if isinstance(value, list):
        return [_rename(v, aliases, drop) for v in value]
    if isinstance(value, dict):
        return {
            aliases.get(k, k): _rename(v, aliases, drop) for k, v in value.items() if k not in drop
        }
    return value


def execute_operation(
    body: dict[str, Any], root: dict[str, Any], st: dict[str, Any]
) -> dict[str, Any]:
    """The GraphQL response body for a request body (``query``, ``variables``,
    ``operationName``): parse and validation errors as ``errors[]`` with no data, as a real
    server answers them."""
    try:
        doc = graphql.parse(body["query"])
    except graphql.GraphQLError as exc:
        return {"errors": _formatted([exc], 400, "GRAPHQL_PARSE_FAILED")}
    invalid = graphql.validate(SCHEMA, doc)
    if invalid:
        return {"errors": _formatted(invalid, 400, "GRAPHQL_VALIDATION_FAILED")}
    result = graphql.execute(
        SCHEMA,
        doc,
        root_value=root,
        variable_values=body.get("variables") or {},
        operation_name=body.get("operationName"),
    )
    if result.errors:
        out: dict[str, Any] = {"data": result.data}
        out["errors"] = _formatted(list(result.errors), 400, "BAD_REQUEST")
        return out
    data: Any = result.data
    if st.get("honour_aliases", True) is False or st.get("omit_typename"):
        aliases = _alias_map(doc) if st.get("honour_aliases", True) is False else {}
        data = _rename(data, aliases, {"__typename"} if st.get("omit_typename") else set())
    if st.get("bare_envelope"):
        console = ((data or {}).get("ecosystem") or {}).get("devConsole") or {}
        nodes = [v for v in console.values() if isinstance(v, dict)]
        if nodes:
            return nodes[0]
    return {"data": data}


def page_of(
    items: list[dict[str, Any]], page: int, page_size: int, counts: str
) -> list[dict[str, Any]]:
    """One page of resourceUsage entries: ``page_size`` periods, or (``counts == "rows"``)
    ``page_size`` (day, group) rows regrouped by period."""
    lo, hi = (page - 1) * page_size, page * page_size
    if counts == "periods" or not items or "groups" not in items[0]:
        return items[lo:hi]
    rows = [(item, g) for item in items for g in item["groups"]]
    out: list[dict[str, Any]] = []
    for item, group in rows[lo:hi]:
        if not out or out[-1]["period"] != item["period"]:
            out.append({**item, "groups": []})
        out[-1]["groups"].append(group)
    return out


def served_days(start: datetime, end: datetime, today: date, lookback: int | None) -> list[date]:
    """The days with data in [start, end]: from today − lookback through yesterday (an
    exclusive midnight end does not count)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    last = end.date()
    if end.time() == dt_time(0) and end > start:
        last -= timedelta(days=1)
    first = start.date()
    if lookback is not None:
        first = max(first, today - timedelta(days=int(lookback)))
    last = min(last, today - timedelta(days=1))
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _state(sb: Sandbox) -> dict[str, Any]:
    return sb.state.setdefault("forge", {})


def _rate_limited(sb: Sandbox, account: str) -> float | None:
    """Seconds until a slot frees when ``account`` is above the limit, else None (and the
    request is counted)."""
    with sb.lock:
        limit = _state(sb).get("rate_limit", DEFAULT_RATE_LIMIT)
        if not limit:
            return None
        window = float(limit["per_seconds"])
        now = time.monotonic()
        # accepted requests per account (kept in the state, so a reset clears them too)
        q = _state(sb).setdefault("_arrivals", {}).setdefault(account, deque())
        while q and q[0] <= now - window:
            q.popleft()
        if len(q) >= int(limit["max_requests"]):
            return q[0] + window - now
        q.append(now)
        return None


def _usage_resolver(sb: Sandbox) -> Callable[..., dict[str, Any]]:
    """The ``appResourceUsage`` resolver: the sandbox's answer for one app, filter and page."""

    def resolve_usage(
        _info: Any, appId: str, filters: dict[str, Any], groupBy: str | None = None
    ) -> dict[str, Any]:
        st = _state(sb)
        interval = filters["interval"]
        start, end = interval["start"], interval["end"]
        if end < start:
            raise ResolverError("filters.interval.end is before start")
        if not filters["resource"]:
            raise ResolverError("filters.resource is empty")
        page = filters.get("page")
        page = 1 if page is None else page
        if page < 1:
            raise ResolverError("filters.page must be an integer >= 1")
        aris = filters.get("contextAris") or []
        group_by = groupBy or ("CONTEXT_ARI" if aris else None)  # the API's automatic grouping
        typename = FLAT if group_by is None else GROUPED
        page_size = int(st.get("page_size", DEFAULT_PAGE_SIZE))
        pagination = {"page": page, "pageSize": page_size}
        with sb.lock:
            injected = _take_queued(st, "inband_errors")
        known = st.get("apps")
        if injected is None and known is not None and appId not in known:
            injected = {
                "statusCode": 404,
                "message": f"App {appId} not found or not owned by the caller",
                "errorType": "NOT_FOUND",
            }
        if injected is not None:
            return _inband_error(typename, pagination, injected)
        today = sb.now().astimezone(UTC).date()
        days = served_days(start, end, today, st.get("lookback_days", 60))
        items = usage_items(sb.seed, appId, filters["resource"], days, aris, group_by)
        counts = st.get("page_size_counts", "periods")
        if counts not in PAGE_SIZE_COUNTS:
            raise ValueError(f"sandbox knob page_size_counts must be one of {PAGE_SIZE_COUNTS}")
        return {
            "__typename": typename,
            "resourceUsage": page_of(items, page, page_size, counts),
            "pagination": pagination,
            "error": None,
        }

    return resolve_usage


def register(sb: Sandbox) -> None:
    root = {"ecosystem": {"devConsole": {"appResourceUsage": _usage_resolver(sb)}}}

    @sb.route("forge", "POST", "/forge/graphql/?")
    def handle(req: httpx.Request, _p: dict[str, str]) -> httpx.Response:
        account = _basic_email(req.headers.get("Authorization"), sb)
        if account is None:
            return json_response(
                401, {"message": "Unauthorized: basic auth with email and API token required"}
            )
        wait = _rate_limited(sb, account)
        if wait is not None:
            sb.record("forge", {"account": account, "status": 429, "t": time.time()})
            return json_response(
                429,
                {"errors": [gql_error("Rate limit exceeded", 429, "RATE_LIMITED")]},
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        try:
            body = json.loads(req.content or b"null")
        except ValueError:
            return json_response(400, {"errors": [{"message": "request body is not JSON"}]})
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return json_response(
                400, {"errors": [{"message": "request body needs a 'query' string"}]}
            )
        variables = body.get("variables") or {}
        entry = {
            "account": account,
            "operation": body.get("operationName"),
            "variables": variables,
            "user_agent": req.headers.get("User-Agent"),
            "experimental_api": req.headers.get("X-ExperimentalAPI"),
            "t": time.time(),
        }
        refused = _refuse(_state(sb), req, variables, sb)
        out = refused or execute_operation(body, root, _state(sb))
        errors = out.get("errors")
        sb.record(
            "forge",
            {
                **entry,
                "status": 200,
                **({"errors": [e["message"] for e in errors]} if errors else {}),
            },
        )
        return json_response(200, out)


def _refuse(
    st: dict[str, Any], req: httpx.Request, variables: Any, sb: Sandbox
) -> dict[str, Any] | None:
    """The top-level errors answered before execution: the experimental header, an injected
    error, variables that are not an object."""
    expected = st.get("experimental_api")
    header = req.headers.get("X-ExperimentalAPI")
    if not header or (expected is not None and header != expected):
        message = "appResourceUsage is experimental: pass the X-ExperimentalAPI header"
        return {"data": None, "errors": [gql_error(message, 400, "EXPERIMENTAL_API_REQUIRED")]}
    with sb.lock:
        injected = _take_queued(st, "graphql_errors")
    if injected is not None:
        error = gql_error(
            str(injected.get("message", "Internal server error")),
            int(injected.get("statusCode", 500)),
            str(injected.get("errorType", "INTERNAL_SERVER_ERROR")),
        )
        return {"data": None, "errors": [error]}
    if not isinstance(variables, dict):
        return {"data": None, "errors": [gql_error("'variables' must be an object")]}
    return None


def _inband_error(
    typename: str, pagination: dict[str, int], injected: dict[str, Any]
) -> dict[str, Any]:
    return {
        "__typename": typename,
        "resourceUsage": None,
        "pagination": pagination,
        "error": {
            "message": str(injected.get("message", "Internal server error")),
            "identifier": injected.get("identifier") or f"sandbox-{uuid.uuid4().hex[:8]}",
            "extensions": {
                "errorType": str(injected.get("errorType", "INTERNAL_SERVER_ERROR")),
                "statusCode": int(injected.get("statusCode", 500)),
            },
        },
    }


def _basic_email(header: str | None, sb: Sandbox) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        email, _, token = base64.b64decode(header[6:].strip()).decode().partition(":")
    except ValueError:
        return None
    if email != sb.API_KEYS["forge_email"] or token != sb.API_KEYS["forge"]:
        return None
    return email


def demo_usage(seed: int, settings: UsageSettings, day: date) -> list[UsageRow]:
    """The normalized rows the sandbox reports for the configured apps on ``day``: what the demo
    ledger is seeded from (sandbox/demo_ledger.py). Goes through the client's own parsing."""
    from usage_orchestration.providers.forge import ForgeClient, effective_group_by, normalize

    rows: list[UsageRow] = []
    for app in settings.forge.apps:
        group_by = effective_group_by(app)
        for resource in app.resources:
            items = usage_items(seed, app.app_id, resource, [day], app.context_aris, group_by)
            node = {
                "__typename": FLAT if group_by is None else GROUPED,
                "resourceUsage": items,
                "pagination": {"page": 1, "pageSize": DEFAULT_PAGE_SIZE},
                "error": None,
            }
            parsed = ForgeClient._parse(
                httpx.Response(200, json=node), app, f"app {app.app_id}", day.isoformat()
            )
            for point in ForgeClient._points(parsed, f"app {app.app_id}", day.isoformat()):
                rows.append(normalize(point, app, resource, settings.forge.account_id))
    return rows
