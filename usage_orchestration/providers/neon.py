"""Neon consumption metrics v2 (specs/neon-consumption-metrics.md, provider-notes.md).

``GET /api/v2/consumption_history/v2/projects`` with bearer auth; ``org_id``, ``metrics``,
``granularity``, ``from``/``to`` always sent, ``limit=100``. Configured projects go as
``project_ids`` in chunks of at most 100 and at most ``limit``; otherwise the whole
organization is paged by cursor. Paging stops on a short or empty page (or a page without a
cursor); a repeated cursor is an error. A range of days is one request series (chunks × pages)
for the whole range, never one per day. A daily timeframe may be part of a UTC day (a billing
period turning over inside it): a day's rows add up to its usage.

Lookback: daily figures exist only ``daily_lookback_days`` (60) back from Neon's clock. Days
outside that window are reported ``unavailable`` with the reason, never as zero usage, or, when
asked, months entirely outside it are fetched at monthly granularity and recorded on the
month's first day.

Units (the names mislead): ``compute_unit_seconds`` are CU-seconds (billed in CU-hours);
``*_bytes_month`` are byte-hours (billed in GB-months of a fixed 744 hours); ``*_transfer_bytes``
are bytes (billed in GB); ``extra_branches_month`` are branch-hours of all child branches
(billed in branch-months, before the plan's allowance). The raw value and unit are kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Unpack

import httpx
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from usage_orchestration.core.dates import (
    aware_utc,
    day_bounds,
    iso_utc,
    month_start,
    next_month,
    utc_midnight,
)
from usage_orchestration.providers.http import (
    HttpOptions,
    PageGuard,
    ProviderClient,
    ProviderError,
    ProviderHttp,
    ProviderResponseError,
    RequestBudgets,
    RetryPolicy,
    body_json,
    offending_item,
)
from usage_orchestration.providers.policy import account_budget, integral, schema_problem
from usage_orchestration.providers.records import DayCoverage, FetchResult, UsageRow
from usage_orchestration.settings.neon import NEON_ID, NEON_ID_PATTERN, NeonSettings

PROVIDER = "neon"
CONSUMPTION_PATH = "/api/v2/consumption_history/v2/projects"
MAX_PROJECT_IDS = 100
MAX_LIMIT = 100
EARLIEST = datetime(2024, 3, 1, tzinfo=UTC)  # earliest `from` the API accepts
HOURS_PER_MONTH = Decimal(744)  # Neon bills storage over a fixed 744-hour month
GIGA = Decimal(1_000_000_000)
RETRY_STATUSES = frozenset({423, 429, 500, 502, 503, 504})

Granularity = Literal["hourly", "daily", "monthly"]
OutsideWindow = Literal["unavailable", "monthly"]


# -- units -----------------------------------------------------------------------------------
class MetricUnit(BaseModel):
    model_config = ConfigDict(frozen=True)

    raw_unit: str
    billing_unit: str
    divide_by: Decimal


_STORAGE = MetricUnit(
    raw_unit="byte-hour", billing_unit="GB-month", divide_by=HOURS_PER_MONTH * GIGA
)
_TRANSFER = MetricUnit(raw_unit="byte", billing_unit="GB", divide_by=GIGA)
METRIC_UNITS: dict[str, MetricUnit] = {
    "compute_unit_seconds": MetricUnit(
        raw_unit="CU-second", billing_unit="CU-hour", divide_by=Decimal(3600)
    ),
    "root_branch_bytes_month": _STORAGE,
    "child_branch_bytes_month": _STORAGE,
    "instant_restore_bytes_month": _STORAGE,
    "snapshot_storage_bytes_month": _STORAGE,
    "public_network_transfer_bytes": _TRANSFER,
    "private_network_transfer_bytes": _TRANSFER,
    # the plan's allowance of extra branches applies to the month's invoice, not to a day
    "extra_branches_month": MetricUnit(
        raw_unit="branch-hour", billing_unit="branch-month", divide_by=HOURS_PER_MONTH
    ),
}
_UNKNOWN = MetricUnit(raw_unit="unit", billing_unit="unit", divide_by=Decimal(1))


def metric_unit(metric: str) -> MetricUnit:
    return METRIC_UNITS.get(metric, _UNKNOWN)


def to_billing_quantity(metric: str, raw: int) -> Decimal:
    return Decimal(raw) / metric_unit(metric).divide_by


# -- payload models ---------------------------------------------------------------------------
# Every list of the body is required and non-null: a missing list is a broken answer, never "no
# usage" (an absent list silently read as [] would be written as zero).
def _text_datetime(v: Any) -> Any:
    # RFC 3339 text only: pydantic would otherwise read a bare number as a Unix timestamp
    if not isinstance(v, str):
        raise ValueError(f"must be an RFC 3339 date-time string, got {v!r}")
    return v


def _text_or_null(v: Any) -> Any:
    # null is left to the field's own type (required, or optional like period_end)
    return v if v is None else _text_datetime(v)


def _count(v: Any) -> Any:
    # an integral float (84.0, 7.58513664e8) is that int; 84.5, NaN, Infinity and floats past
    # 2**53 (rounded) are refused
    v = integral(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be an integer, got {v!r}")
    if v < 0:
        raise ValueError(f"must not be negative, got {v!r}")
    return v


Count = Annotated[int, BeforeValidator(_count)]
UtcText = Annotated[datetime, BeforeValidator(_text_datetime), AfterValidator(aware_utc)]
PeriodText = Annotated[datetime, BeforeValidator(_text_or_null)]


class NeonMetricValue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metric_name: str
    value: Count


class NeonTimeframe(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timeframe_start: UtcText
    timeframe_end: UtcText
    metrics: list[NeonMetricValue]  # sparse, but present (an empty list is "no usage")


class NeonPeriod(BaseModel):
    model_config = ConfigDict(extra="ignore")

    period_id: str
    period_plan: str | None = None
    period_start: PeriodText
    period_end: PeriodText | None = None  # only on past billing periods
    consumption: list[NeonTimeframe]


class NeonProject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    project_id: str
    periods: list[NeonPeriod]


class NeonPagination(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cursor: str | None = None


class NeonPage(BaseModel):
    """``allOf`` consumption body + pagination. ``projects`` is required; ``pagination`` is
    tolerated absent or null (read as "no cursor": the last page), since the pagination part of
    the ``allOf`` does not make it required and the last page may come without a cursor."""

    model_config = ConfigDict(extra="ignore")

    projects: list[NeonProject]
    pagination: NeonPagination | None = None


# -- windows ------------------------------------------------------------------------------------
def _ceil_day(dt: datetime) -> date:
    d = dt.astimezone(UTC).date()
    return d if utc_midnight(d) == dt else d + timedelta(days=1)


def _window(granularity: str, start: datetime, end: datetime) -> str:
    return f"{iso_utc(start)}..{iso_utc(end)} granularity {granularity}"


def _project_of(response: httpx.Response, loc: tuple[Any, ...]) -> str:
    """``project <id>: `` when a validation error lies inside one project (the loc only gives
    its index), else ``""``."""
    pid = offending_item(response, loc, "projects", "project_id")
    return f"project {pid!r}: " if pid is not None else ""


def _row_counts(rows: Sequence[UsageRow]) -> dict[tuple[str, date], int]:
    counts: dict[tuple[str, date], int] = {}
    for r in rows:
        counts[(r.resource_id, r.usage_date)] = counts.get((r.resource_id, r.usage_date), 0) + 1
    return counts


class Windows(BaseModel):
    """Which days Neon can answer at which granularity, as of its clock ``now``."""

    model_config = ConfigDict(frozen=True)

    now: datetime
    daily_earliest: date  # first day whose daily figures are still kept
    monthly_earliest: date  # first month (its first day) whose monthly figure is still kept

    @classmethod
    def at(
        cls, now: datetime, *, daily_days: int = 60, monthly_days: int = 365, margin_s: float = 0.0
    ) -> Windows:
        now = now.astimezone(UTC)
        edge = now + timedelta(seconds=margin_s)  # assume Neon's clock may be ahead
        daily = max(_ceil_day(edge - timedelta(days=daily_days)), EARLIEST.date())
        month_edge = _ceil_day(edge - timedelta(days=monthly_days))
        monthly = month_edge if month_edge.day == 1 else next_month(month_edge)
        return cls(now=now, daily_earliest=daily, monthly_earliest=max(monthly, EARLIEST.date()))

    def is_daily(self, d: date) -> bool:
        return self.daily_earliest <= d <= self.now.date()


# -- the client -------------------------------------------------------------------------------------
_ERROR_HINTS = {
    401: "the API key was refused; check NEON_API_KEY",
    403: "the organization's plan is not eligible for consumption metrics (Launch, Scale, "
    "Agent, Business or Enterprise are)",
    404: "the API key does not belong to this organization, or the organization does not exist",
    406: "the range is outside Neon's lookback for this granularity (hourly 168 h, daily 60 "
    "days, monthly 1 year, from 2024-03-01)",
}


class NeonClient(ProviderClient):
    """Fetches and normalizes one organization's consumption over whole UTC days."""

    SETTINGS_OPTIONS = (
        "metrics",
        "project_ids",
        "page_limit",
        "max_pages",
        "daily_lookback_days",
        "monthly_lookback_days",
        "window_margin_s",
        "timeout_s",
    )

    def __init__(
        self,
        base_url: str,
        api_key: str,
        org_id: str,
        *,
        metrics: Sequence[str],
        project_ids: Sequence[str] = (),
        page_limit: int = MAX_LIMIT,
        max_pages: int = 1000,
        daily_lookback_days: int = 60,
        monthly_lookback_days: int = 365,
        window_margin_s: float = 0.0,
        now: Callable[[], datetime] | None = None,
        **http: Unpack[HttpOptions],
    ) -> None:
        if not api_key:
            raise ValueError("neon: the API key is empty; set NEON_API_KEY")
        if not metrics:
            raise ValueError("neon: at least one metric must be requested")
        if not 1 <= page_limit <= MAX_LIMIT:
            raise ValueError(f"neon: page_limit must be 1..{MAX_LIMIT}, got {page_limit}")
        for i, pid in enumerate(project_ids):
            if not NEON_ID.fullmatch(pid):  # a comma or space would change the filter sent
                raise ValueError(f"neon: project_ids[{i}] {pid!r} does not match {NEON_ID_PATTERN}")
        self.org_id = org_id
        self.metrics = list(metrics)
        self.project_ids = list(project_ids)
        self.page_limit = page_limit
        self.max_pages = max_pages
        self.daily_lookback_days = daily_lookback_days
        self.monthly_lookback_days = monthly_lookback_days
        self.window_margin_s = window_margin_s
        self._now = now or (lambda: datetime.now(UTC))
        self.http = ProviderHttp(
            PROVIDER,
            base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            retry_statuses=RETRY_STATUSES,
            secrets=[api_key],
            **http,
        )

    @property
    def account(self) -> str:
        return f"org {self.org_id}"

    def windows(self) -> Windows:
        return Windows.at(
            self._now(),
            daily_days=self.daily_lookback_days,
            monthly_days=self.monthly_lookback_days,
            margin_s=self.window_margin_s,
        )

    # -- requests ------------------------------------------------------------------------------
    def chunks(self) -> list[list[str] | None]:
        """``project_ids`` chunks of at most 100 and at most ``page_limit``, or ``[None]`` for
        the whole organization."""
        if not self.project_ids:
            return [None]
        # the document does not say `limit` applies with `project_ids`: a provider may answer a
        # whole chunk on one page, which must then still fit the page check against `limit`
        size = min(MAX_PROJECT_IDS, self.page_limit)
        return [self.project_ids[i : i + size] for i in range(0, len(self.project_ids), size)]

    def fetch_projects(
        self, granularity: Granularity, start: datetime, end: datetime
    ) -> list[NeonProject]:
        """Every project's consumption in [start, end) at ``granularity``: one request per chunk
        and page for the whole range. Timeframes are checked against the request."""
        window = _window(granularity, start, end)
        base: list[tuple[str, str]] = [
            ("org_id", self.org_id),
            ("metrics", ",".join(self.metrics)),
            ("granularity", granularity),
            ("from", iso_utc(start)),
            ("to", iso_utc(end)),
            ("limit", str(self.page_limit)),
        ]
        out: list[NeonProject] = []
        for chunk in self.chunks():
            params = base + ([("project_ids", ",".join(chunk))] if chunk else [])
            out += self._pages(params, chunk, window)
        frames: dict[str, set[tuple[datetime, datetime]]] = {}
        for project in out:
            self._check_timeframes(project, granularity, start, end, window)
            frames.setdefault(project.project_id, set()).update(
                (f.timeframe_start, f.timeframe_end)
                for per in project.periods
                for f in per.consumption
                if f.timeframe_start != end  # dropped below: not asked for
            )
        for pid, spans in frames.items():
            self._check_overlaps(pid, spans, window)
        return out

    def _check_overlaps(
        self, project_id: str, spans: set[tuple[datetime, datetime]], window: str
    ) -> None:
        """Distinct timeframes of one project never overlap: their rows add up to the day, so
        an overlap would count its usage twice. The same timeframe in two billing periods holds
        each period's share (or is an identical copy, collapsed later), so it is not one."""
        last: tuple[datetime, datetime] | None = None
        for t0, t1 in sorted(spans):
            if last is not None and t0 < last[1]:
                raise self._error(
                    f"project {project_id} timeframe {iso_utc(t0)}..{iso_utc(t1)} overlaps "
                    f"timeframe {iso_utc(last[0])}..{iso_utc(last[1])}; refusing to count "
                    "the overlap twice",
                    window,
                )
            if last is None or t1 > last[1]:
                last = (t0, t1)

    def _pages(
        self, params: list[tuple[str, str]], chunk: list[str] | None, window: str
    ) -> list[NeonProject]:
        guard = PageGuard(PROVIDER, self.max_pages, account=self.account, window=window)
        wanted = set(chunk or ())
        seen: set[str] = set()
        projects: list[NeonProject] = []
        cursor: str | None = None
        while True:
            guard.visit(cursor)
            response = self.http.request(
                "GET",
                CONSUMPTION_PATH,
                params=params + ([("cursor", cursor)] if cursor else []),
                account=self.account,
                window=window,
                error_status=lambda status: _ERROR_HINTS.get(status),
            )
            page = self._parse_page(response, window, guard.pages)
            self._check_page(page, chunk, window, guard.pages)
            projects += page.projects
            seen.update(p.project_id for p in page.projects)
            next_cursor = page.pagination.cursor if page.pagination else None
            if (
                not page.projects
                or len(page.projects) < self.page_limit
                or not next_cursor
                or (chunk is not None and wanted <= seen)
            ):
                return projects
            if next_cursor == cursor:
                raise self._error(
                    f"pagination returned the cursor {next_cursor!r} it was given; refusing to loop",
                    window,
                )
            cursor = next_cursor

    def _error(self, message: str, window: str) -> ProviderResponseError:
        return ProviderResponseError(PROVIDER, message, account=self.account, window=window)

    def _check_page(
        self, page: NeonPage, chunk: list[str] | None, window: str, page_no: int
    ) -> None:
        """A page longer than ``limit`` or holding projects that were not asked for does not
        answer the request: nothing of it can be trusted as the configured projects' usage."""
        n = len(page.projects)
        if n > self.page_limit:
            raise self._error(
                f"page {page_no} lists {n} projects, more than the limit {self.page_limit} "
                "that was sent; the answer does not follow the request",
                window,
            )
        if chunk is None:
            return
        extra = sorted({p.project_id for p in page.projects} - set(chunk))
        if extra:
            raise self._error(
                f"page {page_no} lists project(s) {', '.join(extra[:5])} that were not asked "
                f"for (project_ids {', '.join(chunk[:5])}{' …' if len(chunk) > 5 else ''}); "
                "refusing to write them as configured projects",
                window,
            )

    def _check_timeframes(
        self,
        project: NeonProject,
        granularity: Granularity,
        start: datetime,
        end: datetime,
        window: str,
    ) -> None:
        """Every timeframe lies inside the request and inside one bucket of ``granularity``: a
        daily one within one UTC day (the document never promises whole days; a billing period
        may turn over inside a day and clip its frames there), a monthly one a calendar month
        recorded on its first day."""
        for period in project.periods:
            for frame in period.consumption:
                t0, t1 = frame.timeframe_start, frame.timeframe_end
                where = (
                    f"project {project.project_id} period {period.period_id} timeframe "
                    f"{iso_utc(t0)}..{iso_utc(t1)}"
                )
                if t0 == end:
                    # the other reading of `to` (inclusive): the bucket it starts was not asked
                    # for, and its rows are dropped with the other days not asked for
                    continue
                if not start <= t0 < end:
                    raise self._error(f"{where} lies outside the requested window", window)
                if t1 <= t0:
                    raise self._error(f"{where} does not end after it starts", window)
                if granularity == "daily":
                    if t1 > utc_midnight(t0.date() + timedelta(days=1)):
                        raise self._error(
                            f"{where} crosses a UTC midnight (a daily timeframe lies within "
                            "one UTC day)",
                            window,
                        )
                elif granularity == "monthly":
                    month = utc_midnight(month_start(t0.date()))
                    if t0 != month or t1 != utc_midnight(next_month(t0.date())):
                        raise self._error(f"{where} is not one calendar month", window)

    def _parse_page(self, response: httpx.Response, window: str, page_no: int) -> NeonPage:
        try:
            return NeonPage.model_validate(body_json(response))
        except ValidationError as exc:
            problem = schema_problem(exc, lambda loc: _project_of(response, loc))
            raise self._error(f"malformed consumption page {page_no}: {problem}", window) from None

    # -- days ------------------------------------------------------------------------------------
    def accounts(self) -> list[str]:
        """The coverage accounts: each configured project, or the whole organization (the
        registry's ``_neon_accounts`` matches these ids exactly)."""
        return list(self.project_ids) or [self.org_id]

    def fetch_days(
        self, days: Sequence[date], *, outside_window: OutsideWindow = "unavailable"
    ) -> FetchResult:
        """Normalized rows and per-day coverage of every account for every day in ``days``."""
        wanted = sorted(set(days))
        if not wanted:
            return FetchResult(rows=[], coverage=[])
        win = self.windows()
        fetched_at = datetime.now(UTC)
        daily = [d for d in wanted if win.is_daily(d)]
        outside = [d for d in wanted if not win.is_daily(d)]
        rows: list[UsageRow] = []
        coverage: list[DayCoverage] = []
        if daily:
            daily_rows, coverage = self._fetch_daily(daily, fetched_at)
            rows += daily_rows
        monthly_days: dict[date, date] = {}  # first day of a fetchable month → month
        if outside and outside_window == "monthly":
            monthly_days = self._fetchable_months(outside, win)
            if monthly_days:
                rows += self._fetch_monthly(sorted(monthly_days), fetched_at)
        counts = _row_counts(rows)
        for d in outside:
            reason = self._reason(d, win, outside_window, monthly_days)
            coverage += [
                DayCoverage(PROVIDER, a, d, "unavailable", reason, self._count(counts, a, d))
                for a in self.accounts()
            ]
        coverage.sort(key=lambda c: (c.usage_date, c.account_id))
        return self.result(rows, coverage)

    def _fetch_daily(
        self, daily: list[date], fetched_at: datetime
    ) -> tuple[list[UsageRow], list[DayCoverage]]:
        start, end = day_bounds(daily[0], daily[-1])
        window = _window("daily", start, end)
        projects = self.fetch_projects("daily", start, end)
        wanted = set(daily)
        # days of the fetched span that were not asked for (a non-contiguous set) are skipped
        rows = [
            r
            for r in self._unique_rows(projects, "daily", fetched_at, window)
            if r.usage_date in wanted
        ]
        return rows, self._daily_coverage(daily, projects, rows, window)

    def _fetchable_months(self, outside: list[date], win: Windows) -> dict[date, date]:
        """Outside days that are the first day of a month wholly outside the daily window and
        inside the monthly one."""
        months = {
            month_start(d)
            for d in outside
            if d < win.daily_earliest
            and next_month(d) <= win.daily_earliest
            and month_start(d) >= win.monthly_earliest
        }
        wanted = set(outside)
        return {m: m for m in months if m in wanted}

    def _fetch_monthly(self, months: list[date], fetched_at: datetime) -> list[UsageRow]:
        start, end = utc_midnight(months[0]), utc_midnight(next_month(months[-1]))
        projects = self.fetch_projects("monthly", start, end)
        rows = self._unique_rows(projects, "monthly", fetched_at, _window("monthly", start, end))
        wanted = set(months)
        return [r for r in rows if r.usage_date in wanted]

    def _unique_rows(
        self,
        projects: Sequence[NeonProject],
        granularity: Granularity,
        fetched_at: datetime,
        window: str,
    ) -> list[UsageRow]:
        """One row per (project, period, timeframe, metric): identical copies (a project on two
        pages) collapse; copies that disagree are an error, never "first one wins"."""
        by_key: dict[str, UsageRow] = {}
        for row in self.normalize_projects(projects, granularity, fetched_at, window):
            known = by_key.setdefault(row.source_key, row)
            if known != row:
                raise self._error(
                    f"{row.source_key!r} is reported twice with different values "
                    f"({known.raw_quantity} and {row.raw_quantity})",
                    window,
                )
        return list(by_key.values())

    def _daily_coverage(
        self,
        daily: list[date],
        projects: Sequence[NeonProject],
        rows: Sequence[UsageRow],
        window: str,
    ) -> list[DayCoverage]:
        """A day is complete for an account only when Neon's answer covered it: the project is
        in the answer with consumption in the window, and the organization has history that
        day. Missing days are unavailable with the reason, never zero usage."""
        framed: dict[str, set[date]] = {}
        for p in projects:
            days = framed.setdefault(p.project_id, set())
            days.update(f.timeframe_start.date() for per in p.periods for f in per.consumption)
        org_days: set[date] = set().union(*framed.values())
        counts = _row_counts(rows)
        out: list[DayCoverage] = []
        for account in self.accounts():
            gap = self._account_gap(account, framed, window)
            for d in daily:
                reason = gap or (None if d in org_days else self._no_history(d))
                status: Literal["complete", "unavailable"] = "unavailable" if reason else "complete"
                out.append(
                    DayCoverage(
                        PROVIDER, account, d, status, reason, self._count(counts, account, d)
                    )
                )
        return out

    def _account_gap(self, account: str, framed: dict[str, set[date]], window: str) -> str | None:
        """Why Neon's answer does not cover ``account`` at all in ``window``, or None."""
        org = f"org {self.org_id}"
        if not self.project_ids:
            return (
                None
                if framed
                else f"provider_unavailable: Neon's answer for {org} lists no project ({window})"
            )
        if account not in framed:
            return f"provider_unavailable: project {account} absent from Neon's answer for {org} ({window})"
        if not framed[account]:
            # a live project accrues root-branch storage every day: no timeframe is no data
            return (
                f"provider_unavailable: project {account} is in Neon's answer for {org} but has "
                f"no consumption timeframe in {window}"
            )
        return None

    def _no_history(self, d: date) -> str:
        # the contract: history starts when the account upgraded to an eligible plan, so a day
        # without any project's timeframe is a day Neon has no figures for, not a day of zero
        return (
            f"provider_unavailable: no project in Neon's answer for org {self.org_id} has a "
            f"timeframe on {d} (history starts when the organization upgraded to an eligible "
            "plan; figures refresh about every 15 minutes)"
        )

    def _count(self, counts: dict[tuple[str, date], int], account: str, d: date) -> int:
        if self.project_ids:
            return counts.get((account, d), 0)
        return sum(n for (_, day), n in counts.items() if day == d)

    def _reason(
        self, d: date, win: Windows, policy: OutsideWindow, monthly_days: dict[date, date]
    ) -> str:
        clock = iso_utc(win.now)
        if d > win.now.date():
            return f"provider_unavailable: {d} is after Neon's clock ({clock})"
        base = (
            f"provider_unavailable: Neon keeps daily consumption for {self.daily_lookback_days} days "
            f"(earliest daily day {win.daily_earliest} as of {clock})"
        )
        if policy != "monthly":
            return base
        month = month_start(d)
        if d == month and month in monthly_days:
            return f"{base}; the monthly figure for {month:%Y-%m} (granularity monthly) is recorded on this day"
        if next_month(d) > win.daily_earliest:
            return f"{base}; {month:%Y-%m} is partly inside the daily window, so no monthly figure is used"
        if month < win.monthly_earliest:
            return f"{base}; monthly consumption is kept only from {win.monthly_earliest}"
        return f"{base}; the monthly figure for {month:%Y-%m} is recorded on {month} (when that day is materialized)"

    def normalize_projects(
        self,
        projects: Sequence[NeonProject],
        granularity: Granularity,
        fetched_at: datetime,
        window: str | None = None,
    ) -> list[UsageRow]:
        return [
            row
            for project in projects
            for period in project.periods
            for frame in period.consumption
            for row in normalize_timeframe(
                self.org_id,
                project.project_id,
                period,
                frame,
                self.metrics,
                granularity,
                window=window,
            )
        ]


