"""Revisions of the warehouse schema, oldest first."""
