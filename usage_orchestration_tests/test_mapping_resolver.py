"""``MappingResolver``: the most specific rule, as ``resolve_mapping`` finds it, once per key."""

from __future__ import annotations

import itertools

from usage_orchestration.core.mapping import MappingResolver, resolve_mapping
from usage_orchestration.settings.mapping import UsageMapping


def _rule(entity: str, **match: str) -> UsageMapping:
    return UsageMapping(
        provider="neon", entity_id=entity, entity_type="app", resource_type="compute", **match
    )


RULES = [
    _rule("any-neon"),
    _rule("project-a", resource_id="a"),
    _rule("project-a-storage", resource_id="a", metric="storage"),
    _rule("branch-x", resource_id="a", metric="storage", sub_account_id="x"),
    _rule("metric-only", metric="compute"),
]


def test_the_resolver_answers_as_resolve_mapping_for_every_key() -> None:
    resolver = MappingResolver(RULES)
    keys = list(
        itertools.product(("neon", "phala"), ("a", "b"), ("storage", "compute"), (None, "x", "y"))
    )
    for _ in range(2):  # the second pass reads what the first resolved
        for key in keys:
            assert resolver(*key) == resolve_mapping(RULES, *key), key
    assert resolver("neon", "a", "storage", "x").entity_id == "branch-x"  # type: ignore[union-attr]
    assert resolver("neon", "a", "storage", None).entity_id == "project-a-storage"  # type: ignore[union-attr]
    assert resolver("phala", "a", "storage", None) is None


def test_each_key_is_matched_against_the_rules_once() -> None:
    calls: list[tuple[str, ...]] = []

    class Counted(UsageMapping):
        def matches(self, *key: object) -> bool:  # type: ignore[override]
            calls.append(tuple(map(str, key)))
            return super().matches(*key)  # type: ignore[arg-type]

    rules = [Counted(**r.model_dump()) for r in RULES]
    resolver = MappingResolver(rules)
    for _ in range(3):
        resolver("neon", "a", "storage", "x")
        resolver("neon", "b", "compute", None)
    assert len(calls) == 2 * len(rules)  # two keys, every rule read once per key
