"""Phala Cloud app metered usage (specs/phala-app-usage.md, provider-notes.md).

Both dates are always sent (the API otherwise defaults to a moving 7-day window, so pages would
shift between requests); pages of ``limit`` records go by ``offset`` until a short page; records
are de-duplicated on ``billing_key`` (ordering is undocumented); ``details`` is decoded from its
JSON-encoded string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from usage_orchestration.providers.http import (
    PageGuard,
    ProviderClient,
    ProviderHttp,
    ProviderResponseError,
    RetryPolicy,
)
from usage_orchestration.providers.records import DayCoverage, FetchResult, UsageRow

PROVIDER = "phala"
USAGE_PATH = "/api/v1/apps/{app_id}/usage"


class PhalaUsageRecord(BaseModel):
    """MeteredUsageResponse: every field is required by the contract."""

    model_config = ConfigDict(extra="ignore")

    instance_id: str
    project_id: int
    team_id: int
    timestamp: str
    event_type: str
    cost: Decimal
    details: str | None
    usage_type: str
    billing_start: str
    billing_end: str
    duration_minutes: Decimal
    billing_key: str
    billing_hour: str
    billing_day: date

    @field_validator("cost", "duration_minutes", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        # JSON numbers arrive as floats; go through str so 0.1 stays 0.1
        return str(v) if isinstance(v, float) else v

    def decoded_details(self) -> dict[str, Any] | None:
        if self.details is None:
            return None
        value = json.loads(self.details)
        return value if isinstance(value, dict) else {"value": value}


class PhalaUsagePage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    usage: list[PhalaUsageRecord]
    total: int
    total_cost: Decimal

    @field_validator("total_cost", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        return str(v) if isinstance(v, float) else v


def _utc(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_ts(value: str, *, field: str, app_id: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ProviderResponseError(
            PROVIDER, f"field {field!r} is not an ISO date/time: {value[:40]!r}", account=app_id
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class PhalaClient(ProviderClient):
    """Fetches and normalizes one app's usage over a window of whole UTC days."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        api_version: str = "2026-01-21",
        page_size: int = 500,
        max_pages: int = 1000,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Any = None,
    ) -> None:
        if not api_key:
            raise ValueError("phala: the API key is empty; set PHALA_API_KEY")
        self.page_size = page_size
        self.max_pages = max_pages
        kwargs: dict[str, Any] = {"sleep": sleep} if sleep is not None else {}
        self.http = ProviderHttp(
            PROVIDER,
            base_url,
            headers={
                "X-API-Key": api_key,
                "X-Phala-Version": api_version,
                "Accept": "application/json",
            },
            timeout_s=timeout_s,
            retry=retry,
            retry_statuses={429, 500, 502, 503, 504},
            transport=transport,
            secrets=[api_key],
            **kwargs,
        )

    def fetch_records(
        self, app_id: str, start: date, end_inclusive: date
    ) -> list[PhalaUsageRecord]:
        """Every record of ``app_id`` billed from ``start`` through ``end_inclusive``, once each."""
        window = f"{start.isoformat()}..{end_inclusive.isoformat()}"
        params_base = {
            "start_date": _iso(_utc(start)),
            "end_date": _iso(_utc(end_inclusive + timedelta(days=1))),
            "limit": self.page_size,
        }
        guard = PageGuard(PROVIDER, self.max_pages, account=app_id, window=window)
        by_key: dict[str, PhalaUsageRecord] = {}
        offset = 0
        while True:
            guard.visit(offset)
            response = self.http.request(
                "GET",
                USAGE_PATH.format(app_id=app_id),
                params={**params_base, "offset": offset},
                account=f"app {app_id}",
                window=window,
            )
            page = self._parse_page(response, app_id, window, offset)
            for rec in page.usage:
                by_key.setdefault(rec.billing_key, rec)
            if len(page.usage) < self.page_size:
                break
            offset += self.page_size
        return list(by_key.values())

    @staticmethod
    def _parse_page(
        response: httpx.Response, app_id: str, window: str, offset: int
    ) -> PhalaUsagePage:
        try:
            return PhalaUsagePage.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ProviderResponseError(
                PROVIDER,
                f"malformed usage page at offset {offset}: field {where!r}: {first['msg']} "
                f"({exc.error_count()} problem(s))",
                account=f"app {app_id}",
                window=window,
            ) from None

    def fetch_days(self, app_ids: Sequence[str], days: Sequence[date]) -> FetchResult:
        """Normalized rows and coverage for every app and every day in ``days`` (one request
        series per app over the whole span, not one per day)."""
        if not days:
            return FetchResult(rows=[], coverage=[])
        wanted = set(days)
        start, end = min(days), max(days)
        fetched_at = datetime.now(UTC)
        rows: list[UsageRow] = []
        coverage: list[DayCoverage] = []
        for app_id in app_ids:
            per_day: dict[date, int] = dict.fromkeys(wanted, 0)
            for rec in self.fetch_records(app_id, start, end):
                if rec.billing_day not in wanted:
                    continue
                rows.append(normalize(rec, app_id, fetched_at))
                per_day[rec.billing_day] += 1
            coverage += [
                DayCoverage(
                    provider=PROVIDER,
                    account_id=app_id,
                    usage_date=d,
                    status="complete",
                    row_count=n,
                )
                for d, n in sorted(per_day.items())
            ]
        return FetchResult(
            rows=rows,
            coverage=coverage,
            requests=self.http.stats.requests,
            retries=self.http.stats.retries,
        )


def normalize(rec: PhalaUsageRecord, app_id: str, fetched_at: datetime) -> UsageRow:
    window = rec.billing_day.isoformat()
    try:
        details = rec.decoded_details()
    except ValueError:
        raise ProviderResponseError(
            PROVIDER,
            f"record {rec.billing_key}: field 'details' is not valid JSON",
            account=f"app {app_id}",
            window=window,
        ) from None
    start = _parse_ts(rec.billing_start, field="billing_start", app_id=app_id)
    end = _parse_ts(rec.billing_end, field="billing_end", app_id=app_id)
    if end <= start:  # a date-only billing_end means "through that day"
        end = start + timedelta(days=1) if len(rec.billing_end) <= 10 else end
    return UsageRow(
        provider=PROVIDER,
        billing_account_id=str(rec.team_id),
        resource_id=app_id,
        resource_name=None,
        sub_account_id=rec.instance_id,
        metric=rec.usage_type,
        charge_period_start=start,
        charge_period_end=end,
        usage_date=rec.billing_day,
        consumed_quantity=rec.duration_minutes,
        consumed_unit="minute",
        raw_quantity=rec.duration_minutes,
        raw_unit="minute",
        billed_cost=rec.cost,
        billing_currency="USD",
        source_key=rec.billing_key,
        details=json.dumps(
            {"event_type": rec.event_type, "project_id": rec.project_id, **(details or {})},
            sort_keys=True,
        ),
    )
