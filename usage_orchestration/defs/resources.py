"""Resources every part shares: the warehouse. Provider credentials live in
``defs/providers.py``, the ledger's in ``defs/ledger.py``, alert channels' in ``defs/alerts.py``.

A database URL that holds a password reaches its resource as an ``EnvVar`` naming the variable
it came from, so the resolved URL is in no job snapshot, run config or event: Dagster stores
the variable's name and reads the value in the process that opens the database.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import dagster as dg
from sqlalchemy import make_url

from usage_orchestration.settings import SettingsError
from usage_orchestration.settings.urls import has_password
from usage_orchestration.warehouse.store import Warehouse, safe_url


@lru_cache(maxsize=8)
def _warehouse(url: str) -> Warehouse:
    return Warehouse(url)


def warehouse_kind(url: str) -> str:
    """The Dagster kind naming the warehouse's system: ``postgres`` or ``sqlite``."""
    backend = make_url(url).get_backend_name()
    return "postgres" if backend == "postgresql" else backend


def database_url_config(key: str, env: str, url: str) -> Any:
    """What a resource is configured with for the database URL setting ``key``: an ``EnvVar``
    when the URL holds a password (it must then come from ``env``), else the URL itself."""
    if not has_password(url):
        return url
    if os.environ.get(env) != url:
        raise SettingsError(
            f"{key}: holds a password but does not come from {env}; set the whole URL in "
            f"{env} (the environment), so that Dagster stores only the variable's name"
        )
    return dg.EnvVar(env)


class WarehouseResource(dg.ConfigurableResource):
    """The project's own tables (SQLAlchemy URL; a password belongs in the environment)."""

    url: str

    def get(self) -> Warehouse:
        wh = _warehouse(self.url)
        wh.ensure_schema()
        return wh

    def describe(self) -> str:
        return safe_url(self.url)
