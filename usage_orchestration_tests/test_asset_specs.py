"""Snapshot of every asset's spec: what the decorators declare, in one reviewed file.

A change to a key, partitions, pool, kinds, owners, tags, group, backfill policy, dependencies
(with their partition mappings), materializability (external assets) or asset checks shows up as a diff of ``snapshots/asset_specs.json``. After an intended change,
regenerate the file and review the diff:

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest -q usage_orchestration_tests/test_asset_specs.py

The definitions are those of ``usage_orchestration/definitions.py`` (``build_definitions``
on ``load_settings()``), built under the suite's isolated settings (conftest.py): the defaults,
so the warehouse is SQLite.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetDep,
    AssetsDefinition,
    AssetSpec,
    Definitions,
    TimeWindowPartitionMapping,
)
from pydantic import ValidationError

from usage_orchestration.defs.location import build_definitions
from usage_orchestration.settings import load_settings
from usage_orchestration.settings.alerts import AlertSettings

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_specs.json"
UPDATE_ENV = "UPDATE_SNAPSHOTS"
KIND_TAG_PREFIX = "dagster/kind/"  # mirrors `kinds`, listed there


def _partitions(spec: AssetSpec) -> dict[str, Any] | None:
    p = spec.partitions_def
    if p is None:
        return None
    start = getattr(p, "start", None)
    return {
        "type": type(p).__name__,
        "start": start.isoformat() if start is not None else None,
        "timezone": getattr(p, "timezone", None),
    }


def _dep(dep: AssetDep) -> str:
    """The upstream key, with its partition mapping when one is declared."""
    key = dep.asset_key.to_user_string()
    m = dep.partition_mapping
    if m is None:
        return key
    if isinstance(m, TimeWindowPartitionMapping):
        return f"{key} [days {m.start_offset:+d}..{m.end_offset:+d}]"
    return f"{key} [{type(m).__name__}]"


def _asset_entry(
    assets_def: AssetsDefinition, spec: AssetSpec, checks: list[Any]
) -> dict[str, Any]:
    policy = assets_def.backfill_policy
    return {
        "materializable": assets_def.is_materializable,
        "partitions": _partitions(spec),
        "pool": assets_def.op.pool if assets_def.is_executable else None,
        "kinds": sorted(spec.kinds),
        "owners": sorted(spec.owners),
        "tags": {k: v for k, v in sorted(spec.tags.items()) if not k.startswith(KIND_TAG_PREFIX)},
        "group": spec.group_name,
        "backfill_policy": None
        if policy is None
        else {
            "type": policy.policy_type.value,
            "max_partitions_per_run": policy.max_partitions_per_run,
        },
        "deps": sorted(_dep(d) for d in spec.deps),
        "checks": sorted(
            ({"name": c.name, "blocking": c.blocking} for c in checks if c.asset_key == spec.key),
            key=lambda c: c["name"],
        ),
    }


def asset_specs(defs: Definitions) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    graph = defs.resolve_asset_graph()
    # checks defined beside the assets (the freshness checks) as well as those in the assets
    checks = [c for assets_def in graph.assets_defs for c in assets_def.check_specs]
    for assets_def in graph.assets_defs:
        for spec in assets_def.specs:
            out[spec.key.to_user_string()] = _asset_entry(assets_def, spec, checks)
    return dict(sorted(out.items()))


def test_asset_specs_match_the_snapshot() -> None:
    current = asset_specs(build_definitions(load_settings()))
    text = json.dumps(current, indent=2, sort_keys=True) + "\n"
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.is_file(), f"no snapshot yet: run with {UPDATE_ENV}=1 and commit {SNAPSHOT}"
    assert json.loads(SNAPSHOT.read_text()) == current, (
        f"asset specs changed: if intended, regenerate with {UPDATE_ENV}=1 and review the diff"
    )


def test_the_owner_pages_name_owns_every_asset(tmp_path: Path) -> None:
    """``alerts.owner`` is the one place the owner is known: the catalog shows it on every
    asset (the external ledger included), so the owner a page names is the assets' owner."""
    settings = load_settings().model_copy(deep=True)
    settings.alerts.owner = "finops-oncall@example.com"
    defs = build_definitions(settings)
    specs = {
        spec.key.to_user_string(): spec
        for a in defs.assets or []
        for spec in (a.specs if isinstance(a, AssetsDefinition) else [a])
    }
    assert specs and {k: list(s.owners) for k, s in specs.items()} == {
        k: ["finops-oncall@example.com"] for k in specs
    }


def test_an_owner_dagster_cannot_show_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="owner"):
        AlertSettings(owner="Alice from finance")


def test_every_asset_has_a_provider_tag_the_ui_can_filter_by() -> None:
    """``tag:provider=<name>`` selects a provider's assets in the UI and the CLI: every asset
    (the external ledger included) names one registered provider or ``all``."""
    from usage_orchestration.providers.registry import PROVIDERS

    current = asset_specs(build_definitions(load_settings()))
    allowed = {p.name for p in PROVIDERS} | {"all"}
    assert current and {k: s["tags"].get("provider") in allowed for k, s in current.items()} == {
        k: True for k in current
    }, {k: s["tags"] for k, s in current.items()}
