"""Atlassian Forge app resource usage through the GraphQL Gateway
(specs/forge-app-resource-usage.md, provider-notes.md).

One query asks for both response fragments (flat and grouped, told apart by ``__typename``),
because passing ``contextAris`` without ``groupBy`` makes the API group by itself. Errors are
checked in all three layers: HTTP status, top-level GraphQL ``errors[]`` (with HTTP 200), and the
in-band ``error {message identifier extensions {errorType statusCode}}``; 429 and 5xx in any layer
are retried. A backfill range is one request series per (app, resource, grouping).

Readings the contract leaves open, all tolerated:
- the list arrives under the alias the query asked for or under ``resourceUsage`` (servers that
  ignore aliases); ``__typename`` may be missing (inferred from the shape); the answer may be the
  bare appResourceUsage object (the document's sample) instead of the GraphQL envelope;
- ``pageSize`` may count periods or grouped rows: pages (``filters.page``, 1-based) go on while a
  page is full by either count, under a page cap; a day split over two pages is merged. A page
  asked for only because the last was full by one count (a probe) may be refused with an
  in-band 4xx or answered with the last page again: the series has ended.
A missing or null list or pagination is an error, never zero usage, and a day is ``complete``
only when the answer had a period entry for it.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Unpack

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from usage_orchestration.core.dates import as_utc, day_bounds, iso_utc, utc_midnight
from usage_orchestration.providers.http import (
    HttpOptions,
    PageGuard,
    ProviderClient,
    ProviderHttp,
    ProviderResponseError,
    RequestBudgets,
    RetryPolicy,
    body_json,
)
from usage_orchestration.providers.policy import account_budget, schema_problem
from usage_orchestration.providers.records import (
    CoverageStatus,
    DayCoverage,
    FetchResult,
    UsageRow,
)
from usage_orchestration.settings.forge import ForgeApp, ForgeSettings

PROVIDER = "forge"
USER_AGENT = "ForgeMetricsExportServer/1.0.0"
FLAT = "DevConsoleAppResourceUsageFlatResponse"
GROUPED = "DevConsoleAppResourceUsageGroupedResponse"

# Both fragments, each under its own alias so that their differently shaped ``resourceUsage``
# never conflict in GraphQL validation. The pagination and error selections are spelled out in
# each fragment rather than shared as named fragments: a named fragment needs its type's name,
# and the Gateway does not publish the names of those types (only the two response types).
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
          pagination { page pageSize }
          error { message identifier extensions { errorType statusCode } }
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
          pagination { page pageSize }
          error { message identifier extensions { errorType statusCode } }
        }
      }
    }
  }
}
""".strip()


def _exact(v: Any) -> Any:
    # A JSON number arrives as a float: go through str so 1.024 stays 1.024. Booleans and
    # objects are refused here (pydantic would not say "tokensConsumed" otherwise).
    if isinstance(v, bool) or not isinstance(v, str | int | float | Decimal):
        raise ValueError(f"expected a decimal string, got {type(v).__name__}")
    return str(v) if isinstance(v, float) else v


# Usage is never negative; NaN/Infinity are not quantities.
ExactDecimal = Annotated[Decimal, BeforeValidator(_exact), Field(allow_inf_nan=False, ge=0)]


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

    page: int = Field(strict=True, ge=1)
    pageSize: int = Field(strict=True, ge=1)


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
    """``appResourceUsage`` after ``locate_usage``: the fragment and its list under the alias
    the query asked for, and the pagination (both required: a missing list is never zero)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    typename: Literal[
        "DevConsoleAppResourceUsageFlatResponse", "DevConsoleAppResourceUsageGroupedResponse"
    ] = Field(alias="__typename")
    flatUsage: list[FlatUsage] | None = None
    groupedUsage: list[GroupedUsage] | None = None
    pagination: Pagination
    error: InbandError | None = None

    @property
    def items(self) -> list[FlatUsage] | list[GroupedUsage]:
        if self.typename == FLAT:
            return self.flatUsage or []
        return self.groupedUsage or []

    @property
    def row_count(self) -> int:
        """Grouped rows (site x day) on the page; one per period when flat."""
        if self.typename == FLAT:
            return len(self.flatUsage or [])
        return sum(len(g.groups) for g in self.groupedUsage or [])


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


class SeriesUsage(BaseModel):
    """What one request series answered: its points and the days it had a period entry for
    (a reported day with no usage is covered; a day with no entry is not)."""

    points: list[UsagePoint]
    reported_days: set[date]
    pages: int


def _retryable(status: int | None) -> bool:
    return status is not None and (status == 429 or 500 <= status <= 599)


_NODE_KEYS = ("resourceUsage", "flatUsage", "groupedUsage", "pagination", "error", "__typename")


def _usage_node(body: Any) -> Any:
    """The appResourceUsage object: under the GraphQL envelope ``data.ecosystem.devConsole``
    (INFERRED by the notes) or bare, as the document's sample response shows."""
    if not isinstance(body, dict):
        return None
    if "data" not in body and any(k in body for k in _NODE_KEYS):
        return body
    node = body.get("data")
    for key in ("ecosystem", "devConsole", "appResourceUsage"):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


