"""No secret value reaches Dagster's storage, the compute logs or the warehouse.

Every provider (and the ledger's Usage Reporting API) answers with an error that echoes every
secret back (the sandbox's fault knob), as a misbehaving or hostile API might. The whole daily
job runs through Dagster on a persistent instance; then everything reachable is serialized and
searched for every secret value (and the forms it travels in): runs, run configs, job and
execution plan snapshots, every event, every file under the instance's directory (run and event
storage, compute logs) and the warehouse (its file and every table's rows).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._serdes import serialize_value
from sqlalchemy import MetaData, select

from usage_orchestration.defs.location import build_definitions
from usage_orchestration.sandbox import Sandbox
from usage_orchestration.sandbox.core import Fault
from usage_orchestration.sandbox.server import SandboxServer
from usage_orchestration.settings import UsageSettings, load_settings, require_secrets
from usage_orchestration.settings.secrets import SECRET_ENV
from usage_orchestration.warehouse.store import Warehouse

DAY = "2026-11-03"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, sandbox_server: SandboxServer) -> dict[str, str]:
    """A distinctive value for every secret the README lists, in the environment."""
    tag = uuid.uuid4().hex[:12]
    values = {name: f"{name.lower()}-{tag}" for name in SECRET_ENV}
    values["FORGE_EMAIL"] = f"finance-{tag}@corp.example"
    values["SLACK_WEBHOOK_URL"] = f"{sandbox_server.url}/slack/services/T0/B0/hook{tag}"
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def _forms(secrets: dict[str, str]) -> list[str]:
    basic = base64.b64encode(f"{secrets['FORGE_EMAIL']}:{secrets['FORGE_API_TOKEN']}".encode())
    return [*secrets.values(), basic.decode()]


def _echo_everything(sandbox: Sandbox, secrets: dict[str, str]) -> None:
    """Every API answers 401 with a body that repeats every secret (and the auth headers)."""
    forms = _forms(secrets)
    body = {
        "message": "invalid credentials: " + " ".join(forms),
        "errors": [{"message": f"Authorization: Basic {forms[-1]}"}],
        "echo": {"headers": {"X-API-Key": secrets["PHALA_API_KEY"]}},
    }
    for api in ("phala", "neon", "forge", "ledger"):
        sandbox.add_fault(api, Fault(status=401, count=100, body=body))


def _settings(server: SandboxServer, tmp_path: Path) -> UsageSettings:
    return load_settings(
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        state_dir=str(tmp_path / "state"),
        phala={"base_url": server.url + "/phala"},
        neon={"base_url": server.url + "/neon"},
        forge={"base_url": server.url + "/forge/graphql"},
        ledger={"backend": "http", "api_base_url": server.url + "/ledger", "max_attempts": 1},
        alerts={"pagerduty_events_url": server.url + "/pagerduty/v2/enqueue"},
    )


def _instance_texts(instance: DagsterInstance) -> Iterator[str]:
    for run in instance.get_runs():
        yield serialize_value(run)
        yield repr(run.run_config)
        if run.job_snapshot_id:
            yield serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        if run.execution_plan_snapshot_id:
            yield serialize_value(
                instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            )
        for event in instance.all_logs(run.run_id):
            yield serialize_value(event)


def _files_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def _warehouse_rows(url: str) -> Iterator[str]:
    wh = Warehouse(url)
    meta = MetaData()
    meta.reflect(wh.engine)
    with wh.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                yield f"{table.name}: {tuple(row)!r}"


def test_echoed_secrets_reach_no_storage(
    sandbox: Sandbox,
    sandbox_server: SandboxServer,
    secrets: dict[str, str],
    tmp_path: Path,
) -> None:
    settings = _settings(sandbox_server, tmp_path)
    require_secrets(settings)  # every secret the enabled features need is set
    _echo_everything(sandbox, secrets)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as instance:
        job = build_definitions(settings).resolve_job_def("daily_usage_job")
        result = job.execute_in_process(instance=instance, partition_key=DAY, raise_on_error=False)
        assert not result.success
        # the echo did happen: each API answered its 401 with the secrets
        for api in ("phala", "neon", "forge", "ledger"):
            assert sandbox.request_count(api, 401) >= 1, api
        failures = [e for e in result.all_events if e.is_step_failure]
        assert failures and any("***" in str(e.event_specific_data) for e in failures)
        texts = list(_instance_texts(instance))
    assert len(texts) > 10
    texts += list(_warehouse_rows(settings.warehouse_url))
    forms = _forms(secrets)
    for text in texts:
        leaked = [f for f in forms if f in text]
        assert not leaked, f"{leaked} in {text[:300]}"
    for root in (home, tmp_path / "state", tmp_path):
        for path, data in _files_bytes(root):
            leaked = [f for f in forms if f.encode() in data]
            assert not leaked, f"{leaked} in {path}"


DB_PASSWORD = "pw-" + uuid.uuid4().hex[:12]
WAREHOUSE_PG = f"postgresql://usage:{DB_PASSWORD}@warehouse-db.invalid/usage"
LEDGER_PG = f"postgresql://readonly:{DB_PASSWORD}@ledger-db.invalid/platform"


def _definition_texts(settings: UsageSettings) -> list[str]:
    from dagster._core.remote_representation.external_data import RepositorySnap

    defs = build_definitions(settings)
    repo = defs.get_repository_def()
    texts = [serialize_value(RepositorySnap.from_def(repo))]
    for job in repo.get_all_jobs():
        texts.append(serialize_value(job.get_job_snapshot()))
    return texts


def test_database_passwords_reach_resources_as_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_WAREHOUSE_URL", WAREHOUSE_PG)
    monkeypatch.setenv("USAGE_LEDGER__DATABASE_URL", LEDGER_PG)
    settings = load_settings()
    assert settings.warehouse_url == WAREHOUSE_PG
    texts = _definition_texts(settings)
    assert any("USAGE_WAREHOUSE_URL" in t for t in texts)  # the variable's name is what is kept
    assert any("USAGE_LEDGER__DATABASE_URL" in t for t in texts)
    assert not [t[:200] for t in texts if DB_PASSWORD in t]


def test_a_password_not_from_its_variable_is_refused(tmp_path: Path) -> None:
    from usage_orchestration.settings import SettingsError

    # in the settings file: refused at load, naming the key and the variable to use
    f = tmp_path / "s.yaml"
    f.write_text(f"warehouse_url: {WAREHOUSE_PG}\n")
    with pytest.raises(SettingsError, match="warehouse_url.*USAGE_WAREHOUSE_URL") as err:
        load_settings(f)
    assert DB_PASSWORD not in str(err.value)
    # handed over in code: the definitions refuse to put it in a resource's config
    with pytest.raises(SettingsError, match="ledger.database_url.*USAGE_LEDGER__DATABASE_URL"):
        build_definitions(load_settings(ledger={"database_url": LEDGER_PG}))
