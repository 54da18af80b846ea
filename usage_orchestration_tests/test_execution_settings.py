"""The execution settings: which executor the code location gets, what the Celery workers'
app is built from, and that a broker password is refused in the file and masked everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from usage_orchestration.defs.executor import (
    FORKSERVER_PRELOAD,
    build_executor,
    celery_app_args,
    step_processes,
)
from usage_orchestration.defs.location import build_definitions
from usage_orchestration.settings import SettingsError, UsageSettings, load_settings
from usage_orchestration.settings.execution import (
    BROKER_URL_ENV,
    ExecutionSettings,
    masked_url,
)
from usage_orchestration.settings.secrets import redact
from usage_orchestration_tests.test_profiles import README_SECRETS, readme_example


def _executor_name(**execution: object) -> str:
    defs = build_definitions(load_settings(execution=execution))
    return defs.resolve_job_def("daily_usage_job").executor_def.name


def _executor_config(settings: UsageSettings) -> dict[str, Any]:
    executor = build_executor(settings)
    # the configured executor's config, as the run will see it
    return dict(executor.config_schema.resolve_config({}).value["config"])


def test_the_demo_runs_steps_in_process_unless_the_settings_choose_another_engine() -> None:
    s = load_settings()
    assert s.execution.engine == "auto"
    assert s.execution.resolved_engine(s.profile) == "in_process"
    assert _executor_name() == "in_process"
    assert _executor_name(engine="multiprocess") == "multiprocess"
    assert _executor_name(engine="celery") == "celery"


def test_production_runs_a_process_per_step_sized_to_its_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Profile production's default engine is multiprocess, so a range run's provider steps
    overlap; the README's example enables one provider: two processes (it and the ledger)."""
    for k, v in README_SECRETS.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "usage_orchestration.yaml"
    path.write_text(readme_example())
    s = load_settings(path)
    assert s.profile == "production" and s.execution.engine == "auto"
    assert s.execution.describe(s.profile) == "multiprocess"
    job = build_definitions(s).resolve_job_def("daily_usage_job")
    assert job.executor_def.name == "multiprocess"
    assert step_processes(s) == 2
    assert _executor_config(s)["max_concurrent"] == 2
    # an explicit engine wins over the profile's
    data = yaml.safe_load(path.read_text()) | {"execution": {"engine": "in_process"}}
    path.write_text(yaml.safe_dump(data))
    assert _executor_name(**data["execution"]) == "in_process"
    assert load_settings(path).execution.resolved_engine("production") == "in_process"


def test_multiprocess_runs_every_provider_and_the_ledger_at_once_unless_limited() -> None:
    """Dagster's own default (the CPU count, 2 here) would queue a provider behind the others."""
    s = load_settings(execution={"engine": "multiprocess"})
    assert step_processes(s) == 4  # phala, neon, forge and the ledger load
    assert _executor_config(s)["max_concurrent"] == 4
    limited = load_settings(execution={"engine": "multiprocess", "max_concurrent": 2})
    assert build_executor(limited).name == "multiprocess"
    assert _executor_config(limited)["max_concurrent"] == 2
    one = load_settings(execution={"engine": "multiprocess"}, neon={"enabled": False})
    assert step_processes(one) == 3


def test_multiprocess_forks_steps_from_a_forkserver_that_imported_the_code_location() -> None:
    config = _executor_config(load_settings(execution={"engine": "multiprocess"}))
    assert config["start_method"] == {
        "forkserver": {"preload_modules": ["usage_orchestration.defs.location"]}
    }
    # the preload reads no settings: it imports in an environment without secrets or settings
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = "import " + ", ".join(FORKSERVER_PRELOAD)
    done = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(root)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spawn = load_settings(execution={"engine": "multiprocess", "start_method": "spawn"})
    assert _executor_config(spawn)["start_method"] == {"spawn": {}}


def test_the_run_and_the_workers_share_broker_backend_queue_and_prefix() -> None:
    execution = ExecutionSettings(
        engine="celery",
        broker_url="redis://127.0.0.1:6379/3",
        backend_url="redis://127.0.0.1:6379/4",
        queue="finops",
        key_prefix="finops:",
    )
    args = celery_app_args(execution)
    assert args["broker"] == "redis://127.0.0.1:6379/3"
    assert args["backend"] == "redis://127.0.0.1:6379/4"
    source = args["config_source"]
    assert source["task_default_queue"] == "finops"
    assert source["worker_prefetch_multiplier"] == 1
    assert source["broker_transport_options"]["global_keyprefix"] == "finops:"
    assert source["result_backend_transport_options"] == {"global_keyprefix": "finops:"}
    # the executor accepts exactly this config (dagster-celery's schema)
    from dagster_celery.executor import CeleryExecutor

    app_args = CeleryExecutor.for_cli(**args).app_args()
    assert app_args["config_source"].task_default_queue == "finops"


