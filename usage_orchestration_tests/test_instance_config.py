"""The PostgreSQL instance variant (deploy/postgres/dagster.yaml) differs from dagster.yaml only
by its storage, and that storage is dagster-postgres reading its URL from DAGSTER_PG_URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def test_postgres_variant_matches_the_sqlite_instance_except_storage() -> None:
    sqlite = _load(REPO / "dagster.yaml")
    postgres = _load(REPO / "deploy" / "postgres" / "dagster.yaml")
    assert postgres.pop("storage") == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert "storage" not in sqlite  # SQLite under DAGSTER_HOME, Dagster's default
    assert postgres == sqlite


def test_postgres_variant_is_a_valid_instance_config() -> None:
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(
        str(REPO / "deploy" / "postgres"), config_filename="dagster.yaml"
    )
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] == 60
