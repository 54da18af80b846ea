"""usage_orchestration: provider usage, the credit ledger, budgets and alerts on Dagster."""

__version__ = "0.1.0"