def test_rabbitmq_broker_with_rpc_results() -> None:
    s = load_settings(
        execution={"engine": "celery", "broker_url": "pyamqp://guest@127.0.0.1:5672//"}
        | {"backend_url": "rpc://"}
    )
    assert s.execution.broker_url.startswith("pyamqp://")
    assert "result_backend_transport_options" not in s.execution.celery_config_source()


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"engine": "dask"}, "execution.engine"),
        ({"engine": "parallel"}, "execution.engine"),
        ({"start_method": "fork"}, "execution.start_method"),
        ({"broker_url": "http://127.0.0.1:6379"}, "scheme must be one of"),
        ({"broker_url": "redis://"}, "has no host"),
        ({"broker_url": "redis://127.0.0.1:99999/0"}, "not a valid URL"),
        ({"backend_url": "db+sqlite:///results.sqlite"}, "execution.backend_url"),
        ({"queue": "two words"}, "execution.queue"),
        ({"max_concurrent": 0}, "execution.max_concurrent"),
        (
            {"broker_url": "amqp://guest@127.0.0.1:5672//", "key_prefix": "p:"},
            "key_prefix: needs a redis:// broker_url",
        ),
    ],
)
def test_bad_execution_settings_fail_at_load_naming_their_key(
    override: dict[str, object], problem: str
) -> None:
    with pytest.raises(SettingsError, match="execution") as err:
        load_settings(execution=override)
    assert problem in str(err.value)


def test_a_broker_password_in_an_error_is_never_shown() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(execution={"broker_url": "http://:hunter2-broker@127.0.0.1:6379/0"})
    assert "hunter2-broker" not in str(err.value)


def test_a_broker_password_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage_orchestration.yaml"
    path.write_text(
        yaml.safe_dump({"execution": {"broker_url": "redis://:hunter2-broker@127.0.0.1:6379/0"}})
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert f"execution.broker_url: holds a password; put the whole URL in {BROKER_URL_ENV}" in str(
        err.value
    )
    assert "hunter2-broker" not in str(err.value)


def test_a_broker_password_from_the_environment_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "redis://:hunter2-broker@127.0.0.1:6379/0"
    monkeypatch.setenv(BROKER_URL_ENV, url)
    s = load_settings(execution={"engine": "celery"})
    assert s.execution.broker_url == url  # the executor and the workers need it whole
    assert "hunter2-broker" not in s.execution.describe()
    assert "redis://:***@127.0.0.1:6379/0" in s.execution.describe()
    # masked in errors, logs and alerts like every other secret
    assert redact(f"cannot connect to {url}") == "cannot connect to redis://:***@127.0.0.1:6379/0"


def test_masked_url_keeps_the_user_and_drops_only_the_password() -> None:
    assert (
        masked_url("amqp://finops:s3cr3t@mq.internal:5672//")
        == "amqp://finops:***@mq.internal:5672//"
    )
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_broker_password_reaches_no_job_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor is configured in the loading process: the job's snapshot (what the instance
    stores with every run and the UI shows) holds no broker URL."""
    from dagster._serdes import serialize_value

    monkeypatch.setenv(BROKER_URL_ENV, "redis://:hunter2-broker@127.0.0.1:6379/0")
    job = build_definitions(load_settings(execution={"engine": "celery"})).resolve_job_def(
        "daily_usage_job"
    )
    assert job.executor_def.name == "celery"
    snapshot = serialize_value(job.get_job_snapshot())
    assert "daily_usage_job" in snapshot
    assert "hunter2-broker" not in snapshot
    assert "127.0.0.1:6379" not in snapshot


def test_the_deployment_docs_settings_example_loads(tmp_path: Path) -> None:
    """docs/deployment.md's ``execution:`` block is a valid settings file as written."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text()
    block = text.split("### 1. Settings", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "usage_orchestration.yaml"
    path.write_text(block)
    s = load_settings(path)
    assert s.execution.engine == "celery"
    assert s.execution.queue == "usage_orchestration"
    assert s.execution.key_prefix == "usage-prod:"
    assert _executor_name(**yaml.safe_load(block)["execution"]) == "celery"
