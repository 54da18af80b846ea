"""The Definitions' executor, from ``settings.execution`` and the profile (docs/deployment.md).

in_process and multiprocess are Dagster's own; celery is ``dagster-celery``'s executor configured
with the settings' broker, result backend and queue. ``engine: auto`` is the profile's engine
(demo: in_process; production: multiprocess, so the provider steps of one range run overlap).
Every engine claims the provider pools' slots through the instance, so one step per provider
runs at a time across runs whichever engine runs it. The Celery workers build their app from the
same settings (``defs/celery_app.py``).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from usage_orchestration.providers.registry import enabled_providers
from usage_orchestration.settings import UsageSettings
from usage_orchestration.settings.execution import ExecutionSettings


def celery_app_args(execution: ExecutionSettings) -> dict[str, Any]:
    """The ``celery_executor`` config: what the run's Celery app and every worker's app share."""
    return {
        "broker": execution.broker_url,
        "backend": execution.backend_url,
        "config_source": execution.celery_config_source(),
    }


def step_processes(settings: UsageSettings) -> int:
    """multiprocess: how many step processes run at once. Unset, every step a range run can
    start together: one per enabled provider plus the ledger load (Dagster's own default, the
    CPU count, is 2 here and would queue one provider behind the others)."""
    if settings.execution.max_concurrent is not None:
        return settings.execution.max_concurrent
    return len(enabled_providers(settings)) + 1


# What a forkserver imports once, before it forks each step process: Dagster and every module of
# the code location, but no settings (read by each step, from its own environment) and no
# database engine (never shared across a fork).
FORKSERVER_PRELOAD = ("usage_orchestration.defs.location",)


def start_method(execution: ExecutionSettings) -> dict[str, Any]:
    """multiprocess: how a step process starts. A forkserver pays the imports once per run
    instead of once per step (measured: a 3-day run 11 s against 37 s spawning, on 2 cores)."""
    if execution.start_method == "spawn":
        return {"spawn": {}}
    return {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}


def build_executor(settings: UsageSettings) -> dg.ExecutorDefinition:
    execution = settings.execution
    engine = execution.resolved_engine(settings.profile)
    if engine == "in_process":
        return dg.in_process_executor
    if engine == "multiprocess":
        return dg.multiprocess_executor.configured(
            {
                "max_concurrent": step_processes(settings),
                "start_method": start_method(execution),
            },
            name="multiprocess",
        )
    # imported here: only the celery engine needs the package (and its broker clients)
    from dagster_celery import celery_executor

    # configured(), not run config: the broker URL (and any password in it) lives in the
    # process that loaded the settings, never in the run's stored config or the UI
    return celery_executor.configured(celery_app_args(execution), name="celery")
