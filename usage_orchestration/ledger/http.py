"""The ledger read through the Usage Reporting HTTP API (specs/usage-reporting-ledger.md).

The API aggregates on its side; this client only reshapes its answers. Timeouts, retries
(429/5xx, Retry-After) and secret redaction come from ``providers/http.py``.

Limitations of this backend (the SQL backend has none of them):

- The API reports credits and event counts, never raw quantities: ``daily_usage`` returns
  ``quantity=None, unit=None``, so reconciliation over HTTP compares credits only.
- ``usageSummary`` is per (entity, resource type) over the whole requested range, and
  ``dailyTotals`` has no entity: ``daily_usage`` asks for one day, and ``credits_by_day`` sends
  one request per day of its span.
- ``budgets`` come from the ``budgets`` block of a request whose range ends in that month; an
  API that only ever returns the *current* budgets cannot show an old month's budgets.
- Numbers are JSON numbers; they are parsed straight into Decimal (never through float).
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from usage_orchestration.ledger import base
from usage_orchestration.ledger.sql import CreditPoolNotConfigured, check_month, q
from usage_orchestration.providers.http import ProviderHttp, ProviderResponseError, RetryPolicy

PROVIDER = "ledger"


class _Api(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class UsageSummaryItem(_Api):
    entity_id: str
    entity_type: str
    resource_type: str
    total_credits: Decimal
    total_events: int


class BudgetEntity(_Api):
    name: str | None = None
    slug: str | None = None
    owner_id: str | None = None


class BudgetItem(_Api):
    entity_id: str
    entity_type: str
    monthly_budget: Decimal | None  # null: the entity has no budget (left out of ``budgets``)
    credits_used: Decimal
    is_over_budget: bool
    budget_percent: Decimal | None = None
    budget_remaining: Decimal | None = None
    entity: BudgetEntity | None = None


class SyncBlock(_Api, base.SyncStatus):
    """The ``sync`` block: ``SyncStatus``'s fields in camelCase."""

    @field_validator("staleness_level", mode="before")
    @classmethod
    def _level_text(cls, v: Any) -> Any:
        # the document shows only null: a number (a level) is kept as its text
        return str(v) if isinstance(v, int | float | Decimal) and not isinstance(v, bool) else v


class PoolBlock(_Api):
    """The ``creditPool`` block; a null ``remaining`` is what is left of ``included``."""

    included: Decimal
    used: Decimal
    remaining: Decimal | None = None


class UsageResponse:
    """``GET /api/usage``, each block validated only when a reader asks for it: a surprise in a
    block one method does not use (an untyped ``stalenessLevel``, a null budget) must not fail
    the others' reads (the daily usage behind reconciliation above all)."""

    def __init__(self, body: Any, window: str) -> None:
        if not isinstance(body, dict):
            raise ProviderResponseError(
                PROVIDER, "GET /api/usage: the body is not a JSON object", window=window
            )
        self._body = body
        self.window = window

    def block(self, key: str, model: Any, *, required: bool = True, default: Any = None) -> Any:
        """The block ``key`` (camelCase, as sent) validated as ``model``; ``default`` when an
        optional block is absent."""
        if key not in self._body:
            if required:
                raise ProviderResponseError(
                    PROVIDER, f"GET /api/usage: field {key!r}: missing", window=self.window
                )
            return default
        return _validated(self._body[key], model, "/api/usage", self.window, prefix=(key,))

    @property
    def usage_summary(self) -> list[UsageSummaryItem]:
        items: list[UsageSummaryItem] = self.block("usageSummary", list[UsageSummaryItem])
        return items

    @property
    def budgets(self) -> list[BudgetItem]:
        items: list[BudgetItem] = self.block(
            "budgets", list[BudgetItem], required=False, default=[]
        )
        return items

    @property
    def credit_pool(self) -> base.CreditPool | None:
        # required; null when the ledger has no credit pool for the month (not configured)
        pool: PoolBlock | None = self.block("creditPool", PoolBlock | None)
        if pool is None:
            return None
        left = pool.remaining if pool.remaining is not None else pool.included - pool.used
        return base.CreditPool(included=pool.included, used=pool.used, remaining=left)

    @property
    def sync(self) -> SyncBlock:
        block: SyncBlock = self.block("sync", SyncBlock, required=False, default=SyncBlock())
        return block


