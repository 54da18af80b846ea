"""The one Definitions object of the code location."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

from usage_orchestration.defs.location import build_definitions
from usage_orchestration.settings import load_settings, require_secrets

# backfill_policy is beta in dagster 1.13 and warns once per asset in every process that loads
# the code; the project depends on it deliberately (single-run backfills).
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=BetaWarning)

# Validated at load: a wrong setting fails here, naming the key and the problem; so does every
# secret the enabled features need and the environment lacks (by its variable's name), rather
# than the first run an hour later.
_settings = load_settings()
require_secrets(_settings)
defs: Definitions = build_definitions(_settings)