def normalize_timeframe(
    org_id: str,
    project_id: str,
    period: NeonPeriod,
    frame: NeonTimeframe,
    metrics: Sequence[str],
    granularity: Granularity = "daily",
    *,
    window: str | None = None,
) -> list[UsageRow]:
    """One row per requested metric of one timeframe. The metric list is sparse: a requested
    metric that is absent is 0 for that timeframe; a reported metric that was not requested is
    kept too (never dropped)."""
    reported: dict[str, int] = {}
    for m in frame.metrics:
        if m.metric_name in reported:
            raise ProviderResponseError(
                PROVIDER,
                f"project {project_id} period {period.period_id} timeframe {iso_utc(frame.timeframe_start)}: "
                f"field 'metrics' lists {m.metric_name!r} twice",
                account=f"org {org_id}",
                window=window or frame.timeframe_start.date().isoformat(),
            )
        reported[m.metric_name] = m.value
    names = list(metrics) + [n for n in reported if n not in metrics]
    details = json.dumps(
        {
            "granularity": granularity,
            "period_id": period.period_id,
            "period_plan": period.period_plan,
            "period_start": iso_utc(period.period_start),
            "period_end": iso_utc(period.period_end) if period.period_end else None,
        },
        sort_keys=True,
    )
    start = frame.timeframe_start
    rows = []
    for name in names:
        raw = reported.get(name, 0)
        unit = metric_unit(name)
        rows.append(
            UsageRow(
                provider=PROVIDER,
                billing_account_id=org_id,
                resource_id=project_id,
                metric=name,
                charge_period_start=start,
                charge_period_end=frame.timeframe_end,
                # a monthly figure is attributed to its month: recorded on the month's first day
                usage_date=month_start(start.date()) if granularity == "monthly" else start.date(),
                consumed_quantity=Decimal(raw) / unit.divide_by,
                consumed_unit=unit.billing_unit,
                raw_quantity=Decimal(raw),
                raw_unit=unit.raw_unit,
                source_key=f"{project_id}|{period.period_id}|{iso_utc(start)}|{name}",
                details=details,
            )
        )
    return rows


