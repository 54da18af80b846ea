"""Assembles assets, checks, jobs, schedules, sensors and resources from the settings."""

from __future__ import annotations

from dagster import Definitions, EnvVar

from usage_orchestration.defs.phala import phala_usage
from usage_orchestration.defs.resources import PhalaApiResource, WarehouseResource
from usage_orchestration.settings import UsageSettings


def build_definitions(settings: UsageSettings) -> Definitions:
    assets = [phala_usage]
    resources = {
        "settings": settings,
        "warehouse": WarehouseResource(url=settings.warehouse_url),
        "phala_api": PhalaApiResource(api_key=EnvVar("PHALA_API_KEY")),
    }
    return Definitions(assets=assets, resources=resources)
