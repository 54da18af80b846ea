"""The interface both ledger backends (SQL, Usage Reporting HTTP API) implement.

Every method aggregates on the ledger's side (SQL GROUP BY, or the API's own aggregation): raw
``usage_event`` rows are never loaded into Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from usage_orchestration.core.dates import aware_utc

# What names the entity a ledger record is about, on every backend.
ENTITY_KEY = ("entity_id", "entity_type", "resource_type")


class LedgerDailyUsage(BaseModel):
    """One (day, entity, resource type, unit) aggregate of usage_event."""

    model_config = ConfigDict(frozen=True)

    usage_date: date
    entity_id: str
    entity_type: str
    resource_type: str
    unit: str | None  # None when the backend cannot tell (HTTP API reports credits only)
    quantity: Decimal | None  # None when the backend cannot tell (HTTP API)
    credits: Decimal
    events: int

    @classmethod
    def of(cls, day: date, key: Any, **figures: Any) -> LedgerDailyUsage:
        """``day``'s ``figures`` (unit, quantity, credits, events: validated as the fields) of a
        backend record naming the ``ENTITY_KEY`` fields (an aggregate row, an API summary item)."""
        return cls(usage_date=day, **{name: getattr(key, name) for name in ENTITY_KEY}, **figures)


def holds_events(day_usage: Iterable[LedgerDailyUsage]) -> bool:
    """Whether a day's ledger usage holds any event. The platform always records some usage, so
    a day without one is a ledger or sync problem, even when the answer lists entities with
    zero events (a summary may list every entity, not only those that used something)."""
    return any(u.events for u in day_usage)


def in_key_order(usage: Iterable[LedgerDailyUsage]) -> list[LedgerDailyUsage]:
    """A day's usage in the order every backend returns it: entity, resource type, unit."""
    return sorted(usage, key=lambda u: (u.entity_id, u.resource_type, u.unit or ""))


class EntityBudget(BaseModel):
    model_config = ConfigDict(frozen=True)

    entity_id: str
    entity_type: str
    name: str | None = None
    monthly_budget: Decimal


class CreditPool(BaseModel):
    model_config = ConfigDict(frozen=True)

    included: Decimal
    used: Decimal
    remaining: Decimal


class SyncStatus(BaseModel):
    """License Manager sync health (the Usage Reporting API's ``sync`` block)."""

    model_config = ConfigDict(frozen=True)

    synced_at: datetime | None = None
    last_sync_failed_at: datetime | None = None
    # lm_unreachable | lm_unavailable | lm_error | license_not_recognized; unknown codes tolerated
    last_sync_failure_code: str | None = None
    staleness_level: str | None = None

    @classmethod
    def of(cls, record: Any) -> SyncStatus:
        """From a record with the same four fields (a ``license_sync`` row, the API's ``sync``
        block), its timestamps in UTC."""
        return cls(
            synced_at=aware_utc(record.synced_at),
            last_sync_failed_at=aware_utc(record.last_sync_failed_at),
            last_sync_failure_code=record.last_sync_failure_code,
            staleness_level=record.staleness_level,
        )


class ResourceType(BaseModel):
    model_config = ConfigDict(frozen=True)

    slug: str
    name: str
    category: str
    mode: str  # event | gauge
    unit: str


def check_span(start: date, end_inclusive: date, what: str) -> None:
    if end_inclusive < start:
        raise ValueError(f"ledger: {what} range {start}..{end_inclusive} is reversed")


class LedgerLocation:
    """How a reader names where it reads (``backend`` and ``location``, no secret in it), for
    logs, metadata and ``repr``."""

    backend: str

    @property
    def location(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.backend} {self.location}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


class LedgerReader(Protocol):
    """What the assets need from the ledger."""

    def daily_usage(self, day: date) -> list[LedgerDailyUsage]:
        """Usage of ``day`` (UTC) per entity, resource type and unit."""
        ...

    def credits_by_day(
        self, start: date, end_inclusive: date
    ) -> list[tuple[date, str, str, str, Decimal]]:
        """(day, entity_id, entity_type, resource_type, credits) for each day of the span."""
        ...

    def budgets(self, month: str) -> list[EntityBudget]:
        """The budgets in force in ``month`` (YYYY-MM)."""
        ...

    def credit_pool(self, as_of: date) -> CreditPool:
        """The shared pool's included credits for ``as_of``'s month and use through ``as_of``."""
        ...

    def sync_status(self) -> SyncStatus: ...

    def resource_types(self) -> list[ResourceType]: ...
