"""Run only by ``test_settings.py::test_stray_settings_do_not_leak_into_tests``, in a child
pytest whose environment and working directory carry stray settings (the file name keeps it
out of normal collection)."""

from __future__ import annotations

import os
from pathlib import Path

from usage_orchestration.settings import (
    DEFAULT_SETTINGS_FILE,
    UsageSettings,
    load_settings,
    settings_file,
)


def test_isolation_probe() -> None:
    # USAGE_TEST_* variables survive the isolation (the parent set this one)...
    assert os.environ.get("USAGE_TEST_ISOLATION_PROBE") == "1"
    # ...the stray settings file is in the working directory...
    assert Path(DEFAULT_SETTINGS_FILE).is_file()
    # ...and neither it nor the stray variable reaches the settings.
    assert "USAGE_PHALA__PAGE_SIZE" not in os.environ
    # (relative paths resolve against the directory of the file the fixture names)
    base = settings_file().resolve().parent
    assert load_settings() == UsageSettings.model_validate({}, context={"base_dir": base})
