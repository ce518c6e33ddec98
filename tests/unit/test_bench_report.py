"""The benchmark report helper: sections replaced in place, each with its machine yardstick."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import _report


def test_yardstick_times_both_workloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report, "YARDSTICK_REPS", 2)
    y = _report.machine_yardstick()
    assert set(y) == {"python_ms", "numpy_ms"}
    assert all(0.0 < v < 60_000.0 for v in y.values())


def test_section_is_replaced_and_carries_the_yardstick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "benchmarks.md"
    monkeypatch.setattr(_report, "DOC", doc)
    monkeypatch.setattr(_report, "YARDSTICK_REPS", 1)
    _report.write_section("alpha", "Alpha", "| a |\n|---|\n| 1 |", command="python -m bench.a")
    _report.write_section("beta", "Beta", "| b |\n|---|\n| 2 |", command="python -m bench.b")
    _report.write_section("alpha", "Alpha", "| a |\n|---|\n| 3 |", command="python -m bench.a")
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert text.count("<!-- bench:alpha:start -->") == 1
    assert "| 1 |" not in text and "| 3 |" in text and "| 2 |" in text
    assert text.index("bench:alpha:start") < text.index("bench:beta:start")
    assert text.count("Machine yardstick: Python ") == 2
    assert "Command: `python -m bench.a`" in text
