"""Per-partition metadata of a range run (``record_days``, ``run_metadata``, defs/common.py):
every day keeps its figures; table previews (the day's and the run's) are kept on every day of a
run up to 31 days, on the last day only of a longer one (the other days say where they are)."""

from datetime import date, timedelta
from typing import Any

import dagster as dg
import pytest

from usage_orchestration.defs import common

START = date(2026, 1, 1)
PARTITIONS = dg.DailyPartitionsDefinition(start_date=START.isoformat())


@dg.asset(partitions_def=PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run())
def daily_figures(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    common.record_days(
        context,
        lambda d: {
            "rows": d.day,
            "label": dg.MetadataValue.text(d.isoformat()),
            "preview": common.table([{"day": d, "rows": d.day}], ["day", "rows"]),
        },
    )
    run_wide = {"run_wide": 1, "run_table": common.table([{"n": 1}], ["n"])}
    return dg.MaterializeResult(metadata=common.run_metadata(context, run_wide))


def _run(days: int) -> tuple[list[date], dict[str, dict[str, Any]]]:
    last = START + timedelta(days=days - 1)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [daily_figures],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": START.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )
    assert result.success
    # as the UI reads them back: each partition's materialization from the instance
    records = instance.fetch_materializations(daily_figures.key, limit=1000).records
    meta = {r.partition_key: r.asset_materialization.metadata for r in records}
    assert len(records) == days  # one per day, no range-wide one
    return [START + timedelta(days=i) for i in range(days)], meta


def test_preview_days_policy() -> None:
    month = [START + timedelta(days=i) for i in range(common.PREVIEW_EVERY_DAY_MAX_DAYS)]
    assert common.preview_days(month) == set(month)
    longer = [*month, month[-1] + timedelta(days=1)]
    assert common.preview_days(longer) == {longer[-1]}
    assert common.preview_days([]) == set()


@pytest.mark.parametrize("days", [1, common.PREVIEW_EVERY_DAY_MAX_DAYS])
def test_a_daily_run_or_a_month_keeps_a_preview_on_every_day(days: int) -> None:
    all_days, meta = _run(days)
    assert sorted(meta) == [d.isoformat() for d in all_days]
    for d in all_days:
        preview = meta[d.isoformat()]["preview"]
        assert isinstance(preview, dg.TableMetadataValue)
        assert preview.records[0].data == {"day": d.isoformat(), "rows": d.day}
        assert isinstance(meta[d.isoformat()]["run_table"], dg.TableMetadataValue)


def test_a_long_range_keeps_previews_on_its_last_day_and_every_figure_on_every_day() -> None:
    all_days, meta = _run(common.PREVIEW_EVERY_DAY_MAX_DAYS + 2)
    last = all_days[-1]
    assert sorted(meta) == [d.isoformat() for d in all_days]
    for d in all_days:
        day = meta[d.isoformat()]
        # the figures the UI plots over time, the day's text and the run-wide metadata: all kept
        assert day["rows"].value == d.day
        assert day["label"].value == d.isoformat()
        assert day["run_wide"].value == 1
        if d == last:
            assert isinstance(day["preview"], dg.TableMetadataValue)
            assert day["preview"].records[0].data["day"] == last.isoformat()
            # the run-wide table too (the result's metadata is copied into every partition)
            assert isinstance(day["run_table"], dg.TableMetadataValue)
        else:
            # the keys stay, saying where the tables went
            for key in ("preview", "run_table"):
                assert isinstance(day[key], dg.TextMetadataValue)
                assert last.isoformat() in day[key].value
