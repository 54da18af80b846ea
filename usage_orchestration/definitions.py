"""The one Definitions object of the code location."""

from __future__ import annotations

from dagster import Definitions

from usage_orchestration.defs.registry import build_definitions
from usage_orchestration.settings import load_settings

# Validated at load: a wrong setting fails here, naming the key and the problem.
defs: Definitions = build_definitions(load_settings())
