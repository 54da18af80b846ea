"""Settings: defaults point at the sandbox; a wrong setting fails at load naming key and problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from usage_orchestration.settings import (
    DEFAULT_SETTINGS_FILE,
    SettingsError,
    UsageSettings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_point_at_sandbox_and_sqlite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no usage_orchestration.yaml here
    s = load_settings()
    assert s.warehouse_url.startswith("sqlite:///")
    assert s.ledger.database_url.startswith("sqlite:///")
    assert s.phala.base_url.startswith("http://127.0.0.1:")
    assert s.alerts.pagerduty_events_url.startswith("http://127.0.0.1:")
    # every default mapping has a rate card entry with a conversion path
    for m in s.mappings:
        assert m.resource_type in s.rate_card


def test_out_of_range_value_names_key_and_value() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(phala={"page_size": 9000})
    assert "phala.page_size" in str(err.value)
    assert "9000" in str(err.value)


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(SettingsError, match=r"phala\.pagesize"):
        load_settings(phala={"pagesize": 10})


def test_app_id_with_cli_prefix_is_explained() -> None:
    with pytest.raises(SettingsError, match="drop the 'app_' prefix"):
        load_settings(phala={"app_ids": ["app_" + "a" * 40]})


def test_mapping_to_resource_type_without_rate_is_rejected() -> None:
    bad = {
        "provider": "phala",
        "resource_id": "a" * 40,
        "metric": "compute",
        "entity_id": "e1",
        "entity_type": "app",
        "resource_type": "no_such_type",
    }
    with pytest.raises(SettingsError, match="no_such_type.*no rate_card entry"):
        load_settings(mappings=[bad])


def test_file_then_environment_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        "phala:\n  page_size: 100\n  max_pages: 7\nwarehouse_url: sqlite:///from-file.sqlite\n"
    )
    monkeypatch.setenv("USAGE_PHALA__PAGE_SIZE", "250")
    s = load_settings(f)
    assert s.phala.page_size == 250  # environment beats the file
    assert s.phala.max_pages == 7  # the file beats the default
    # a relative SQLite path in the file is relative to the file's directory
    assert s.warehouse_url == f"sqlite:///{tmp_path / 'from-file.sqlite'}"


def test_settings_file_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("phala:\n  api_version: '2025-01-01'\n")
    monkeypatch.setenv("USAGE_SETTINGS_FILE", str(f))
    assert load_settings().phala.api_version == "2025-01-01"


def test_missing_and_malformed_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("phala: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SettingsError, match="mapping at the top level"):
        load_settings(scalar)


def test_url_values_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # a URL may carry a password: the error names the key, never the value
    monkeypatch.setenv("USAGE_LEDGER__TIMEOUT_S", "-1")
    with pytest.raises(SettingsError) as err:
        load_settings(ledger={"database_url": {"not": "a string"}})
    text = str(err.value)
    assert "ledger.database_url" in text
    assert "ledger.timeout_s" in text


def test_sandbox_refuses_non_loopback_host() -> None:
    with pytest.raises(SettingsError, match="loopback"):
        load_settings(sandbox={"host": "10.0.0.5"})


# The autouse fixture `isolated_settings` (conftest.py) keeps the developer's settings out.
PROBE = Path(__file__).with_name("settings_isolation_probe.py")  # not collected on its own


def test_stray_settings_do_not_leak_into_tests(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_SETTINGS_FILE).write_text("phala:\n  page_size: 123\n")
    env = {**os.environ, "USAGE_PHALA__PAGE_SIZE": "250", "USAGE_TEST_ISOLATION_PROBE": "1"}
    env.pop("USAGE_SETTINGS_FILE")  # as on a developer's machine: the cwd file would be read
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
            str(PROBE),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout, proc.stdout[-3000:]


def test_cwd_settings_file_is_not_read_under_the_fixture(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / DEFAULT_SETTINGS_FILE).write_text("phala:\n  page_size: 123\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().phala.page_size == UsageSettings().phala.page_size


# -- one source of settings ----------------------------------------------------------------------
def test_partitions_start_from_the_file_reaches_every_partitioned_asset(tmp_path: Path) -> None:
    from usage_orchestration.defs.location import build_definitions

    f = tmp_path / "s.yaml"
    f.write_text("partitions_start: 2025-06-01\n")
    defs = build_definitions(load_settings(f))
    starts = {
        spec.key.to_user_string(): spec.partitions_def.start.date().isoformat()
        for a in defs.resolve_asset_graph().assets_defs
        for spec in a.specs
        if spec.partitions_def is not None
    }
    assert starts and set(starts.values()) == {"2025-06-01"}, starts
    job = defs.resolve_job_def("daily_usage_job")
    assert job.partitions_def.get_first_partition_key() == "2025-06-01"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("phala.base_url", "cloud-api.phala.com"),
        ("neon.base_url", "ftp://console.neon.tech"),
        ("forge.base_url", "https://"),
        ("ledger.api_base_url", "https://user:pw@ledger.example.com"),
        ("alerts.pagerduty_events_url", "https://events.pagerduty.com:notaport/x"),
        ("alerts.dagster_ui_url", "http://dagster ui"),
        ("warehouse_url", "not a url"),
        ("ledger.database_url", "mysql://reader@db/ledger"),
    ],
)
def test_bad_urls_fail_at_load_naming_their_key(key: str, value: str) -> None:
    head, _, leaf = key.rpartition(".")
    with pytest.raises(SettingsError) as err:
        load_settings(**({head: {leaf: value}} if head else {leaf: value}))
    assert f"{key}:" in str(err.value)
    assert value not in str(err.value)  # a URL may hold a secret: never repeated


def _models(model: type, seen: set[type] | None = None) -> set[type]:
    """Every pydantic model reachable from ``model``'s fields."""
    from typing import get_args

    from pydantic import BaseModel

    seen = set() if seen is None else seen
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel) and t not in seen:
                _models(t, seen)
            stack += list(get_args(t))
    return seen


