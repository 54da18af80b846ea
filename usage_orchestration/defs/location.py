"""The code location: assets, checks, jobs, schedules, sensors and resources from the settings.

Each part (``defs/<part>.py``) exposes ``definitions(settings) -> Definitions`` holding its own
assets, checks, sensors and the resources only it uses; the resources every part shares
(``settings``, ``warehouse``) are added here.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from usage_orchestration.defs import alerts, budgets, focus, jobs, ledger, providers, reconcile
from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.settings import UsageSettings

PARTS = (providers, ledger, reconcile, budgets, focus, alerts, jobs)


def build_definitions(settings: UsageSettings) -> Definitions:
    shared = Definitions(
        # Steps are small I/O-bound loads: spawning a process per step costs ~3 s on 2 cores.
        executor=in_process_executor,
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
        },
    )
    return Definitions.merge(shared, *(part.definitions(settings) for part in PARTS))
