"""The code location: assets, checks, jobs, schedules, sensors and resources from the settings.

Each part (``defs/<part>.py``) exposes ``definitions(settings) -> Definitions`` holding its own
assets, checks, sensors and the resources only it uses; the resources every part shares
(``settings``, ``warehouse``) are added here.
"""

from __future__ import annotations

import dagster as dg

from usage_orchestration.defs import (
    alerts,
    budgets,
    focus,
    freshness,
    jobs,
    ledger,
    providers,
    reconcile,
    statement,
)
from usage_orchestration.defs.executor import build_executor
from usage_orchestration.defs.partitions import building
from usage_orchestration.defs.resources import WarehouseResource, database_url_config
from usage_orchestration.settings import UsageSettings
from usage_orchestration.settings.secrets import WAREHOUSE_URL_ENV

PARTS = (providers, ledger, reconcile, budgets, focus, statement, alerts, jobs)


def build_definitions(settings: UsageSettings) -> dg.Definitions:
    """Every part built from ``settings`` (their partitions start at ``partitions_start``)."""
    url = database_url_config("warehouse_url", WAREHOUSE_URL_ENV, settings.warehouse_url)
    with building(settings):
        shared = dg.Definitions(
            # the profile's engine by default (demo: in_process, a process per step costs ~3 s on
            # 2 cores; production: multiprocess, providers overlap); settings/execution.py
            executor=build_executor(settings),
            resources={
                # A plain object: Dagster keeps it in memory and stores none of it.
                "settings": settings,
                "warehouse": WarehouseResource(url=url),
            },
        )
        parts = [part.definitions(settings) for part in PARTS]
        # freshness checks on every daily asset the parts define
        return dg.Definitions.merge(shared, *parts, freshness.definitions(settings, parts))
