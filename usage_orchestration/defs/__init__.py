"""The thin Dagster shell: assets, checks, schedules, sensors and resources wire the core."""
