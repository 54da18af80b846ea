"""Profiles: ``demo`` (the defaults: loopback sandbox, demo ledger, demo mappings) and
``production``, which refuses every demo value a real deployment could silently run on.

``production_problems`` lists everything that is missing or still the demo's at once, one
``key: problem`` per line, so one edit of the settings file fixes them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from usage_orchestration.settings.forge import DEMO_ACCOUNT_ID, PLACEHOLDER_EXPERIMENTAL_API
from usage_orchestration.settings.neon import DEMO_ORG_ID
from usage_orchestration.settings.urls import is_local_url

if TYPE_CHECKING:
    from usage_orchestration.settings import UsageSettings

Profile = Literal["demo", "production"]
Engine = Literal["in_process", "multiprocess", "celery"]

# What ``execution.engine: auto`` means. The demo keeps every step in the run's process (a
# process per step costs ~3 s on 2 cores, more than its small loads take); production runs a
# process per step so one range run's provider steps overlap: Forge's slow request budget
# (5 a minute) must not hold up Phala and Neon. Pools still allow one step per provider.
DEFAULT_ENGINE: dict[Profile, Engine] = {"demo": "in_process", "production": "multiprocess"}


class ProfileError(ValueError):
    """The settings do not satisfy their profile; ``problems`` are ``key: problem`` lines."""

    def __init__(self, profile: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"profile {profile}: " + "; ".join(problems))


def _demo_ids() -> tuple[set[str], set[str]]:
    """The demo's ledger entity ids and provider resource ids."""
    from usage_orchestration.settings.defaults import DEFAULT_MAPPINGS, PHALA_MAPPINGS
    from usage_orchestration.settings.neon import DEMO_PROJECTS

    entities = {m.entity_id for m in DEFAULT_MAPPINGS}
    resources = {m.resource_id for m in DEFAULT_MAPPINGS if m.resource_id}
    resources |= {m.resource_id for m in PHALA_MAPPINGS if m.resource_id} | set(DEMO_PROJECTS)
    return entities, resources


def _url_problems(s: UsageSettings) -> list[str]:
    urls: list[tuple[str, str, bool]] = [
        ("phala.base_url", s.phala.base_url, s.phala.enabled),
        ("neon.base_url", s.neon.base_url, s.neon.enabled),
        ("forge.base_url", s.forge.base_url, s.forge.enabled),
        ("ledger.api_base_url", s.ledger.api_base_url, s.ledger.backend == "http"),
        (
            "alerts.pagerduty_events_url",
            s.alerts.pagerduty_events_url,
            "pagerduty" in s.alerts.routing.values(),
        ),
        ("alerts.dagster_ui_url", s.alerts.dagster_ui_url, True),
    ]
    return [
        f"{key}: points at this machine (the sandbox); set the real URL"
        for key, url, used in urls
        if used and is_local_url(url)
    ]


def _database_problems(s: UsageSettings) -> list[str]:
    out = []
    if "warehouse_url" not in s.model_fields_set:
        out.append("warehouse_url: not set (the default is the demo's SQLite file)")
    if s.ledger.backend == "sql" and "database_url" not in s.ledger.model_fields_set:
        out.append("ledger.database_url: not set (the default is the demo ledger)")
    return out


def _mapping_problems(s: UsageSettings) -> list[str]:
    out = []
    if "mappings" not in s.model_fields_set or not s.mappings:
        out.append("mappings: required (the defaults are the demo's)")
    if "rate_card" not in s.model_fields_set or not s.rate_card:
        out.append("rate_card: required (the defaults are the demo's)")
    if "mappings" not in s.model_fields_set:
        return out
    entities, resources = _demo_ids()
    for i, m in enumerate(s.mappings):
        if m.entity_id in entities:
            out.append(f"mappings[{i}].entity_id: a demo entity id")
        if m.resource_id in resources:
            out.append(f"mappings[{i}].resource_id: a demo resource id")
    return out


def _demo_entries(key: str, ids: Sequence[str], demo: set[str], problem: str) -> list[str]:
    """``key: problem`` for each entry of a list of ids that is a demo id (``key`` holds ``{}``
    for the entry's index)."""
    return [f"{key.format(i)}: {problem}" for i, v in enumerate(ids) if v in demo]


def _provider_problems(s: UsageSettings) -> list[str]:
    _, resources = _demo_ids()
    out = []
    if s.phala.enabled:
        if "app_ids" not in s.phala.model_fields_set:
            out.append("phala.app_ids: not set (the defaults are the demo's apps)")
        out += _demo_entries("phala.app_ids[{}]", s.phala.app_ids, resources, "a demo app id")
    if s.neon.enabled:
        if s.neon.org_id == DEMO_ORG_ID:
            out.append("neon.org_id: the sandbox's organization")
        out += _demo_entries(
            "neon.project_ids[{}]", s.neon.project_ids, resources, "a demo project id"
        )
    if s.forge.enabled:
        if s.forge.experimental_api == PLACEHOLDER_EXPERIMENTAL_API:
            out.append(
                "forge.experimental_api: the demo's placeholder X-ExperimentalAPI header "
                "(set the value Atlassian gives you)"
            )
        if s.forge.account_id == DEMO_ACCOUNT_ID:
            out.append("forge.account_id: the sandbox's account")
        app_ids = [a.app_id for a in s.forge.apps]
        out += _demo_entries("forge.apps[{}].app_id", app_ids, resources, "the demo app")
    return out


def production_problems(settings: UsageSettings) -> list[str]:
    """Every reason ``settings`` cannot run as a real deployment (empty: it can)."""
    return (
        _url_problems(settings)
        + _database_problems(settings)
        + _mapping_problems(settings)
        + _provider_problems(settings)
    )
