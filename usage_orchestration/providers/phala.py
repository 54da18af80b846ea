"""Phala Cloud app metered usage (specs/phala-app-usage.md, provider-notes.md).

Both dates are always sent (the API otherwise defaults to a moving 7-day window, so pages would
shift between requests), start_date one day early (its inclusiveness is undocumented; the padded
day's records are dropped); pages of ``limit`` records go by ``offset`` until a short page; records
are de-duplicated on ``billing_key`` (ordering is undocumented; copies that disagree are an
error); ``details`` is decoded from its JSON-encoded string.

Every field of the response and of a record is required by the OpenAPI: an absent or null
``usage``, ``total`` or ``total_cost`` is an error, never an empty page. An app whose answer
holds no record at all for the window is ``unavailable`` (storage is billed per minute even for
stopped CVMs, so a live app always has records), and so is a day without records after the
app's first record day (a gap or the provider's lag); see docs/providers/phala.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Unpack

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from usage_orchestration.core.dates import as_utc, iso_utc, utc_midnight
from usage_orchestration.core.money import CONTEXT, QUANTUM, SCALE
from usage_orchestration.providers.http import (
    HttpOptions,
    PageGuard,
    ProviderClient,
    ProviderHttp,
    ProviderResponseError,
    offending_item,
)
from usage_orchestration.providers.policy import integral, schema_problem
from usage_orchestration.providers.records import (
    DayCoverage,
    FetchChunk,
    FetchResult,
    FetchStream,
    UsageRow,
)

PROVIDER = "phala"
USAGE_PATH = "/api/v1/apps/{app_id}/usage"
# rows handed to the loader at a time (a page holds up to 5,000 records)
ROWS_PER_CHUNK = 1000


def _json_number(v: Any) -> Any:
    """``type: number``: a JSON number, never text or a boolean (pydantic would read "1.5" and
    true as numbers). Floats go through str so 0.1 stays 0.1; a float with more decimals than
    the warehouse's scale (0.30000000000000004, a Float64 sum) is rounded half-even to it: the
    digits beyond are binary noise, and kept they would fail the storage audit on every run."""
    if isinstance(v, bool) or not isinstance(v, int | float | Decimal):
        raise ValueError(f"must be a JSON number, got {v!r}")
    if not isinstance(v, float):
        return v
    exact = Decimal(str(v))
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -SCALE:  # finite and over-precise
        return exact.quantize(QUANTUM, rounding=ROUND_HALF_EVEN, context=CONTEXT)
    return str(v)


def _json_integer(v: Any) -> Any:
    """``type: integer``: JSON Schema (OpenAPI 3.1) counts 2.0 and 5e2 as integers, so a float
    with no fractional part is that int; below 2**53 only, where a float is still exact. Text,
    booleans and 5001.5 are not integers (strict int would read "5001" and true)."""
    v = integral(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be a JSON integer, got {v!r}")
    return v


class PhalaUsageRecord(BaseModel):
    """MeteredUsageResponse: every field is required by the contract."""

    model_config = ConfigDict(extra="ignore")

    instance_id: str
    project_id: int = Field(strict=True)  # strict after _integer: "5001" and true are not ints
    team_id: int = Field(strict=True)
    timestamp: str
    event_type: str
    cost: Decimal
    details: str | None
    usage_type: str  # no published enum: unknown categories are kept
    billing_start: str
    billing_end: str
    duration_minutes: Decimal
    billing_key: str = Field(min_length=1)
    billing_hour: str
    billing_day: date

    @field_validator("cost", "duration_minutes", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return _json_number(v)

    @field_validator("project_id", "team_id", mode="before")
    @classmethod
    def _integer(cls, v: Any) -> Any:
        return _json_integer(v)

    @field_validator("billing_day", mode="before")
    @classmethod
    def _day_text(cls, v: Any) -> Any:
        # a bare number would otherwise be read as a Unix timestamp
        if not isinstance(v, str):
            raise ValueError(f"must be a date string, got {v!r}")
        return v

    def decoded_details(self) -> dict[str, Any] | None:
        # "" is a string column's default: no details, like null (never "not valid JSON")
        if self.details is None or not self.details.strip():
            return None
        value = json.loads(self.details)
        return value if isinstance(value, dict) else {"value": value}


class PhalaUsagePage(BaseModel):
    """AppUsageResponse: ``usage``, ``total`` and ``total_cost`` are all required."""

    model_config = ConfigDict(extra="ignore")

    usage: list[PhalaUsageRecord]
    total: int = Field(strict=True)  # records on this page (INFERRED): not compared
    total_cost: Decimal  # cost of this page (INFERRED): not compared

    @field_validator("total_cost", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return _json_number(v)

    @field_validator("total", mode="before")
    @classmethod
    def _integer(cls, v: Any) -> Any:
        return _json_integer(v)


def _error(app_id: str, window: str, message: str) -> ProviderResponseError:
    return ProviderResponseError(PROVIDER, message, account=f"app {app_id}", window=window)


def _record_of(response: httpx.Response, loc: tuple[Any, ...]) -> str:
    """``record <billing_key>: `` when a validation error lies inside one record, else ``""``."""
    key = offending_item(response, loc, "usage", "billing_key")
    return f"record {str(key)[:120]!r}: " if key is not None else ""


def _parse_ts(value: str, *, field: str, app_id: str, window: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _error(
            app_id, window, f"field {field!r} is not an ISO date/time: {value[:40]!r}"
        ) from None
    return as_utc(dt)


def check_record(rec: PhalaUsageRecord, app_id: str, start: date, end_inclusive: date) -> None:
    """A record answers the request only inside the window, on the day its own billing period
    starts, stamped no earlier than that period: anything else would land on a wrong day."""
    window = f"{start.isoformat()}..{end_inclusive.isoformat()}"
    where = f"record {rec.billing_key[:120]!r}"
    try:
        rec.decoded_details()
    except ValueError:
        raise _error(app_id, window, f"{where}: field 'details' is not valid JSON") from None
    if not start <= rec.billing_day <= end_inclusive:
        raise _error(
            app_id, window, f"{where}: billing_day {rec.billing_day} is outside the window"
        )
    begins = _parse_ts(rec.billing_start, field="billing_start", app_id=app_id, window=window)
    if begins.date() != rec.billing_day:
        raise _error(
            app_id,
            window,
            f"{where}: billing_day {rec.billing_day} disagrees with billing_start "
            f"{rec.billing_start!r}",
        )
    # timestamp may be the period's end, its hour bucket or when the record was written
    # (undocumented): every reading lies on or after the billing day, so only a stamp on an
    # earlier day contradicts the record
    stamped = _parse_ts(rec.timestamp, field="timestamp", app_id=app_id, window=window)
    if stamped.date() < rec.billing_day:
        raise _error(
            app_id,
            window,
            f"{where}: timestamp {rec.timestamp!r} is on a day before its billing_day "
            f"{rec.billing_day} (billing_start {rec.billing_start!r})",
        )


class PhalaClient(ProviderClient):
    """Fetches and normalizes one app's usage over a window of whole UTC days."""

    SETTINGS_OPTIONS = ("api_version", "page_size", "max_pages", "timeout_s")

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        api_version: str = "2026-01-21",
        page_size: int = 500,
        max_pages: int = 1000,
        **http: Unpack[HttpOptions],
    ) -> None:
        if not api_key:
            raise ValueError("phala: the API key is empty; set PHALA_API_KEY")
        self.page_size = page_size
        self.max_pages = max_pages
        self.http = ProviderHttp(
            PROVIDER,
            base_url,
            headers={
                "X-API-Key": api_key,
                "X-Phala-Version": api_version,
                "Accept": "application/json",
            },
            secrets=[api_key],
            **http,
        )

    def fetch_records(
        self, app_id: str, start: date, end_inclusive: date
    ) -> list[PhalaUsageRecord]:
        """Every record of ``app_id`` billed from ``start`` through ``end_inclusive``, once each."""
        return [r for page in self.record_pages(app_id, start, end_inclusive) for r in page]

    def record_pages(
        self, app_id: str, start: date, end_inclusive: date
    ) -> Iterator[list[PhalaUsageRecord]]:
        """The records of ``app_id`` billed from ``start`` through ``end_inclusive``, page by
        page as they arrive, each record once (an identical copy on a later page is dropped, a
        disagreeing one is an error). Only a digest of each record seen is kept, so memory holds
        one page however long the window."""
        window = f"{start.isoformat()}..{end_inclusive.isoformat()}"
        after = end_inclusive + timedelta(days=1)  # end_date: the midnight ending the window
        # start_date is asked one day early: whether it is inclusive is undocumented, and a
        # server reading it as exclusive would drop the first day's 00:00 record; the day before
        # is complete and stable, and its records, not asked for, are dropped
        before = start - timedelta(days=1)
        padding = {before, after}
        params_base = {
            "start_date": iso_utc(utc_midnight(before)),
            "end_date": iso_utc(utc_midnight(after)),
            "limit": self.page_size,
        }
        guard = PageGuard(PROVIDER, self.max_pages, account=f"app {app_id}", window=window)
        seen: dict[str, int] = {}  # billing_key → digest of the record's values
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
            new = self._merge(page, seen, app_id, window, offset)
            for rec in new:
                if rec.billing_day not in padding:
                    check_record(rec, app_id, start, end_inclusive)
            # the padded day before start, and the other reading of end_date (inclusive): the
            # day that starts at it; records of either were not asked for and are dropped
            yield [r for r in new if r.billing_day not in padding]
            if len(page.usage) < self.page_size:
                break
            if not new:  # a full page of records already seen: offset is ignored, not paging
                raise _error(
                    app_id,
                    window,
                    f"the full page at offset {offset} repeats only records already seen; "
                    "refusing to loop",
                )
            offset += self.page_size

    def _merge(
        self,
        page: PhalaUsagePage,
        seen: dict[str, int],
        app_id: str,
        window: str,
        offset: int,
    ) -> list[PhalaUsageRecord]:
        """Record the page's records by ``billing_key``; return the new ones. A copy that
        disagrees with the one already seen is an error, never "first one wins"."""
        if len(page.usage) > self.page_size:
            raise _error(
                app_id,
                window,
                f"the page at offset {offset} holds {len(page.usage)} records, more than the "
                f"limit {self.page_size} that was sent; offset paging cannot be trusted",
            )
        new: list[PhalaUsageRecord] = []
        for rec in page.usage:
            digest = _digest(rec)
            known = seen.get(rec.billing_key)
            if known is None:
                seen[rec.billing_key] = digest
                new.append(rec)
            elif known != digest:
                raise _error(
                    app_id,
                    window,
                    f"billing_key {rec.billing_key[:120]!r} is reported twice with different "
                    f"values (offset {offset})",
                )
        return new

    @staticmethod
    def _parse_page(
        response: httpx.Response, app_id: str, window: str, offset: int
    ) -> PhalaUsagePage:
        try:
            # from the bytes: a 5,000-record page never exists as a dict tree beside its models
            return PhalaUsagePage.model_validate_json(response.content)
        except ValidationError as exc:
            problem = schema_problem(exc, lambda loc: _record_of(response, loc))
            raise _error(
                app_id, window, f"malformed usage page at offset {offset}: {problem}"
            ) from None

    def fetch_days(self, app_ids: Sequence[str], days: Sequence[date]) -> FetchResult:
        """Normalized rows and coverage for every app and every day in ``days`` (one request
        series per app over the whole span, not one per day), in memory."""
        return self.stream_days(app_ids, days).collect()

    def stream_days(self, app_ids: Sequence[str], days: Sequence[date]) -> FetchStream:
        """``fetch_days`` as a stream: a chunk of rows per page, then each app's coverage once
        its series ended (what the loader writes page by page)."""
        return FetchStream(self._chunks(app_ids, days), self.stats)

    def _chunks(self, app_ids: Sequence[str], days: Sequence[date]) -> Iterator[FetchChunk]:
        if not days:
            return
        wanted = sorted(set(days))
        start, end = wanted[0], wanted[-1]
        fetched_at = datetime.now(UTC)
        for app_id in app_ids:
            per_day: dict[date, int] = dict.fromkeys(wanted, 0)
            first_day: date | None = None  # the app's first day with records in the span
            for page in self.record_pages(app_id, start, end):
                if page:
                    earliest = min(rec.billing_day for rec in page)
                    first_day = earliest if first_day is None else min(first_day, earliest)
                self.sync_stats()
                # a full page (5,000 records) is normalized and handed on a slice at a time:
                # its rows, their warehouse records and their insert never all exist at once
                for first in range(0, len(page), ROWS_PER_CHUNK):
                    rows = [
                        normalize(rec, app_id, fetched_at)
                        for rec in page[first : first + ROWS_PER_CHUNK]
                        if rec.billing_day in per_day  # other days of the span were not asked for
                    ]
                    for row in rows:
                        per_day[row.usage_date] += 1
                    yield FetchChunk(rows, [])
            yield FetchChunk([], app_coverage(app_id, wanted, per_day, first_day))
        self.sync_stats()