def test_every_settings_model_refuses_inf_and_nan() -> None:
    models = _models(UsageSettings)
    assert len(models) >= 10
    assert [m.__name__ for m in models if m.model_config.get("allow_inf_nan") is not False] == []


@pytest.mark.parametrize(
    "override",
    [
        {"phala": {"timeout_s": "inf"}},
        {"neon": {"rate_limit_window_s": "nan"}},
        {"alerts": {"retry_max_s": "Infinity"}},
        {"budgets": {"anomaly_min_credits": "NaN"}},
        {"step_retries": {"wait_s": "inf"}},
    ],
)
def test_inf_and_nan_fail_at_load(override: dict) -> None:
    with pytest.raises(SettingsError, match="finite"):
        load_settings(**override)


def test_sandbox_host_is_parsed_as_an_address() -> None:
    assert load_settings(sandbox={"host": "localhost"}).sandbox.host == "127.0.0.1"
    assert load_settings(sandbox={"host": "::1"}).sandbox.url == "http://[::1]:8765"
    assert load_settings(sandbox={"host": "127.0.0.2"}).sandbox.host == "127.0.0.2"
    for host in ("127.0.0.1.evil.example", "127.evil", "0.0.0.0", "192.168.1.4"):
        with pytest.raises(SettingsError, match="sandbox.host"):
            load_settings(sandbox={"host": host})


def test_missing_secrets_are_named_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    from usage_orchestration.settings import require_secrets

    env = {"PHALA_API_KEY": "k-phala-1234", "NEON_API_KEY": "k-neon-1234"}
    with pytest.raises(SettingsError) as err:
        require_secrets(load_settings(), env)
    text = str(err.value)
    for name in ("FORGE_EMAIL", "FORGE_API_TOKEN", "PAGERDUTY_ROUTING_KEY", "SLACK_WEBHOOK_URL"):
        assert name in text
    assert "PHALA_API_KEY" not in text and "k-phala" not in text
    # a feature switched off needs nothing; a malformed webhook is named, not shown
    off = load_settings(
        forge={"enabled": False},
        alerts={"routing": {s: "pagerduty" for s in ("critical", "error", "warning", "info")}},
    )
    require_secrets(off, {**env, "PAGERDUTY_ROUTING_KEY": "r-1234"})
    on = load_settings(forge={"enabled": False})
    with pytest.raises(SettingsError, match="SLACK_WEBHOOK_URL") as err:
        require_secrets(on, {**env, "PAGERDUTY_ROUTING_KEY": "r", "SLACK_WEBHOOK_URL": "hooks x"})
    assert "hooks x" not in str(err.value)


def test_the_code_location_fails_at_load_naming_missing_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGE_")}
    for name in ("FORGE_EMAIL", "FORGE_API_TOKEN"):
        env.pop(name, None)
    env.update(
        PHALA_API_KEY="a",
        NEON_API_KEY="b",
        PAGERDUTY_ROUTING_KEY="c",
        SLACK_WEBHOOK_URL="http://127.0.0.1:9/slack",
        USAGE_SETTINGS_FILE=os.environ["USAGE_SETTINGS_FILE"],
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import usage_orchestration.definitions"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "FORGE_EMAIL" in proc.stderr and "FORGE_API_TOKEN" in proc.stderr, proc.stderr[-2000:]
