"""Assembles assets, checks, jobs, schedules, sensors and resources from the settings.

Each ``defs/<part>.py`` listed in ``PARTS`` exposes ``definitions(settings) -> Definitions``
holding its own assets, checks, sensors and the resources only it uses; the resources every part
shares (``settings``, ``warehouse``) are added here.
"""

from __future__ import annotations

import importlib

from dagster import Definitions, in_process_executor

from usage_orchestration.defs.resources import WarehouseResource
from usage_orchestration.settings import UsageSettings

PARTS = ("phala", "neon", "forge", "ledger", "reconcile", "budgets", "alerts", "jobs")


def build_definitions(settings: UsageSettings) -> Definitions:
    parts = []
    for name in PARTS:
        module_name = f"usage_orchestration.defs.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        parts.append(module.definitions(settings))
    shared = Definitions(
        # Steps are small I/O-bound loads: spawning a process per step costs ~3 s on 2 cores.
        executor=in_process_executor,
        resources={
            "settings": settings,
            "warehouse": WarehouseResource(url=settings.warehouse_url),
        },
    )
    return Definitions.merge(shared, *parts)
