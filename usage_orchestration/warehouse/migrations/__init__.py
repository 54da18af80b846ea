"""Alembic environment of the warehouse (see ``warehouse/migrate.py``)."""