# Where each fragment's list may be: the alias the query asked for, or the field's own name
# (servers and fakes that ignore aliases).
_LIST_KEYS: dict[str | None, tuple[str, ...]] = {
    FLAT: ("flatUsage", "resourceUsage"),
    GROUPED: ("groupedUsage", "resourceUsage"),
    None: ("flatUsage", "groupedUsage", "resourceUsage"),
}


def _infer_typename(key: str, items: Any, grouped_requested: bool) -> str:
    """The fragment of an answer without ``__typename``: by alias, else by shape, else (an
    empty list) by what was requested."""
    if key != "resourceUsage":
        return FLAT if key == "flatUsage" else GROUPED
    if isinstance(items, list) and items:
        return GROUPED if any(isinstance(i, dict) and "groups" in i for i in items) else FLAT
    return GROUPED if grouped_requested else FLAT


def locate_usage(node: dict[str, Any], grouped_requested: bool) -> dict[str, Any]:
    """``node`` reshaped for ``UsageResponse``: the list moved under its fragment's alias and
    ``__typename`` inferred when absent. Raises ``ValueError`` when the list is absent or null."""
    typename = node.get("__typename")
    keys = _LIST_KEYS.get(typename, ())
    if typename is not None and not keys:
        raise ValueError(f"unknown __typename {str(typename)[:80]!r}")
    found = next(((k, node[k]) for k in keys if node.get(k) is not None), None)
    if found is None:
        raise ValueError(
            "appResourceUsage has no usage list (resourceUsage absent or null); "
            "an unreadable answer is not zero usage"
        )
    key, items = found
    typename = typename or _infer_typename(key, items, grouped_requested)
    alias = "flatUsage" if typename == FLAT else "groupedUsage"
    return {
        "__typename": typename,
        alias: items,
        "pagination": node.get("pagination"),
        "error": node.get("error"),
    }


def _answer_errors(response: httpx.Response) -> tuple[Any, dict[str, Any] | None]:
    """(top-level ``errors``, in-band ``appResourceUsage.error`` object) of a 2xx answer, each
    None when absent; both None for a body that is not a JSON object (left to the parser)."""
    try:
        body = body_json(response)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    node = _usage_node(body)
    inband = node.get("error") if isinstance(node, dict) else None
    return body.get("errors"), inband if isinstance(inband, dict) else None


def graphql_error(response: httpx.Response) -> tuple[bool, str] | None:
    """The GraphQL-level error of a 2xx response: top-level ``errors[]`` or the in-band
    ``appResourceUsage.error``; ``(retryable, message)`` or None. A body that is not JSON is left
    to the parser, which names the problem."""
    errors, inband = _answer_errors(response)
    if errors:
        return _top_level_errors(errors)
    if inband is not None:
        err = InbandError.model_validate(inband)
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


def _error_statuses(response: httpx.Response) -> list[int | None]:
    """``extensions.statusCode`` of each GraphQL error of the answer (top-level ``errors[]``,
    else the in-band error); empty when it reports none."""
    errors, inband = _answer_errors(response)
    if errors:
        items = errors if isinstance(errors, list) else [errors]
    else:
        items = [inband] if inband is not None else []
    out: list[int | None] = []
    for e in items:
        ext = e.get("extensions") if isinstance(e, dict) else None
        status = ext.get("statusCode") if isinstance(ext, dict) else None
        out.append(status if isinstance(status, int) and not isinstance(status, bool) else None)
    return out


def refuses_page(response: httpx.Response) -> bool:
    """Whether the answer's GraphQL errors are all client errors (4xx other than 429), e.g.
    "page out of range": how a server may answer a page past its last one."""
    statuses = _error_statuses(response)
    return bool(statuses) and all(s is not None and 400 <= s <= 499 and s != 429 for s in statuses)


