"""The Definitions' executor, from ``settings.execution`` (docs/deployment.md).

in_process (the default) and multiprocess are Dagster's own; celery is ``dagster-celery``'s
executor configured with the settings' broker, result backend and queue. The Celery workers
build their app from the same settings (``defs/celery_app.py``).
"""

from __future__ import annotations

from typing import Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from usage_orchestration.settings.execution import ExecutionSettings


def celery_app_args(execution: ExecutionSettings) -> dict[str, Any]:
    """The ``celery_executor`` config: what the run's Celery app and every worker's app share."""
    return {
        "broker": execution.broker_url,
        "backend": execution.backend_url,
        "config_source": execution.celery_config_source(),
    }


def build_executor(execution: ExecutionSettings) -> ExecutorDefinition:
    if execution.engine == "in_process":
        return in_process_executor
    if execution.engine == "multiprocess":
        if execution.max_concurrent is None:
            return multiprocess_executor
        return multiprocess_executor.configured({"max_concurrent": execution.max_concurrent})
    # imported here: only the celery engine needs the package (and its broker clients)
    from dagster_celery import celery_executor

    # configured(), not run config: the broker URL (and any password in it) lives in the
    # process that loaded the settings, never in the run's stored config or the UI
    return celery_executor.configured(celery_app_args(execution), name="celery")
