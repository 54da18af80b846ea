"""The normalized provider usage row (FOCUS-aligned names) and per-day fetch coverage."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from usage_orchestration.core.usage import Charge


class UsageRow(Charge):
    """One row per (provider, account, resource, metric, charge period, group)."""

    source_key: str = Field(min_length=1)  # idempotency key within (provider, usage_date)
    details: str | None = None  # provider details as JSON text


CoverageStatus = Literal["complete", "unavailable"]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DayCoverage:
    """Whether (provider, account, day) was fetched. ``unavailable`` days carry a reason and are
    never written as zero usage. A (validating) dataclass, so the clients build it positionally."""

    provider: str
    account_id: str  # the configured account: Phala app, Neon project/org, Forge app+resource
    usage_date: date
    status: CoverageStatus
    reason: str | None = None
    row_count: int = 0


class FetchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[UsageRow]
    coverage: list[DayCoverage]
    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0  # waited for the shared request budget (rate limit)


@dataclass(frozen=True)
class FetchChunk:
    """One piece of a fetch as it arrives (a page, a request series): rows, and the coverage
    that became known with it (an account's days once its series ended). A range is written
    chunk by chunk, so memory holds one page however long the range."""

    rows: list[UsageRow] = field(default_factory=list)
    coverage: list[DayCoverage] = field(default_factory=list)


@dataclass
class FetchStats:
    """What a fetch cost; final once its chunks are exhausted."""

    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0


class FetchStream:
    """A fetch as a stream of chunks (iterate once) and, once exhausted, what it cost."""

    def __init__(self, chunks: Iterable[FetchChunk], stats: FetchStats | None = None) -> None:
        self._chunks = iter(chunks)
        self.stats = stats or FetchStats()

    def __iter__(self) -> Iterator[FetchChunk]:
        return self._chunks

    @classmethod
    def of(cls, result: FetchResult) -> FetchStream:
        """A whole fetch (held in memory) as a one-chunk stream."""
        stats = FetchStats(result.requests, result.retries, result.budget_wait_s)
        return cls([FetchChunk(list(result.rows), list(result.coverage))], stats)

    def collect(self) -> FetchResult:
        """Every chunk in memory, as one FetchResult (tests, small fetches)."""
        rows: list[UsageRow] = []
        coverage: list[DayCoverage] = []
        for chunk in self:
            rows += chunk.rows
            coverage += chunk.coverage
        return FetchResult(
            rows=rows,
            coverage=coverage,
            requests=self.stats.requests,
            retries=self.stats.retries,
            budget_wait_s=self.stats.budget_wait_s,
        )