def _probe_error(response: httpx.Response) -> tuple[bool, str] | None:
    """``graphql_error`` for a probe page, on which a client error is the end of the series
    (left to the caller), not a failure; 429 and 5xx are retried as on any page."""
    return None if refuses_page(response) else graphql_error(response)


def _top_level_errors(errors: Any) -> tuple[bool, str]:
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
        extra = ", ".join(str(x) for x in (kind, f"statusCode {status}" if status else None) if x)
        msgs.append(
            f"{str(e.get('message') or 'error')[:200]}{' (' + extra + ')' if extra else ''}"
        )
    return retry, "GraphQL errors: " + "; ".join(msgs)


def _basic_credentials(email: str, api_token: str) -> str:
    """The base64 ``email:token`` of the basic-auth header (masked like the token itself)."""
    return base64.b64encode(f"{email}:{api_token}".encode()).decode() if email and api_token else ""


def period_day(period: str) -> date:
    """``period`` ("2025-09-01", or a date-time at midnight UTC) → its UTC day. A date-time
    at any other instant does not name one day: refused rather than mis-dated."""
    try:
        if len(period) == 10:
            return date.fromisoformat(period)
        dt = datetime.fromisoformat(period.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"period {period[:40]!r} is not a date") from None
    dt = as_utc(dt)
    if dt.time() != time(0):
        raise ValueError(f"period {period[:40]!r} is not midnight UTC, so not one day")
    return dt.date()


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


def page_fullness(parsed: UsageResponse) -> tuple[bool, bool]:
    """(full counting periods, full counting grouped rows). ``pageSize`` may count either (the
    contract does not say): full by EITHER means another page may follow; an empty page is
    full by neither and ends."""
    if not parsed.items:
        return False, False
    size = parsed.pagination.pageSize
    return len(parsed.items) >= size, parsed.row_count >= size


def no_period_reason(app_id: str, resource: str) -> str:
    return (
        f"no period in Forge's answer for app {app_id} resource {resource}; "
        "Forge refreshes usage daily at 12:00 UTC"
    )


class _Series:
    """The merge of one request series' pages: points by (period, group), identical
    duplicates dropped, conflicting ones and a page that only repeats earlier ones refused."""

    def __init__(self, account: str, window: str) -> None:
        self.account = account
        self.window = window
        # keyed by day, not period text: "2026-03-01" and "2026-03-01T00:00:00Z" are one day
        self.points: dict[tuple[date, str | None], UsagePoint] = {}
        self.days: set[date] = set()

    def fail(self, message: str, page: int) -> ProviderResponseError:
        return ProviderResponseError(
            PROVIDER, message, account=self.account, window=f"{self.window}, page {page}"
        )

    def add(self, parsed: UsageResponse, points: list[UsagePoint], page: int) -> None:
        days = {period_day(i.period) for i in parsed.items}  # valid: _points checked them
        keys = {(p.day, p.group_value) for p in points}
        if page > 1 and parsed.items and days <= self.days and keys <= set(self.points):
            raise self.fail(
                "the page only repeats periods of earlier pages (the server ignores "
                "filters.page?); refusing to loop",
                page,
            )
        for point in points:
            key = (point.day, point.group_value)
            seen = self.points.get(key)
            if seen is not None and (seen.quantity, seen.unit) != (point.quantity, point.unit):
                raise self.fail(
                    f"period {point.period} group {point.group_value!r} reported twice with "
                    f"different tokensConsumed ({seen.quantity} {seen.unit} and "
                    f"{point.quantity} {point.unit})",
                    page,
                )
            self.points[key] = point
        self.days |= days