__all__ = [
    "METRIC_UNITS",
    "budget_path",
    "client_from_settings",
    "NeonClient",
    "NeonPage",
    "ProviderError",
    "Windows",
    "normalize_timeframe",
    "to_billing_quantity",
]


def budget_path(state_dir: str | Path, org_id: str) -> Path:
    """The request-budget file every process shares for one Neon account (organization)."""
    return Path(state_dir) / f"neon-{org_id}.rate.json"


def client_from_settings(
    cfg: NeonSettings,
    api_key: str,
    state_dir: str | Path,
    *,
    now: Callable[[], datetime] | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
    budgets: RequestBudgets | None = None,
) -> NeonClient:
    """A client with the settings' policy and the cross-process request budget of the org:
    drawn from ``budgets`` when given (e.g. the warehouse's), else the file under ``state_dir``."""
    budget = account_budget(
        PROVIDER,
        cfg.org_id,
        cfg.rate_limit_requests,
        cfg.rate_limit_window_s,
        budgets=budgets,
        path=budget_path(state_dir, cfg.org_id),
    )
    return NeonClient(
        cfg.base_url,
        api_key,
        cfg.org_id,
        **NeonClient.settings_options(cfg),
        retry=RetryPolicy.of(cfg, base_delay_s=cfg.backoff_base_s),
        budget=budget,
        now=now,
        transport=transport,
        sleep=sleep,
    )
