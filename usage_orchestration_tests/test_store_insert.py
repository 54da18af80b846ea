"""``insert_columns`` (warehouse/store.py) binds repeated values once per distinct value (days,
naive timestamps, exact decimals) and stores exactly what SQLAlchemy's own INSERT stores."""

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Column, Date, DateTime, Integer, MetaData, Table, select

from usage_orchestration.warehouse.store import insert_columns, make_engine
from usage_orchestration.warehouse.types import ExactDecimal

_meta = MetaData()


def _table(name: str) -> Table:
    return Table(
        name,
        _meta,
        Column("n", Integer, primary_key=True),
        Column("day", Date),
        Column("at", DateTime),
        Column("amount", ExactDecimal()),
    )


FAST, CORE = _table("fast"), _table("core")


def _stored(tmp_path: Path, at: list[datetime | None]) -> tuple[list[tuple], list[tuple]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    _meta.create_all(engine)
    n = len(at)
    columns = {
        "n": list(range(n)),
        "day": [date(2026, 1, 1) + timedelta(days=i % 3) for i in range(n)],
        "at": at,
        "amount": [Decimal(i % 4) / 3 if i % 5 else None for i in range(n)],
    }
    rows = [dict(zip(columns, r, strict=True)) for r in zip(*columns.values(), strict=True)]
    with engine.begin() as conn:
        insert_columns(conn, FAST, columns)
        conn.execute(CORE.insert(), rows)
        # as stored (text on SQLite), not as read back
        raw = [
            conn.exec_driver_sql(f"SELECT day, at, amount FROM {t} ORDER BY n").all()  # noqa: S608
            for t in ("fast", "core")
        ]
        assert conn.execute(select(FAST)).all() == conn.execute(select(CORE)).all()
    return raw[0], raw[1]


def test_repeated_days_timestamps_and_decimals_are_stored_as_core_stores_them(
    tmp_path: Path,
) -> None:
    hours = [datetime(2026, 1, 1, i % 5) for i in range(400)]
    fast, core = _stored(tmp_path, [*hours, None])
    assert fast == core
    assert len({r[1] for r in fast}) == 6  # five hours and NULL


def test_aware_timestamps_of_one_instant_keep_their_own_wall_time(tmp_path: Path) -> None:
    noon = datetime(2026, 1, 1, 12, tzinfo=UTC)
    plus_one = noon.astimezone(timezone(timedelta(hours=1)))
    assert noon == plus_one  # one instant: a cache keyed by value would merge them
    fast, core = _stored(tmp_path, [noon, plus_one] * 150)
    assert fast == core
    assert fast[0][1] != fast[1][1]