class ForgeClient(ProviderClient):
    """Fetches and normalizes Forge app resource usage over windows of whole UTC days."""

    SETTINGS_OPTIONS = (
        "experimental_api",
        "account_id",
        "user_agent",
        "max_pages",
        "lookback_days",
        "timeout_s",
    )

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
        today: Callable[[], date] | None = None,
        **http: Unpack[HttpOptions],
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
            # the email is a secret too (README), and both travel base64-encoded in the header
            secrets=[api_token, email, _basic_credentials(email, api_token)],
            **http,
        )

    @staticmethod
    def variables(
        app: ForgeApp, resource: str, start: date, end_inclusive: date, page: int
    ) -> dict[str, Any]:
        filters: dict[str, Any] = {
            "resource": resource,
            "interval": {
                "start": iso_utc(utc_midnight(start)),
                "end": iso_utc(datetime.combine(end_inclusive, time(23, 59, 59), tzinfo=UTC)),
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
    ) -> SeriesUsage:
        """Every usage point of (app, resource) from ``start`` through ``end_inclusive``: one
        request series, paged while a page is full by either reading of ``pageSize``."""
        window = f"resource {resource}, interval {start.isoformat()}..{end_inclusive.isoformat()}"
        account = f"app {app.app_id}"
        guard = PageGuard(PROVIDER, self.max_pages, account=account, window=window)
        series = _Series(account, window)
        page = 1
        # The previous page's items when it was full by one count only: this page is then a
        # probe the contract does not owe (pageSize counting periods, it was the last), and a
        # server may refuse it (an in-band 4xx) or answer its last page again: both end the
        # series. After a page full by both counts, either is an error as before.
        probe_of: list[FlatUsage] | list[GroupedUsage] | None = None
        while True:
            guard.visit(page)
            where = f"{window}, page {page}"
            response = self.http.request(
                "POST",
                self.path,
                json_body={
                    "operationName": "ForgeAppResourceUsage",
                    "query": USAGE_QUERY,
                    "variables": self.variables(app, resource, start, end_inclusive, page),
                },
                account=account,
                window=where,
                inband_error=_probe_error if probe_of is not None else graphql_error,
            )
            if probe_of is not None and refuses_page(response):
                break
            parsed = self._parse(response, app, account, where)
            if probe_of is not None and parsed.items == probe_of:
                break  # the last page again (as the page asked for or as the one before)
            if parsed.pagination.page != page:
                raise series.fail(f"asked for page {page}, got page {parsed.pagination.page}", page)
            points = self._points(parsed, account, where, (start, end_inclusive))
            series.add(parsed, points, page)
            by_periods, by_rows = page_fullness(parsed)
            if not (by_periods or by_rows):
                break
            probe_of = None if by_periods and by_rows else parsed.items
            page += 1
        return SeriesUsage(
            points=list(series.points.values()), reported_days=series.days, pages=guard.pages
        )

    @staticmethod
    def _parse(response: httpx.Response, app: ForgeApp, account: str, window: str) -> UsageResponse:
        def fail(message: str) -> ProviderResponseError:
            return ProviderResponseError(PROVIDER, message, account=account, window=window)

        try:
            body = body_json(response)
        except ValueError:
            raise fail("response is not JSON") from None
        node = _usage_node(body)
        if not isinstance(node, dict):
            raise fail(
                "response has no appResourceUsage object (neither under "
                "data.ecosystem.devConsole nor bare); an unreadable answer is not zero usage"
            )
        try:
            located = locate_usage(node, effective_group_by(app) is not None)
        except ValueError as exc:
            raise fail(str(exc)) from None
        if located.get("pagination") is None:
            raise fail("appResourceUsage has no pagination (absent or null)")
        try:
            parsed = UsageResponse.model_validate(located)
        except ValidationError as exc:
            raise fail(f"malformed appResourceUsage: {schema_problem(exc)}") from None
        if app.group_by and parsed.typename == FLAT:
            raise fail(f"asked for groupBy {app.group_by}, got the flat fragment")
        return parsed

    @staticmethod
    def _points(
        parsed: UsageResponse, account: str, window: str, interval: tuple[date, date] | None = None
    ) -> list[UsagePoint]:
        """The page's usage points; every period must name one day of ``interval``."""

        def day_of(period: str, resolution: str | None) -> date:
            def fail(message: str) -> ProviderResponseError:
                return ProviderResponseError(PROVIDER, message, account=account, window=window)

            if resolution not in (None, "ONE_DAY"):
                raise fail(
                    f"field 'resolution' is {resolution!r} for period {period!r}; only ONE_DAY "
                    "maps to a day"
                )
            try:
                day = period_day(period)
            except ValueError as exc:
                raise fail(f"field 'period': {exc}") from None
            if interval is not None and not interval[0] <= day <= interval[1]:
                raise fail(f"field 'period': {period!r} is outside the requested interval")
            return day

        out: list[UsagePoint] = []
        for item in parsed.items:
            d = day_of(item.period, item.resolution)
            # (group_by, group_value, quantity) of each reading: a flat period is one, ungrouped
            readings: list[tuple[str | None, str | None, FlatUsage | UsageGroup]] = (
                [(None, None, item)]
                if isinstance(item, FlatUsage)
                else [(g.groupBy, g.groupValue, g) for g in item.groups]
            )
            out += [
                UsagePoint(
                    period=item.period,
                    day=d,
                    resolution=item.resolution,
                    group_by=group_by,
                    group_value=group_value,
                    quantity=usage.tokensConsumed,
                    unit=usage.tokenUnit,
                )
                for group_by, group_value, usage in readings
            ]
        return out

    def available(self, day: date) -> bool:
        """Whether ``day`` is inside the API's lookback (the console covers the last N days)."""
        if self.lookback_days is None:
            return True
        return day >= self._today() - timedelta(days=self.lookback_days)

    def fetch_days(self, apps: Sequence[ForgeApp], days: Sequence[date]) -> FetchResult:
        """Rows and coverage for every (app, resource) and every day in ``days``: one request
        series per (app, resource) over the span of the available days. A day is complete only
        when the answer had a period entry for it."""
        if not days:
            return FetchResult(rows=[], coverage=[])
        wanted = set(days)
        fetchable = sorted(d for d in wanted if self.available(d))
        rows: list[UsageRow] = []
        coverage: list[DayCoverage] = []
        for app in apps:
            for resource in app.resources:
                series = (
                    self.fetch_usage(app, resource, fetchable[0], fetchable[-1])
                    if fetchable
                    else SeriesUsage(points=[], reported_days=set(), pages=0)
                )
                app_rows = [
                    normalize(p, app, resource, self.account_id)
                    for p in series.points
                    if p.day in wanted  # the span may hold days not asked for
                ]
                rows += app_rows
                coverage += self._coverage(app, resource, wanted, fetchable, series, app_rows)
        return self.result(rows, coverage)

    def _coverage(
        self,
        app: ForgeApp,
        resource: str,
        wanted: set[date],
        fetchable: list[date],
        series: SeriesUsage,
        rows: list[UsageRow],
    ) -> list[DayCoverage]:
        acct = coverage_account(app.app_id, resource)
        counts = Counter(r.usage_date for r in rows)

        def day(d: date, status: CoverageStatus, reason: str | None) -> DayCoverage:
            return DayCoverage(PROVIDER, acct, d, status, reason, counts[d])

        out: list[DayCoverage] = []
        for d in fetchable:
            if d in series.reported_days:
                out.append(day(d, "complete", None))
            else:
                out.append(day(d, "unavailable", no_period_reason(app.app_id, resource)))
        lookback = f"outside the API's {self.lookback_days}-day lookback"
        out += [day(d, "unavailable", lookback) for d in sorted(wanted - set(fetchable))]
        return out


def normalize(point: UsagePoint, app: ForgeApp, resource: str, account_id: str) -> UsageRow:
    start, end = day_bounds(point.day, point.day)
    details = {"period": point.period, "resolution": point.resolution}
    if point.group_value is not None:
        details["group_by"] = point.group_by
    # no billed_cost: Forge reports tokens, never a price
    return UsageRow(
        provider=PROVIDER,
        billing_account_id=account_id,
        resource_id=app.app_id,
        resource_name=app.name,
        sub_account_id=point.group_value,
        metric=resource,
        charge_period_start=start,
        charge_period_end=end,
        usage_date=point.day,
        consumed_quantity=point.quantity,
        consumed_unit=point.unit,
        raw_quantity=point.quantity,
        raw_unit=point.unit,
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
    budgets: RequestBudgets | None = None,
) -> ForgeClient:
    """A client with the settings' policy and the cross-process request budget of the account
    (``rate_limit_max_requests`` per ``rate_limit_per_seconds`` plus the safety margin): drawn
    from ``budgets`` when given (e.g. the warehouse's), else the file under ``state_dir``."""
    budget = account_budget(
        PROVIDER,
        settings.account_id,
        settings.rate_limit_max_requests,
        settings.rate_limit_per_seconds + settings.rate_limit_margin_s,
        budgets=budgets,
        path=budget_path(state_dir, settings.account_id),
    )
    return ForgeClient(
        settings.base_url,
        email,
        api_token,
        **ForgeClient.settings_options(settings),
        retry=RetryPolicy.of(settings),
        budget=budget,
        transport=transport,
        today=today,
    )
