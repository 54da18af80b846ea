"""Atlassian Forge app resource usage through the GraphQL Gateway
(specs/forge-app-resource-usage.md, provider-notes.md).

One query asks for both response fragments (flat and grouped, told apart by ``__typename``),
because passing ``contextAris`` without ``groupBy`` makes the API group by itself. Errors are
checked in all three layers: HTTP status, top-level GraphQL ``errors[]`` (with HTTP 200), and the
in-band ``error {message identifier extensions {errorType statusCode}}``; 429 and 5xx in any layer
are retried. Pages (``filters.page``, 1-based) go until a page shorter than ``pageSize``, under a
page cap. A backfill range is one request series per (app, resource, grouping).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from usage_orchestration.providers.http import (
    PageGuard,
    ProviderClient,
    ProviderHttp,
    ProviderResponseError,
    RequestBudget,
    RetryPolicy,
    SharedRateBudget,
)
from usage_orchestration.providers.records import DayCoverage, FetchResult, UsageRow
from usage_orchestration.settings.forge import ForgeApp, ForgeSettings

PROVIDER = "forge"
USER_AGENT = "ForgeMetricsExportServer/1.0.0"
FLAT = "DevConsoleAppResourceUsageFlatResponse"
GROUPED = "DevConsoleAppResourceUsageGroupedResponse"

# Both fragments, each under its own alias so that their differently shaped ``resourceUsage``
# never conflict in GraphQL validation.
USAGE_QUERY = """
query ForgeAppResourceUsage(
  $appId: ID!
  $filters: DevConsoleAppResourceUsageFiltersInput!
  $groupBy: DevConsoleGroupBy
) {
  ecosystem {
    devConsole {
      appResourceUsage(appId: $appId, filters: $filters, groupBy: $groupBy) {
        __typename
        ... on DevConsoleAppResourceUsageFlatResponse {
          flatUsage: resourceUsage {
            period
            resolution
            tokensConsumed
            tokenUnit
          }
          pagination {
            page
            pageSize
          }
          error {
            message
            identifier
            extensions {
              errorType
              statusCode
            }
          }
        }
        ... on DevConsoleAppResourceUsageGroupedResponse {
          groupedUsage: resourceUsage {
            period
            resolution
            groups {
              groupBy
              groupValue
              tokensConsumed
              tokenUnit
            }
          }
          pagination {
            page
            pageSize
          }
          error {
            message
            identifier
            extensions {
              errorType
              statusCode
            }
          }
        }
      }
    }
  }
}
""".strip()


def _exact(v: Any) -> Any:
    # a JSON number would arrive as a float: go through str so 1.024 stays 1.024
    return str(v) if isinstance(v, float) else v


ExactDecimal = Annotated[Decimal, BeforeValidator(_exact), Field(allow_inf_nan=False)]


class ErrorExtensions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    errorType: str | None = None  # GraphQL field names, as the API spells them
    statusCode: int | None = None


class InbandError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str | None = None
    identifier: str | None = None
    extensions: ErrorExtensions | None = None


class Pagination(BaseModel):
    model_config = ConfigDict(extra="ignore")

    page: int
    pageSize: int = Field(ge=1)


class FlatUsage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    period: str
    resolution: str | None = None
    tokensConsumed: ExactDecimal
    tokenUnit: str = Field(min_length=1)


class UsageGroup(BaseModel):
    model_config = ConfigDict(extra="ignore")

    groupBy: str | None = None
    groupValue: str = Field(min_length=1)
    tokensConsumed: ExactDecimal
    tokenUnit: str = Field(min_length=1)


class GroupedUsage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    period: str
    resolution: str | None = None
    groups: list[UsageGroup]


class UsageResponse(BaseModel):
    """``appResourceUsage``: one of the two fragments, by ``__typename``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    typename: Literal[
        "DevConsoleAppResourceUsageFlatResponse", "DevConsoleAppResourceUsageGroupedResponse"
    ] = Field(alias="__typename")
    flatUsage: list[FlatUsage] | None = None
    groupedUsage: list[GroupedUsage] | None = None
    pagination: Pagination | None = None
    error: InbandError | None = None

    @property
    def items(self) -> list[FlatUsage] | list[GroupedUsage]:
        if self.typename == FLAT:
            return self.flatUsage or []
        return self.groupedUsage or []


class UsagePoint(BaseModel):
    """One reported quantity: a day, and the group when the response was grouped."""

    model_config = ConfigDict(frozen=True)

    period: str
    day: date
    resolution: str | None
    group_by: str | None
    group_value: str | None
    quantity: Decimal
    unit: str


