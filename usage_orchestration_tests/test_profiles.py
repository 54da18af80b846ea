"""Profiles: ``demo`` is today's defaults; ``production`` refuses every demo value at once, and
the README's "pointing it at the real world" example is a complete production configuration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from usage_orchestration.defs.location import build_definitions
from usage_orchestration.settings import SettingsError, load_settings, require_secrets

README = Path(__file__).resolve().parents[1] / "README.md"
README_SECRETS = {
    "PHALA_API_KEY": "phala-real-key",
    "PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY0000000000000000000000",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX",
    "USAGE_WAREHOUSE_URL": "postgresql://usage:wh-password@warehouse-db/usage",
    "USAGE_LEDGER__DATABASE_URL": "postgresql://readonly:ledger-password@ledger-db/platform",
}


def readme_example() -> str:
    """The YAML block that follows "Example `usage_orchestration.yaml`" in README.md."""
    text = README.read_text()
    section = text[text.index("## Pointing it at the real world") :]
    m = re.search(r"Example `usage_orchestration.yaml`.*?```yaml\n(.*?)```", section, re.S)
    assert m, "README.md: no example settings block"
    return m.group(1)


@pytest.fixture
def example_file(tmp_path: Path) -> Path:
    f = tmp_path / "usage_orchestration.yaml"
    f.write_text(readme_example())
    return f


def _with(example: Path, tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load(example.read_text())
    data.update(changes)
    out = tmp_path / "changed.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def test_demo_is_the_default_profile() -> None:
    s = load_settings()
    assert s.profile == "demo"
    assert s.phala.base_url.startswith("http://127.0.0.1:")


def test_readme_example_loads_under_production(
    example_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in README_SECRETS.items():
        monkeypatch.setenv(k, v)
    s = load_settings(example_file)
    assert s.profile == "production"
    assert s.phala.enabled and not s.neon.enabled and not s.forge.enabled
    assert s.warehouse_url == README_SECRETS["USAGE_WAREHOUSE_URL"]
    require_secrets(s)  # every secret the example needs is set
    defs = build_definitions(s)
    assert defs.resolve_job_def("daily_usage_job")


def test_readme_example_without_its_secrets_names_them(
    example_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in ("PHALA_API_KEY", "PAGERDUTY_ROUTING_KEY", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SettingsError) as err:
        require_secrets(load_settings(example_file))
    text = str(err.value)
    for name in ("PHALA_API_KEY", "PAGERDUTY_ROUTING_KEY", "SLACK_WEBHOOK_URL"):
        assert name in text
    for name in ("NEON_API_KEY", "FORGE_EMAIL", "LEDGER_API_TOKEN"):  # disabled features
        assert name not in text


def test_production_on_the_defaults_lists_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(profile="production")
    text = str(err.value)
    for key in (
        "phala.base_url",
        "neon.base_url",
        "forge.base_url",
        "alerts.pagerduty_events_url",
        "alerts.dagster_ui_url",
        "warehouse_url",
        "ledger.database_url",
        "mappings",
        "rate_card",
        "phala.app_ids",
        "neon.org_id",
        "forge.experimental_api",
        "forge.apps[0].app_id",
    ):
        assert key in text, key
    assert "X-ExperimentalAPI" in text


def test_production_refuses_demo_mappings_and_entity_ids(
    example_file: Path, tmp_path: Path
) -> None:
    from usage_orchestration.settings.defaults import DEFAULT_MAPPINGS, SALES_DASHBOARD

    demo = [m.model_dump(exclude_none=True) for m in DEFAULT_MAPPINGS[:1]]
    with pytest.raises(SettingsError, match=r"mappings\[0\]\.entity_id: a demo entity id"):
        load_settings(_with(example_file, tmp_path, mappings=demo))
    ours = yaml.safe_load(example_file.read_text())["mappings"]
    ours[0]["entity_id"] = SALES_DASHBOARD
    with pytest.raises(SettingsError, match=r"mappings\[0\]\.entity_id"):
        load_settings(_with(example_file, tmp_path, mappings=ours))


def test_production_requires_explicit_mapping_and_rate_card(
    example_file: Path, tmp_path: Path
) -> None:
    data = yaml.safe_load(example_file.read_text())
    del data["mappings"], data["rate_card"]
    f = tmp_path / "bare.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(SettingsError) as err:
        load_settings(f)
    assert "mappings: required" in str(err.value)
    assert "rate_card: required" in str(err.value)


def test_production_refuses_sandbox_urls_and_the_forge_placeholder(
    example_file: Path, tmp_path: Path
) -> None:
    changed = _with(
        example_file,
        tmp_path,
        phala={"base_url": "http://127.0.0.1:8765/phala", "app_ids": ["ab" * 20]},
        forge={
            "enabled": True,
            "base_url": "https://api.atlassian.com/graphql",
            "account_id": "acme-finance",
            "apps": [{"app_id": "ari:cloud:ecosystem::app/acme"}],
        },
    )
    with pytest.raises(SettingsError) as err:
        load_settings(changed)
    text = str(err.value)
    assert "phala.base_url: points at this machine" in text
    assert "forge.experimental_api" in text and "placeholder" in text
    assert "forge.base_url" not in text  # a real URL is fine


def test_production_refuses_local_urls_by_any_spelling(example_file: Path, tmp_path: Path) -> None:
    for url in (
        "http://localhost:9000/x",
        "http://[::1]:80/",
        "http://0.0.0.0/",
        "http://127.1.2.3/",
    ):
        changed = _with(
            example_file, tmp_path, alerts={"pagerduty_events_url": url, "dagster_ui_url": url}
        )
        with pytest.raises(SettingsError, match="alerts.pagerduty_events_url"):
            load_settings(changed)