def _digest(rec: PhalaUsageRecord) -> int:
    """A digest of every value of a record: two copies of one billing_key must agree."""
    return hash(tuple(rec.__dict__.values()))


def app_coverage(
    app_id: str, wanted: list[date], per_day: dict[date, int], first_day: date | None
) -> list[DayCoverage]:
    """One app's coverage of ``wanted`` once its series ended (``per_day``: rows per day,
    ``first_day``: the earliest ``billing_day`` of any record answered, None when none was)."""
    if first_day is None:
        # storage is billed per minute even for stopped CVMs: a live app always has records,
        # so an answer with none is missing data (or a deleted app), not zero usage
        window = f"{wanted[0].isoformat()}..{wanted[-1].isoformat()}"
        reason = (
            f"provider_unavailable: Phala's answer holds no usage record for app {app_id} in "
            f"{window} (a live app is billed storage every minute, so none is not zero usage)"
        )
        return [DayCoverage(PROVIDER, app_id, d, "unavailable", reason, 0) for d in wanted]
    out: list[DayCoverage] = []
    for d in wanted:
        if per_day[d] or d < first_day:
            # before its first record day the app did not exist yet (apps created mid-range):
            # zero rows there is the truth, not a gap
            out.append(DayCoverage(PROVIDER, app_id, d, "complete", None, per_day[d]))
            continue
        # once the app exists storage is billed every minute, so a day without records (a gap,
        # or trailing days the provider has not loaded yet) is missing data, not zero usage
        reason = (
            f"provider_unavailable: Phala's answer holds no usage record for app {app_id} on "
            f"{d.isoformat()} although it has records from {first_day.isoformat()} (storage is "
            "billed every minute once an app exists, so none is not zero usage)"
        )
        out.append(DayCoverage(PROVIDER, app_id, d, "unavailable", reason, 0))
    return out


def normalize(rec: PhalaUsageRecord, app_id: str, fetched_at: datetime) -> UsageRow:
    window = rec.billing_day.isoformat()
    try:
        details = rec.decoded_details()
    except ValueError:
        raise _error(
            app_id, window, f"record {rec.billing_key}: field 'details' is not valid JSON"
        ) from None
    start = _parse_ts(rec.billing_start, field="billing_start", app_id=app_id, window=window)
    end = _parse_ts(rec.billing_end, field="billing_end", app_id=app_id, window=window)
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
        # the record's own fields win over same-named keys inside details
        details=json.dumps(
            {**(details or {}), "event_type": rec.event_type, "project_id": rec.project_id},
            sort_keys=True,
        ),
    )
