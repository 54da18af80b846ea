"""Neon settings: validated, with errors naming the key; the demo mapping resolves."""

from __future__ import annotations

import pytest

from usage_orchestration.core.mapping import resolve_mapping
from usage_orchestration.settings import SettingsError, load_settings
from usage_orchestration.settings.defaults import (
    MAPPED_NEON_PROJECTS,
    NEON_EXTRA_METRICS,
    UNMAPPED_NEON_PROJECT,
)
from usage_orchestration.settings.neon import ANALYTICS_WAREHOUSE, DEMO_PROJECTS


def test_unknown_metric_is_rejected_naming_the_key() -> None:
    with pytest.raises(
        SettingsError, match=r"neon\.metrics.*'cpu_seconds' is not a Neon v2 metric"
    ):
        load_settings(neon={"metrics": ["compute_unit_seconds", "cpu_seconds"]})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"page_limit": 500}, "neon.page_limit"),
        ({"outside_window": "zero"}, "neon.outside_window"),
        ({"org_id": "Org_Upper"}, "neon.org_id"),
        ({"project_ids": ["a", "a"]}, "neon.project_ids"),
    ],
)
def test_bad_values_name_their_key(override: dict, key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(neon=override)


def test_environment_sets_projects_and_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGE_NEON__PROJECT_IDS", "[p-one, p-two]")
    monkeypatch.setenv("USAGE_NEON__RATE_LIMIT_REQUESTS", "10")
    s = load_settings()
    assert s.neon.project_ids == ["p-one", "p-two"] and s.neon.rate_limit_requests == 10


def test_demo_maps_every_metric_of_every_project_but_the_one_left_unmapped() -> None:
    s = load_settings()
    assert s.neon.enabled and s.neon.rate_limit_requests < 50  # under the documented ~50/min
    assert UNMAPPED_NEON_PROJECT in DEMO_PROJECTS
    for pid in MAPPED_NEON_PROJECTS:
        compute = resolve_mapping(s.mappings, "neon", pid, "compute_unit_seconds")
        storage = resolve_mapping(s.mappings, "neon", pid, "root_branch_bytes_month")
        assert compute is not None and compute.entity_id == ANALYTICS_WAREHOUSE
        assert (
            compute.resource_type == "job_compute"
            and s.rate_card["job_compute"].ledger_unit == "second"
        )
        assert storage is not None and storage.resource_type == "workspace_storage"
        for metric, resource_type in NEON_EXTRA_METRICS.items():
            m = resolve_mapping(s.mappings, "neon", pid, metric)
            assert m is not None and m.resource_type == resource_type, (pid, metric)
            assert resource_type in s.rate_card
    for metric in ("compute_unit_seconds", "root_branch_bytes_month", *NEON_EXTRA_METRICS):
        assert resolve_mapping(s.mappings, "neon", UNMAPPED_NEON_PROJECT, metric) is None
    assert resolve_mapping(s.mappings, "neon", "some-other-project", "compute_unit_seconds") is None


@pytest.mark.parametrize(
    "bad",
    [
        "p-one,p-two",  # a comma would split into two ids on the wire
        "p one",
        " p-one",
        "p-one\n",
        "P-One",
        "p_one",
        "p.one",
        "",
        "x" * 61,
        "pröject",
    ],
)
def test_project_ids_outside_the_api_id_format_are_rejected_with_their_index(bad: str) -> None:
    ids = ["p-zero", "p-one-1", "p-two-2", bad]
    with pytest.raises(SettingsError, match=r"neon\.project_ids\[3\]"):
        load_settings(neon={"project_ids": ids})


def test_project_ids_in_the_api_format_are_accepted() -> None:
    ids = ["delicate-dawn-54854667", "0", "x" * 60]
    assert load_settings(neon={"project_ids": ids}).neon.project_ids == ids
