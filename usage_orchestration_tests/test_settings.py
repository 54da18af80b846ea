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
    assert s.warehouse_url == "sqlite:///from-file.sqlite"


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
