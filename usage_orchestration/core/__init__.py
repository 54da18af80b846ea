"""The pure core: mapping, reconciliation, budgets. No Dagster, no I/O (import contracts in
pyproject.toml enforce it)."""
