"""Freshness in the UI: a time-partition freshness check on every daily asset.

Once the day's deadline (``alerts.stale_deadline_utc``, 09:00 UTC: after the 06:00 schedule,
the same deadline as the ``stale_data`` alert) has passed, each daily asset must hold a
materialization of yesterday's partition; if it does not, its ``freshness_check`` fails with
severity ERROR and the asset is red in the catalog. ``freshness_checks_sensor`` runs the checks
(every ``alerts.freshness_interval_s``); paging stays with the ``stale_data_alerts`` sensor,
which reads the warehouse's coverage (a run that "succeeded" with an unavailable day is still
stale there).

The daily assets are found in the other parts' definitions (every asset on the daily
partitioning), so a new daily asset gets its check without a line here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import time

import dagster as dg

from usage_orchestration.defs.partitions import daily_partitions_of
from usage_orchestration.settings import UsageSettings

SENSOR_NAME = "freshness_checks_sensor"


def deadline_cron(deadline: time) -> str:
    """The daily cron of a UTC time of day (``09:00`` → ``0 9 * * *``)."""
    return f"{deadline.minute} {deadline.hour} * * *"


def daily_asset_keys(
    parts: Sequence[dg.Definitions], daily: dg.DailyPartitionsDefinition
) -> list[dg.AssetKey]:
    """Every asset of ``parts`` on the daily partitioning. The monthly statement is not one: it
    is provisional until its month closes and refreshed at 14:00, so a 09:00 deadline is wrong
    for it."""
    keys: set[dg.AssetKey] = set()
    for part in parts:
        for asset in part.assets or []:
            if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def == daily:
                keys.update(asset.keys)
    return sorted(keys, key=lambda k: k.to_user_string())


def freshness_checks(
    settings: UsageSettings, keys: Sequence[dg.AssetKey]
) -> Sequence[dg.AssetChecksDefinition]:
    with warnings.catch_warnings():
        # superseded by FreshnessPolicy, which does not yet fail a partition in the catalog
        # the way a check does; the builders are still supported in 1.13
        warnings.simplefilter("ignore")
        return dg.build_time_partition_freshness_checks(
            assets=list(keys),
            deadline_cron=deadline_cron(settings.alerts.stale_deadline_utc),
            timezone="UTC",
            severity=dg.AssetCheckSeverity.ERROR,
        )


def definitions(settings: UsageSettings, parts: Sequence[dg.Definitions]) -> dg.Definitions:
    checks = freshness_checks(settings, daily_asset_keys(parts, daily_partitions_of(settings)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sensor = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks,
            minimum_interval_seconds=settings.alerts.freshness_interval_s,
            name=SENSOR_NAME,
            default_status=dg.DefaultSensorStatus.RUNNING,
        )
    return dg.Definitions(asset_checks=checks, sensors=[sensor])
