"""What the warehouse revisions declare their new tables with, and the create and drop of them.

A revision that adds tables declares them as data (``table``, with columns of a kind:
``string("unit", "raw_unit", length=64, nullable=False)`` is two columns); ``table_revision``
makes its ``upgrade`` (create the tables and their indexes, in order) and ``downgrade`` (drop
them, in reverse).

Frozen like the revisions themselves: a revision must build the same schema whenever it runs,
so nothing a revision uses here may change meaning (a new need gets a new name), and nothing
here imports the live table definitions (``warehouse/schema.py``, ``analysis_schema.py``, ...),
which move on with the code. ``ExactDecimal`` is a column type, not a table: its DDL is fixed
(NUMERIC(38, 12) on PostgreSQL, TEXT on SQLite).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.types import TypeEngine

from usage_orchestration.warehouse.types import ExactDecimal


@dataclass(frozen=True)
class Column:
    name: str
    make_type: Callable[[], TypeEngine[Any]]  # a fresh type for each table built
    nullable: bool = True


@dataclass(frozen=True)
class Kind:
    """A column type: ``kind("a", "b", nullable=False)`` declares the columns a and b of it."""

    make_type: Callable[[], TypeEngine[Any]]

    def __call__(self, *names: str, nullable: bool = True) -> tuple[Column, ...]:
        return tuple(Column(name, self.make_type, nullable) for name in names)


numeric = Kind(lambda: sa.Numeric(precision=38, scale=12))  # the baseline's money (SQLite: a float)
exact = Kind(ExactDecimal)  # money and quantities from 0002 on
integer = Kind(sa.Integer)
double = Kind(sa.Double)
boolean = Kind(sa.Boolean)
date = Kind(sa.Date)
timestamp = Kind(sa.DateTime)
text = Kind(sa.Text)


def string(*names: str, length: int, nullable: bool = True) -> tuple[Column, ...]:
    return Kind(lambda: sa.String(length=length))(*names, nullable=nullable)


LOAD_ID = string("load_id", length=64, nullable=False)  # the run that wrote the row


@dataclass(frozen=True)
class Table:
    """A table as a revision created it. The primary key is named ``pk_<table>`` unless
    ``key_named`` is false (then the database names it, e.g. ``<table>_pkey`` on PostgreSQL)."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    key_named: bool = True
    indexes: Mapping[str, tuple[str, ...]] | None = None  # name: columns (none unique)

    def schema_items(self) -> list[sa.schema.SchemaItem]:
        items: list[sa.schema.SchemaItem] = [
            sa.Column(c.name, c.make_type(), nullable=c.nullable) for c in self.columns
        ]
        if self.primary_key:
            name = f"pk_{self.name}" if self.key_named else None
            items.append(sa.PrimaryKeyConstraint(*self.primary_key, name=name))
        return items


def table(
    name: str,
    *columns: Iterable[Column],
    primary_key: tuple[str, ...] = (),
    key_named: bool = True,
    indexes: Mapping[str, tuple[str, ...]] | None = None,
) -> Table:
    """``Table`` from groups of columns (each kind's call is one group), in order."""
    flat = tuple(c for group in columns for c in group)
    return Table(name, flat, primary_key, key_named, indexes)


def create_tables(tables: Iterable[Table], *, if_not_exists: bool = False) -> None:
    for t in tables:
        op.create_table(t.name, *t.schema_items(), if_not_exists=if_not_exists or None)
        for index, columns in (t.indexes or {}).items():
            op.create_index(
                index, t.name, list(columns), unique=False, if_not_exists=if_not_exists or None
            )


def drop_tables(tables: Iterable[Table]) -> None:
    for t in reversed(list(tables)):
        for index in t.indexes or {}:
            op.drop_index(index, table_name=t.name)
        op.drop_table(t.name)


def table_revision(
    *tables: Table, if_not_exists: bool = False
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``upgrade, downgrade`` of a revision that only adds ``tables``: create them (with
    ``if_not_exists``, a table already there is kept as it is), or drop them."""

    def upgrade() -> None:
        create_tables(tables, if_not_exists=if_not_exists)

    def downgrade() -> None:
        drop_tables(tables)

    return upgrade, downgrade
