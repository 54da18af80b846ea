"""Neon consumption metrics v2 (specs/neon-consumption-metrics.md, provider-notes.md).

``GET /api/v2/consumption_history/v2/projects`` with bearer auth; ``org_id``, ``metrics``,
``granularity``, ``from``/``to`` always sent, ``limit=100``. Configured projects go as
``project_ids`` in chunks of at most 100; otherwise the whole organization is paged by cursor.
Paging stops on a short or empty page (or a page without a cursor); a repeated cursor is an
error. A range of days is one request series (chunks × pages) for the whole range, never one
per day.

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
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from usage_orchestration.providers.http import (
    PageGuard,
    ProviderClient,
    ProviderError,
    ProviderHttp,
    ProviderResponseError,
    RequestBudget,
    RetryPolicy,
    SharedRateBudget,
)
from usage_orchestration.providers.records import DayCoverage, FetchResult, UsageRow
from usage_orchestration.settings.neon import NeonSettings

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
class NeonMetricValue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    metric_name: str
    value: int

    @field_validator("value", mode="before")
    @classmethod
    def _integer(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, got {v!r}")
        if v < 0:
            raise ValueError(f"must not be negative, got {v!r}")
        return v


class NeonTimeframe(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timeframe_start: datetime
    timeframe_end: datetime
    metrics: list[NeonMetricValue] = []

    @field_validator("timeframe_start", "timeframe_end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


class NeonPeriod(BaseModel):
    model_config = ConfigDict(extra="ignore")

    period_id: str
    period_plan: str | None = None
    period_start: datetime
    period_end: datetime | None = None  # only on past billing periods
    consumption: list[NeonTimeframe] = []


class NeonProject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    project_id: str
    periods: list[NeonPeriod] = []


class NeonPagination(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cursor: str | None = None


class NeonPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    projects: list[NeonProject]
    pagination: NeonPagination | None = None


# -- windows ------------------------------------------------------------------------------------
def _midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ceil_day(dt: datetime) -> date:
    d = dt.astimezone(UTC).date()
    return d if _midnight(d) == dt else d + timedelta(days=1)


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


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
        monthly = month_edge if month_edge.day == 1 else _next_month(month_edge)
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
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
        daily_lookback_days: int = 60,
        monthly_lookback_days: int = 365,
        window_margin_s: float = 0.0,
        now: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("neon: the API key is empty; set NEON_API_KEY")
        if not metrics:
            raise ValueError("neon: at least one metric must be requested")
        if not 1 <= page_limit <= MAX_LIMIT:
            raise ValueError(f"neon: page_limit must be 1..{MAX_LIMIT}, got {page_limit}")
        self.org_id = org_id
        self.metrics = list(metrics)
        self.project_ids = list(project_ids)
        self.page_limit = page_limit
        self.max_pages = max_pages
        self.daily_lookback_days = daily_lookback_days
        self.monthly_lookback_days = monthly_lookback_days
        self.window_margin_s = window_margin_s
        self._now = now or (lambda: datetime.now(UTC))
        kwargs: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        self.http = ProviderHttp(
            PROVIDER,
            base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout_s=timeout_s,
            retry=retry,
            budget=budget,
            retry_statuses=RETRY_STATUSES,
            transport=transport,
            secrets=[api_key],
            **kwargs,
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
        """``project_ids`` chunks of at most 100, or ``[None]`` for the whole organization."""
        if not self.project_ids:
            return [None]
        return [
            self.project_ids[i : i + MAX_PROJECT_IDS]
            for i in range(0, len(self.project_ids), MAX_PROJECT_IDS)
        ]

    def fetch_projects(
        self, granularity: Granularity, start: datetime, end: datetime
    ) -> list[NeonProject]:
        """Every project's consumption in [start, end) at ``granularity``: one request per chunk
        and page for the whole range."""
        window = f"{_iso(start)}..{_iso(end)} granularity {granularity}"
        base: list[tuple[str, str]] = [
            ("org_id", self.org_id),
            ("metrics", ",".join(self.metrics)),
            ("granularity", granularity),
            ("from", _iso(start)),
            ("to", _iso(end)),
            ("limit", str(self.page_limit)),
        ]
        out: list[NeonProject] = []
        for chunk in self.chunks():
            params = base + ([("project_ids", ",".join(chunk))] if chunk else [])
            out += self._pages(params, chunk, window)
        return out

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
                raise ProviderResponseError(
                    PROVIDER,
                    f"pagination returned the cursor {next_cursor!r} it was given; refusing to loop",
                    account=self.account,
                    window=window,
                )
            cursor = next_cursor

    def _parse_page(self, response: httpx.Response, window: str, page_no: int) -> NeonPage:
        try:
            return NeonPage.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ProviderResponseError(
                PROVIDER,
                f"malformed consumption page {page_no}: field {where!r}: {first['msg']} "
                f"({exc.error_count()} problem(s))",
                account=self.account,
                window=window,
            ) from None

    # -- days ------------------------------------------------------------------------------------
    def fetch_days(
        self, days: Sequence[date], *, outside_window: OutsideWindow = "unavailable"
    ) -> FetchResult:
        """Normalized rows and per-day coverage of the organization for every day in ``days``."""
        wanted = sorted(set(days))
        if not wanted:
            return FetchResult(rows=[], coverage=[])
        win = self.windows()
        fetched_at = datetime.now(UTC)
        daily = [d for d in wanted if win.is_daily(d)]
        outside = [d for d in wanted if not win.is_daily(d)]
        rows: list[UsageRow] = []
        per_day: dict[date, int] = {}
        coverage: list[DayCoverage] = []

        if daily:
            wanted_daily = set(daily)
            rows_by_key: dict[str, UsageRow] = {}
            projects = self.fetch_projects(
                "daily", _midnight(daily[0]), _midnight(daily[-1] + timedelta(days=1))
            )
            for row in self.normalize_projects(projects, "daily", fetched_at):
                if row.usage_date in wanted_daily:
                    rows_by_key.setdefault(row.source_key, row)
            rows += rows_by_key.values()
            for r in rows_by_key.values():
                per_day[r.usage_date] = per_day.get(r.usage_date, 0) + 1
            coverage += [self._coverage(d, "complete", None, per_day.get(d, 0)) for d in daily]

        monthly_days: dict[date, date] = {}  # first day of a fetchable month → month
        if outside and outside_window == "monthly":
            months = sorted(
                {
                    _month_start(d)
                    for d in outside
                    if d < win.daily_earliest
                    and _next_month(d)
                    <= win.daily_earliest  # the whole month is outside the daily window
                    and _month_start(d) >= win.monthly_earliest
                }
            )
            monthly_days = {m: m for m in months if m in set(outside)}
            if monthly_days:
                first, last = min(monthly_days), max(monthly_days)
                projects = self.fetch_projects(
                    "monthly", _midnight(first), _midnight(_next_month(last))
                )
                by_key: dict[str, UsageRow] = {}
                for row in self.normalize_projects(projects, "monthly", fetched_at):
                    if row.usage_date in monthly_days:
                        by_key.setdefault(row.source_key, row)
                rows += by_key.values()
                for r in by_key.values():
                    per_day[r.usage_date] = per_day.get(r.usage_date, 0) + 1

        for d in outside:
            coverage.append(
                self._coverage(
                    d,
                    "unavailable",
                    self._reason(d, win, outside_window, monthly_days),
                    per_day.get(d, 0),
                )
            )
        coverage.sort(key=lambda c: c.usage_date)
        return FetchResult(
            rows=rows,
            coverage=coverage,
            requests=self.http.stats.requests,
            retries=self.http.stats.retries,
        )

    def _coverage(
        self, d: date, status: Literal["complete", "unavailable"], reason: str | None, n: int
    ) -> DayCoverage:
        return DayCoverage(
            provider=PROVIDER,
            account_id=self.org_id,
            usage_date=d,
            status=status,
            reason=reason,
            row_count=n,
        )

    def _reason(
        self, d: date, win: Windows, policy: OutsideWindow, monthly_days: dict[date, date]
    ) -> str:
        clock = _iso(win.now)
        if d > win.now.date():
            return f"provider_unavailable: {d} is after Neon's clock ({clock})"
        base = (
            f"provider_unavailable: Neon keeps daily consumption for {self.daily_lookback_days} days "
            f"(earliest daily day {win.daily_earliest} as of {clock})"
        )
        if policy != "monthly":
            return base
        month = _month_start(d)
        if d == month and month in monthly_days:
            return f"{base}; the monthly figure for {month:%Y-%m} (granularity monthly) is recorded on this day"
        if _next_month(d) > win.daily_earliest:
            return f"{base}; {month:%Y-%m} is partly inside the daily window, so no monthly figure is used"
        if month < win.monthly_earliest:
            return f"{base}; monthly consumption is kept only from {win.monthly_earliest}"
        return f"{base}; the monthly figure for {month:%Y-%m} is recorded on {month} (when that day is materialized)"

    def normalize_projects(
        self, projects: Sequence[NeonProject], granularity: Granularity, fetched_at: datetime
    ) -> list[UsageRow]:
        return [
            row
            for project in projects
            for period in project.periods
            for frame in period.consumption
            for row in normalize_timeframe(
                self.org_id, project.project_id, period, frame, self.metrics, granularity
            )
        ]


def normalize_timeframe(
    org_id: str,
    project_id: str,
    period: NeonPeriod,
    frame: NeonTimeframe,
    metrics: Sequence[str],
    granularity: Granularity = "daily",
) -> list[UsageRow]:
    """One row per requested metric of one timeframe. The metric list is sparse: a requested
    metric that is absent is 0 for that timeframe; a reported metric that was not requested is
    kept too (never dropped)."""
    reported: dict[str, int] = {}
    for m in frame.metrics:
        if m.metric_name in reported:
            raise ProviderResponseError(
                PROVIDER,
                f"project {project_id} period {period.period_id} timeframe {_iso(frame.timeframe_start)}: "
                f"field 'metrics' lists {m.metric_name!r} twice",
                account=f"org {org_id}",
                window=frame.timeframe_start.date().isoformat(),
            )
        reported[m.metric_name] = m.value
    names = list(metrics) + [n for n in reported if n not in metrics]
    details = json.dumps(
        {
            "granularity": granularity,
            "period_id": period.period_id,
            "period_plan": period.period_plan,
            "period_start": _iso(period.period_start),
            "period_end": _iso(period.period_end) if period.period_end else None,
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
                usage_date=_month_start(start.date()) if granularity == "monthly" else start.date(),
                consumed_quantity=Decimal(raw) / unit.divide_by,
                consumed_unit=unit.billing_unit,
                raw_quantity=Decimal(raw),
                raw_unit=unit.raw_unit,
                source_key=f"{project_id}|{period.period_id}|{_iso(start)}|{name}",
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
) -> NeonClient:
    """A client with the settings' policy and the cross-process request budget of the org."""
    return NeonClient(
        cfg.base_url,
        api_key,
        cfg.org_id,
        metrics=cfg.metrics,
        project_ids=cfg.project_ids,
        page_limit=cfg.page_limit,
        max_pages=cfg.max_pages,
        timeout_s=cfg.timeout_s,
        retry=RetryPolicy(
            max_attempts=cfg.max_attempts,
            base_delay_s=cfg.backoff_base_s,
            retry_after_cap_s=cfg.retry_after_cap_s,
        ),
        budget=SharedRateBudget(
            budget_path(state_dir, cfg.org_id), cfg.rate_limit_requests, cfg.rate_limit_window_s
        ),
        daily_lookback_days=cfg.daily_lookback_days,
        monthly_lookback_days=cfg.monthly_lookback_days,
        window_margin_s=cfg.window_margin_s,
        now=now,
        transport=transport,
        sleep=sleep,
    )