T = TypeVar("T")


def _validated(value: Any, model: Any, path: str, window: str, prefix: tuple[str, ...] = ()) -> Any:
    try:
        return TypeAdapter(model).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in (*prefix, *first["loc"])) or "<body>"
        raise ProviderResponseError(
            PROVIDER,
            f"GET {path}: field {field!r}: {first['msg']} ({exc.error_count()} error(s))",
            window=window,
        ) from None


class HttpLedger(base.LedgerLocation):
    """``LedgerReader`` over the Usage Reporting API at ``base_url`` (bearer ``token``)."""

    backend = "http"

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("ledger (http): an API token is required (LEDGER_API_TOKEN)")
        self.base_url = base_url
        self.http = ProviderHttp(
            PROVIDER,
            base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout_s=timeout_s,
            retry=retry or RetryPolicy(),
            transport=transport,
            secrets=[token],
            sleep=sleep,
        )

    @property
    def location(self) -> str:
        return self.base_url

    def close(self) -> None:
        self.http.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any], window: str, model: type[T] | Any) -> Any:
        resp = self.http.request("GET", path, params=params, window=window)
        try:
            body = json.loads(resp.text, parse_float=Decimal)
        except ValueError:
            raise ProviderResponseError(
                PROVIDER, f"GET {path}: the body is not JSON", window=window
            ) from None
        return _validated(body, model, path, window)

    def usage(self, start: date, end_inclusive: date) -> UsageResponse:
        """``GET /api/usage`` for the inclusive date range."""
        window = start.isoformat() if start == end_inclusive else f"{start}..{end_inclusive}"
        params = {"startDate": start.isoformat(), "endDate": end_inclusive.isoformat()}
        return UsageResponse(self._get("/api/usage", params, window, Any), window)

    # -- LedgerReader -----------------------------------------------------------------------
    def daily_usage(self, day: date) -> list[base.LedgerDailyUsage]:
        return base.in_key_order(
            base.LedgerDailyUsage.of(
                day, s, unit=None, quantity=None, credits=q(s.total_credits), events=s.total_events
            )
            for s in self.usage(day, day).usage_summary
        )

    def credits_by_day(
        self, start: date, end_inclusive: date
    ) -> list[tuple[date, str, str, str, Decimal]]:
        base.check_span(start, end_inclusive, "credits_by_day")
        out: list[tuple[date, str, str, str, Decimal]] = []
        day = start
        while day <= end_inclusive:
            out += [
                (u.usage_date, u.entity_id, u.entity_type, u.resource_type, u.credits)
                for u in self.daily_usage(day)
            ]
            day = date.fromordinal(day.toordinal() + 1)
        return out

    def budgets(self, month: str) -> list[base.EntityBudget]:
        check_month(month)
        y, m = int(month[:4]), int(month[5:])
        first, last = date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])
        return [
            base.EntityBudget(
                entity_id=b.entity_id,
                entity_type=b.entity_type,
                name=b.entity.name if b.entity else None,
                monthly_budget=q(b.monthly_budget),
            )
            for b in sorted(self.usage(first, last).budgets, key=lambda b: b.entity_id)
            if b.monthly_budget is not None
        ]

    def credit_pool(self, as_of: date) -> base.CreditPool:
        pool = self.usage(as_of.replace(day=1), as_of).credit_pool
        if pool is None:
            raise CreditPoolNotConfigured(
                f"ledger (http {self.location}): creditPool is null for "
                f"{as_of.replace(day=1).isoformat()}..{as_of.isoformat()}: no credit pool set"
            )
        return base.CreditPool(
            included=q(pool.included), used=q(pool.used), remaining=q(pool.remaining)
        )

    def sync_status(self) -> base.SyncStatus:
        today = datetime.now(UTC).date()
        return base.SyncStatus.of(self.usage(today, today).sync)

    def resource_types(self) -> list[base.ResourceType]:
        # one-word fields: the API's items are ResourceTypes as they stand
        items: list[base.ResourceType] = self._get(
            "/api/usage/resource-types", {}, "registry", list[base.ResourceType]
        )
        return sorted(items, key=lambda r: r.slug)
