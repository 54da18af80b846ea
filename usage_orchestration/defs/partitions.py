"""The one daily partitioning (UTC) shared by every partitioned asset."""

from __future__ import annotations

import os

from dagster import DailyPartitionsDefinition

# Read from the environment rather than the whole settings so that importing the partitions never
# depends on unrelated settings; definitions.py validates the full settings at load.
PARTITIONS_START = os.environ.get("USAGE_PARTITIONS_START", "2026-01-01")

daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