def _retryable(status: int | None) -> bool:
    return status is not None and (status == 429 or 500 <= status <= 599)


def _usage_node(body: Any) -> Any:
    node = body.get("data") if isinstance(body, dict) else None
    for key in ("ecosystem", "devConsole", "appResourceUsage"):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def graphql_error(response: httpx.Response) -> tuple[bool, str] | None:
    """The GraphQL-level error of a 2xx response: top-level ``errors[]`` or the in-band
    ``appResourceUsage.error``; ``(retryable, message)`` or None. A body that is not JSON is left
    to the parser, which names the problem."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if errors:
        items = errors if isinstance(errors, list) else [errors]
        msgs: list[str] = []
        retry = False
        for e in items[:5]:
            if not isinstance(e, dict):
                msgs.append(str(e)[:200])
                continue
            ext = e.get("extensions") if isinstance(e.get("extensions"), dict) else {}
            status = ext.get("statusCode")
            status = status if isinstance(status, int) else None
            retry = retry or _retryable(status)
            kind = ext.get("errorType") or ext.get("classification") or ext.get("code")
            extra = ", ".join(
                str(x) for x in (kind, f"statusCode {status}" if status else None) if x
            )
            msgs.append(
                f"{str(e.get('message') or 'error')[:200]}{' (' + extra + ')' if extra else ''}"
            )
        return retry, "GraphQL errors: " + "; ".join(msgs)
    node = _usage_node(body)
    if isinstance(node, dict) and isinstance(node.get("error"), dict):
        err = InbandError.model_validate(node["error"])
        ext = err.extensions or ErrorExtensions()
        detail = ", ".join(
            x
            for x in (
                ext.errorType,
                f"statusCode {ext.statusCode}" if ext.statusCode is not None else None,
                f"identifier {err.identifier}" if err.identifier else None,
            )
            if x
        )
        return _retryable(ext.statusCode), (
            f"appResourceUsage error: {err.message or 'unknown error'}{' (' + detail + ')' if detail else ''}"
        )
    return None


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_day(period: str) -> date:
    """``period`` ("2025-09-01", or a date-time) → the UTC day it starts."""
    try:
        if len(period) == 10:
            return date.fromisoformat(period)
        dt = datetime.fromisoformat(period.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"period {period[:40]!r} is not a date") from None
    return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)).date()


def effective_group_by(app: ForgeApp) -> str | None:
    """What the API groups by: the configured group_by, or CONTEXT_ARI when context ARIs are
    given without one (the API's automatic grouping)."""
    return app.group_by or ("CONTEXT_ARI" if app.context_aris else None)


def coverage_account(app_id: str, resource: str) -> str:
    """provider_coverage.account_id of one Forge request series: app and resource."""
    return f"{app_id}|{resource}"


def source_key(
    app_id: str, resource: str, period: str, group_by: str | None, group_value: str | None
) -> str:
    group = f"{group_by or ''}={group_value}" if group_value is not None else "-"
    return f"{app_id}|{resource}|{period}|{group}"


class ForgeClient(ProviderClient):
    """Fetches and normalizes Forge app resource usage over windows of whole UTC days."""

    def __init__(
        self,
        base_url: str,
        email: str,
        api_token: str,
        *,
        experimental_api: str,
        account_id: str,
        user_agent: str = USER_AGENT,
        max_pages: int = 100,
        lookback_days: int | None = 60,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        today: Callable[[], date] | None = None,
    ) -> None:
        if not email or not api_token:
            raise ValueError(
                "forge: the email or the API token is empty; set FORGE_EMAIL and FORGE_API_TOKEN"
            )
        url = httpx.URL(base_url)
        self.path = url.raw_path.decode() or "/"
        origin = str(url.copy_with(raw_path=b"/", query=None, fragment=None)).rstrip("/")
        self.account_id = account_id
        self.max_pages = max_pages
        self.lookback_days = lookback_days
        self._today = today or (lambda: datetime.now(UTC).date())
        kwargs: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        self.http = ProviderHttp(
            PROVIDER,
            origin,
            headers={
                "X-ExperimentalAPI": experimental_api,
                "User-Agent": user_agent,
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
            auth=httpx.BasicAuth(email, api_token),
            timeout_s=timeout_s,
            retry=retry,
            budget=budget,
            retry_statuses={429, 500, 502, 503, 504},
            transport=transport,
            secrets=[api_token],
            **kwargs,
        )

    @staticmethod
    def variables(
        app: ForgeApp, resource: str, start: date, end_inclusive: date, page: int
    ) -> dict[str, Any]:
        filters: dict[str, Any] = {
            "resource": resource,
            "interval": {
                "start": _iso(datetime.combine(start, time(0), tzinfo=UTC)),
                "end": _iso(datetime.combine(end_inclusive, time(23, 59, 59), tzinfo=UTC)),
            },
            "page": page,
        }
        if app.context_aris:
            filters["contextAris"] = list(app.context_aris)
        out: dict[str, Any] = {"appId": app.app_id, "filters": filters}
        if app.group_by:
            out["groupBy"] = app.group_by
        return out

    def fetch_usage(
        self, app: ForgeApp, resource: str, start: date, end_inclusive: date
    ) -> list[UsagePoint]:
        """Every usage point of (app, resource) from ``start`` through ``end_inclusive``: one
        request series, paged to a short page."""
        window = f"resource {resource}, interval {start.isoformat()}..{end_inclusive.isoformat()}"
        account = f"app {app.app_id}"
        guard = PageGuard(PROVIDER, self.max_pages, account=account, window=window)
        points: dict[tuple[str, str | None], UsagePoint] = {}
        page = 1
        while True:
            guard.visit(page)
            response = self.http.request(
                "POST",
                self.path,
                json_body={
                    "operationName": "ForgeAppResourceUsage",
                    "query": USAGE_QUERY,
                    "variables": self.variables(app, resource, start, end_inclusive, page),
                },
                account=account,
                window=f"{window}, page {page}",
                inband_error=graphql_error,
            )
            parsed = self._parse(response, account, f"{window}, page {page}")
            if parsed.pagination is None:
                raise ProviderResponseError(
                    PROVIDER,
                    "response has no pagination",
                    account=account,
                    window=f"{window}, page {page}",
                )
            if parsed.pagination.page != page:
                raise ProviderResponseError(
                    PROVIDER,
                    f"asked for page {page}, got page {parsed.pagination.page}",
                    account=account,
                    window=window,
                )
            for point in self._points(parsed, account, f"{window}, page {page}"):
                key = (point.period, point.group_value)
                seen = points.get(key)
                if seen is not None and seen.quantity != point.quantity:
                    raise ProviderResponseError(
                        PROVIDER,
                        f"period {point.period} group {point.group_value!r} reported twice with "
                        f"different tokensConsumed ({seen.quantity} and {point.quantity})",
                        account=account,
                        window=window,
                    )
                points[key] = point
            if len(parsed.items) < parsed.pagination.pageSize:
                break
            page += 1
        return list(points.values())

    @staticmethod
    def _parse(response: httpx.Response, account: str, window: str) -> UsageResponse:
        try:
            body = response.json()
        except ValueError:
            raise ProviderResponseError(
                PROVIDER, "response is not JSON", account=account, window=window
            ) from None
        node = _usage_node(body)
        if not isinstance(node, dict):
            raise ProviderResponseError(
                PROVIDER,
                "response has no data.ecosystem.devConsole.appResourceUsage object",
                account=account,
                window=window,
            )
        try:
            return UsageResponse.model_validate(node)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ProviderResponseError(
                PROVIDER,
                f"malformed appResourceUsage: field {where!r}: {first['msg']} ({exc.error_count()} problem(s))",
                account=account,
                window=window,
            ) from None

    @staticmethod
    def _points(parsed: UsageResponse, account: str, window: str) -> list[UsagePoint]:
        out: list[UsagePoint] = []

        def day_of(period: str, resolution: str | None) -> date:
            if resolution not in (None, "ONE_DAY"):
                raise ProviderResponseError(
                    PROVIDER,
                    f"field 'resolution' is {resolution!r} for period {period!r}; only ONE_DAY maps to a day",
                    account=account,
                    window=window,
                )
            try:
                return period_day(period)
            except ValueError as exc:
                raise ProviderResponseError(
                    PROVIDER, f"field 'period': {exc}", account=account, window=window
                ) from None

        if parsed.typename == FLAT:
            for f in parsed.flatUsage or []:
                out.append(
                    UsagePoint(
                        period=f.period,
                        day=day_of(f.period, f.resolution),
                        resolution=f.resolution,
                        group_by=None,
                        group_value=None,
                        quantity=f.tokensConsumed,
                        unit=f.tokenUnit,
                    )
                )
        else:
            for g in parsed.groupedUsage or []:
                d = day_of(g.period, g.resolution)
                for grp in g.groups:
                    out.append(
                        UsagePoint(
                            period=g.period,
                            day=d,
                            resolution=g.resolution,
                            group_by=grp.groupBy,
                            group_value=grp.groupValue,
                            quantity=grp.tokensConsumed,
                            unit=grp.tokenUnit,
                        )
                    )
        return out

    def available(self, day: date) -> bool:
        """Whether ``day`` is inside the API's lookback (the console covers the last N days)."""
        if self.lookback_days is None:
            return True
        return day >= self._today() - timedelta(days=self.lookback_days)

    def fetch_days(self, apps: Sequence[ForgeApp], days: Sequence[date]) -> FetchResult:
        """Rows and coverage for every (app, resource) and every day in ``days``: one request
        series per (app, resource) over the span of the available days."""
        if not days:
            return FetchResult(rows=[], coverage=[])
        wanted = set(days)
        fetchable = sorted(d for d in wanted if self.available(d))
        rows: list[UsageRow] = []
        coverage: list[DayCoverage] = []
        for app in apps:
            for resource in app.resources:
                acct = coverage_account(app.app_id, resource)
                per_day: dict[date, int] = dict.fromkeys(fetchable, 0)
                if fetchable:
                    for point in self.fetch_usage(app, resource, fetchable[0], fetchable[-1]):
                        if point.day not in per_day:
                            continue
                        rows.append(normalize(point, app, resource, self.account_id))
                        per_day[point.day] += 1
                coverage += [
                    DayCoverage(
                        provider=PROVIDER,
                        account_id=acct,
                        usage_date=d,
                        status="complete",
                        row_count=n,
                    )
                    for d, n in sorted(per_day.items())
                ]
                coverage += [
                    DayCoverage(
                        provider=PROVIDER,
                        account_id=acct,
                        usage_date=d,
                        status="unavailable",
                        reason=f"outside the API's {self.lookback_days}-day lookback",
                    )
                    for d in sorted(wanted - set(fetchable))
                ]
        return FetchResult(
            rows=rows,
            coverage=coverage,
            requests=self.http.stats.requests,
            retries=self.http.stats.retries,
        )


def normalize(point: UsagePoint, app: ForgeApp, resource: str, account_id: str) -> UsageRow:
    start = datetime.combine(point.day, time(0), tzinfo=UTC)
    details = {"period": point.period, "resolution": point.resolution}
    if point.group_value is not None:
        details["group_by"] = point.group_by
    return UsageRow(
        provider=PROVIDER,
        billing_account_id=account_id,
        resource_id=app.app_id,
        resource_name=app.name,
        sub_account_id=point.group_value,
        metric=resource,
        charge_period_start=start,
        charge_period_end=start + timedelta(days=1),
        usage_date=point.day,
        consumed_quantity=point.quantity,
        consumed_unit=point.unit,
        raw_quantity=point.quantity,
        raw_unit=point.unit,
        billed_cost=None,
        billing_currency=None,
        source_key=source_key(
            app.app_id, resource, point.period, point.group_by, point.group_value
        ),
        details=json.dumps(details, sort_keys=True),
    )


def budget_path(state_dir: str | Path, account_id: str) -> Path:
    """The request-budget file every process using ``account_id`` shares."""
    return Path(state_dir) / f"forge-requests-{account_id}.json"


def client_from_settings(
    settings: ForgeSettings,
    email: str,
    api_token: str,
    state_dir: str | Path,
    *,
    transport: httpx.BaseTransport | None = None,
    today: Callable[[], date] | None = None,
) -> ForgeClient:
    """A client with the settings' policy and the cross-process request budget of the account
    (``rate_limit_max_requests`` per ``rate_limit_per_seconds`` plus the safety margin)."""
    budget = SharedRateBudget(
        budget_path(state_dir, settings.account_id),
        settings.rate_limit_max_requests,
        settings.rate_limit_per_seconds + settings.rate_limit_margin_s,
    )
    return ForgeClient(
        settings.base_url,
        email,
        api_token,
        experimental_api=settings.experimental_api,
        account_id=settings.account_id,
        user_agent=settings.user_agent,
        max_pages=settings.max_pages,
        lookback_days=settings.lookback_days,
        timeout_s=settings.timeout_s,
        retry=RetryPolicy(
            max_attempts=settings.max_attempts, retry_after_cap_s=settings.retry_after_cap_s
        ),
        budget=budget,
        transport=transport,
        today=today,
    )
