"""The one daily partitioning (UTC) shared by every partitioned asset, from the settings.

The start day is ``partitions_start`` of the same settings as everything else (the settings
file and ``USAGE_*``, through ``load_settings()``): assets are built by functions that receive
the settings, and take their partitions from ``daily_partitions_of(settings)``. Builders that
are not handed the settings (``daily_asset`` without ``settings=``) get those of the
definitions being built (``building``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from functools import lru_cache

import dagster as dg

from usage_orchestration.settings import UsageSettings

DEFAULT_START: date = UsageSettings.model_fields["partitions_start"].default

_building: ContextVar[UsageSettings | None] = ContextVar("usage_building", default=None)


@lru_cache(maxsize=16)
def partitions_from(start: date) -> dg.DailyPartitionsDefinition:
    # one object per start day: every asset of a location shares it (jobs need one partitioning)
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone="UTC")


def daily_partitions_of(settings: UsageSettings) -> dg.DailyPartitionsDefinition:
    return partitions_from(settings.partitions_start)


@contextmanager
def building(settings: UsageSettings) -> Iterator[None]:
    """While definitions are built from ``settings``, ``current_partitions()`` are theirs."""
    token = _building.set(settings)
    try:
        yield
    finally:
        _building.reset(token)


def building_settings() -> UsageSettings | None:
    """The settings of the definitions being built (None outside ``building``)."""
    return _building.get()


def current_partitions() -> dg.DailyPartitionsDefinition:
    """The partitions of the settings being built (the default start outside ``building``)."""
    settings = _building.get()
    return partitions_from(settings.partitions_start if settings else DEFAULT_START)


# The default settings' partitioning, for tests that declare an asset of their own beside the
# built ones (built assets take theirs from the settings).
daily_partitions = partitions_from(DEFAULT_START)


@lru_cache(maxsize=16)
def monthly_partitions_from(start: date) -> dg.MonthlyPartitionsDefinition:
    """The months of the daily partitions (UTC), from the month of the first day. ``end_offset=1``
    lists the month in progress too, so its statement can be materialized as provisional."""
    return dg.MonthlyPartitionsDefinition(
        start_date=start.replace(day=1).isoformat(), timezone="UTC", end_offset=1
    )


def monthly_partitions_of(settings: UsageSettings) -> dg.MonthlyPartitionsDefinition:
    return monthly_partitions_from(settings.partitions_start)
