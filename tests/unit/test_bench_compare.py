"""The parts of benchmarks.compare that need no service: percentiles, /proc readings, the table,
and the message when the rival harness is missing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from benchmarks.procstat import CpuMeter, peak_rss_mib, percentile
from benchmarks.report import Row, table
from benchmarks.rivals import SetupError, find_anchors


def test_percentile_is_nearest_rank_like_the_rival_harness() -> None:
    values = [float(v) for v in range(1000, 0, -1)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [500.0, 900.0, 990.0, 1000.0]
    assert percentile([7.0], 99) == 7.0


def test_the_cpu_meter_charges_this_process_to_its_group() -> None:
    meter = CpuMeter(lambda: {os.getpid(): "client"}).start()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    used = meter.stop()
    assert 0.1 < used["client"] < 5
    assert used["machine"] >= used["client"] - 0.05
    assert {"postgres", "rabbitmq", "redis", "wall"} <= used.keys()


def test_peak_rss_of_a_live_and_of_a_gone_process() -> None:
    mib = peak_rss_mib(os.getpid())
    assert mib is not None and mib > 10
    assert peak_rss_mib(2**22 + 12345) is None


def test_the_table_shows_ratios_and_dashes() -> None:
    text = table([Row("jobs/s", 250.0, 1000.0, None, digits=0), Row("p50 ms", None, 3.0)])
    lines = text.splitlines()
    assert lines[0].startswith("| figure") and "Celery" in lines[0]
    assert "0.25x" in lines[2] and lines[2].rstrip("| ").endswith("-")
    assert "0.25x" not in lines[3]


def test_a_missing_harness_says_how_to_set_it_up(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="pip install"):
        find_anchors(str(tmp_path / "nowhere"))
