"""The request budget in the warehouse: one sliding window per provider account that every
process on every host sharing the warehouse draws from (``request_budget.backend: warehouse``).

The window is a log of the last send times, one row per slot (``request_budget_slot``: at most
``max_requests`` rows per budget, reused once they leave the window), so the table never grows.
Taking a slot is one short transaction that holds the budget's lock: ``SELECT … FOR UPDATE`` of
its ``request_budget`` row on PostgreSQL, the database's write lock (``BEGIN IMMEDIATE``) on
SQLite. When the window is full the transaction ends and the wait happens outside it, so a
waiting process never holds a lock another one needs.

Time: on PostgreSQL the database's own clock (``clock_timestamp()``), so hosts whose clocks
disagree still share one window; on SQLite (one host) the process's clock. Tests inject one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass

from sqlalchemy import Column, Double, Integer, String, Table, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from usage_orchestration.providers.http import ProviderError, RequestBudget, RequestBudgets
from usage_orchestration.settings import UsageSettings
from usage_orchestration.settings.secrets import redact
from usage_orchestration.warehouse.schema import metadata
from usage_orchestration.warehouse.store import Warehouse

# One row per budget (provider:account): what PostgreSQL locks while a slot is taken.
request_budget = Table(
    "request_budget",
    metadata,
    Column("budget_key", String(255), primary_key=True),
)

# The budget's send log: slot i holds the time (epoch seconds of the budget's clock) it was
# last taken.
request_budget_slot = Table(
    "request_budget_slot",
    metadata,
    Column("budget_key", String(255), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("sent_at", Double, nullable=False),
)


def budget_key(provider: str, account: str) -> str:
    return f"{provider}:{account}"


class WarehouseRequestBudget:
    """``max_requests`` per ``per_seconds`` (sliding window) of one provider account, kept in the
    warehouse (``RequestBudget`` protocol). ``clock`` defaults to the database's clock on
    PostgreSQL and ``time.time`` on SQLite. A warehouse that cannot be reached fails as a
    retryable ``ProviderError`` naming provider and account."""

    def __init__(
        self,
        warehouse: Warehouse,
        provider: str,
        account: str,
        max_requests: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.provider = provider
        self.account = account
        self.key = budget_key(provider, account)
        if max_requests < 1 or per_seconds <= 0:
            raise ValueError(
                f"request budget {self.key}: needs max_requests >= 1 and per_seconds > 0 "
                f"(got {max_requests} per {per_seconds} s)"
            )
        self.warehouse = warehouse
        self.max_requests = max_requests
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._postgres = warehouse.engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return (
            f"WarehouseRequestBudget({self.key!r}, {self.max_requests} per "
            f"{self.per_seconds:g} s, {self.warehouse!r})"
        )

    def acquire(self) -> float:
        """Take one slot, waiting (outside any transaction) while the window is full; return
        the seconds waited."""
        waited = 0.0
        while True:
            try:
                self.warehouse.ensure_schema()  # the tables exist on first use, like all others
                wait = self.try_acquire()
            except OperationalError as exc:
                # the warehouse is down or locked beyond its timeout: a transient failure of the
                # step (retried the Dagster way), named by provider and account, no secret in it
                raise ProviderError(
                    self.provider,
                    f"request budget {self.key} in the warehouse unavailable: "
                    f"{redact(str(exc.orig))[:300]}",
                    account=self.account,
                    retryable=True,
                ) from None
            if wait is None:
                return waited
            wait = max(wait, 0.001)
            self._sleep(wait)
            waited += wait

    def try_acquire(self) -> float | None:
        """Take a slot if the window has one (None), else the seconds until one frees. One
        transaction under the budget's lock."""
        with self._locked() as conn:
            now = self._now(conn)
            slots = conn.execute(
                select(request_budget_slot.c.slot, request_budget_slot.c.sent_at)
                .where(request_budget_slot.c.budget_key == self.key)
                .order_by(request_budget_slot.c.sent_at, request_budget_slot.c.slot)
            ).all()
            horizon = now - self.per_seconds
            live = [s for s in slots if s.sent_at > horizon]
            if len(live) >= self.max_requests:
                # a smaller limit than the rows held: as many must leave the window as exceed it
                return live[len(live) - self.max_requests].sent_at + self.per_seconds - now
            expired = [s for s in slots if s.sent_at <= horizon]
            if expired:
                conn.execute(
                    update(request_budget_slot)
                    .where(
                        request_budget_slot.c.budget_key == self.key,
                        request_budget_slot.c.slot == expired[0].slot,
                    )
                    .values(sent_at=now)
                )
            else:
                conn.execute(
                    insert(request_budget_slot).values(
                        budget_key=self.key,
                        slot=max((s.slot for s in slots), default=-1) + 1,
                        sent_at=now,
                    )
                )
            return None

    @contextmanager
    def _locked(self) -> Iterator[Connection]:
        """A transaction holding the budget's lock until it commits (or rolls back)."""
        with self.warehouse.engine.connect() as conn:
            try:
                if self._postgres:
                    lock = (
                        select(request_budget.c.budget_key)
                        .where(request_budget.c.budget_key == self.key)
                        .with_for_update()
                    )
                    if conn.execute(lock).first() is None:  # the budget's first use
                        conn.execute(
                            pg_insert(request_budget)
                            .values(budget_key=self.key)
                            .on_conflict_do_nothing(index_elements=["budget_key"])
                        )
                        conn.execute(lock)
                else:
                    # pysqlite begins a deferred transaction, whose reads take no write lock: two
                    # processes could read the same free slot. IMMEDIATE takes the database's
                    # write lock before anything is read (waiting up to the busy timeout).
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    conn.execute(
                        sqlite_insert(request_budget)
                        .values(budget_key=self.key)
                        .on_conflict_do_nothing(index_elements=["budget_key"])
                    )
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _now(self, conn: Connection) -> float:
        if self._clock is not None:
            return self._clock()
        if self._postgres:
            # the database's clock, not the host's: every host reads the same one
            return float(
                conn.execute(select(func.extract("epoch", func.clock_timestamp()))).one()[0]
            )
        return time.time()


@dataclass(frozen=True, eq=False)  # one budget source is not equal to another
class WarehouseBudgets:
    """``RequestBudgets`` in one warehouse: budget ``provider:account`` for every provider
    account, shared by every process using the warehouse; ``clock`` and ``sleep`` go to each
    budget (``WarehouseRequestBudget``)."""

    warehouse: Warehouse
    _: KW_ONLY
    clock: Callable[[], float] | None = None
    sleep: Callable[[float], None] = time.sleep

    def budget(
        self, provider: str, account: str, max_requests: int, per_seconds: float
    ) -> RequestBudget:
        return WarehouseRequestBudget(
            self.warehouse,
            provider,
            account,
            max_requests,
            per_seconds,
            clock=self.clock,
            sleep=self.sleep,
        )


def request_budgets(settings: UsageSettings, warehouse: Warehouse) -> RequestBudgets | None:
    """The request budgets the settings choose (``request_budget.backend``): the warehouse's,
    or None for the embedded default, the files under ``state_dir``."""
    if settings.request_budget_backend == "warehouse":
        return WarehouseBudgets(warehouse)
    return None
