"""The Celery app of the workers: ``celery -A usage_orchestration.defs.celery_app worker -Q
<execution.queue>`` (or ``dagster-celery worker start -A usage_orchestration.defs.celery_app -q
<queue>``), run with the same settings file, environment and ``DAGSTER_HOME`` as the code
location (docs/deployment.md).

Built from ``settings.execution`` exactly as the run's executor builds its own app
(``defs/executor.py``), so both sides agree on broker, result backend, queue and key prefix.
A worker executes a step by loading the code location (``usage_orchestration.definitions``)
the run names, which validates the settings and secrets in the worker as at any load.
"""

from __future__ import annotations

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from usage_orchestration.defs.executor import celery_app_args
from usage_orchestration.settings import load_settings

_execution = load_settings().execution
app = make_app(CeleryExecutor.for_cli(**celery_app_args(_execution)).app_args())
execute_plan = create_task(app)
