"""benchmarks/online_line.py's summary: each fold's runs pooled by counts, fold-level intervals,
the curve's stretches, the paired differences, and the plot."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

line = pytest.importorskip("online_line")

LABELS = [0, 0, 0, 1, 0, 0, 1, 0, 1, 1]  # 6 good, 4 defective


def run(split: str, learning: list[int], never: list[int]) -> dict:
    """A run whose end pass repeats its prequential flags (refitted: the learning flags)."""
    rates = {w: line.rates(f, LABELS) for w, f in (("learning", learning), ("never_learns", never))}
    return {
        "split": split, "seed": 0, "stream": len(LABELS), "labels": LABELS,
        "flags": {"learning": learning, "never_learns": never}, "prequential": rates,
        "end_pass": {"never_learns": rates["never_learns"], "learned": rates["learning"],
                     "refitted": rates["learning"]},
    }  # fmt: skip


ALL_BAD = [0, 0, 0, 1, 0, 0, 1, 0, 1, 1]  # finds every defect, no false alarm
ONE_ALARM = [1, 0, 0, 1, 0, 0, 1, 0, 1, 1]
MISSES_TWO = [0, 0, 0, 0, 0, 0, 1, 0, 0, 1]


def test_a_folds_runs_are_pooled_by_counts():
    runs = [run("fold0", ALL_BAD, MISSES_TWO), run("fold0", ONE_ALARM, MISSES_TWO)]
    assert line.pooled_rate(runs, lambda r: r["prequential"]["learning"], "false_alarm_rate") == (
        pytest.approx(1 / 12)
    )
    assert line.pooled_rate(runs, lambda r: r["prequential"]["never_learns"], "escape_rate") == 0.5
    # a stretch without a defective image is no escape rate of 0
    first = line.stretch(runs[0], "learning", 0, 5)
    assert first["defective"] == 0
    assert math.isnan(line.pooled_rate(runs[:1], lambda r: first, "escape_rate"))


def test_summary_intervals_are_over_folds():
    runs = [run(f"fold{f}", ALL_BAD if f else ONE_ALARM, MISSES_TWO) for f in range(3)]
    out = line.summary(runs, 0.5, 5)
    pre = out["prequential"]["learning"]["false_alarm_rate"]
    assert pre["n_folds"] == 3 and pre["mean"] == pytest.approx(1 / 18)
    assert pre["ci"][0] < pre["mean"] < pre["ci"][1]
    diff = out["learning_minus_never_learns_prequential"]["escape_rate"]
    assert diff["difference"] == pytest.approx(-0.5) and diff["verdict"] == "learning wins"
    same = out["learned_minus_refitted_end_pass"]["escape_rate"]
    assert same["difference"] == 0.0
    assert len(out["curve"]["learning"]) == 5
    # the stretch of positions 8-9: two defects, both found by learning, missed once by never
    assert out["curve"]["never_learns"][4]["escape_rate"]["mean"] == pytest.approx(0.5)


def test_stretch_differences_pair_the_folds():
    runs = [run(f"fold{f}", ALL_BAD, MISSES_TWO) for f in range(3)]
    diff = line.stretch_differences(runs, 0.5, 5)
    assert len(diff) == 5
    assert diff[4]["difference"] == pytest.approx(-0.5)  # positions 8-9: 0 escapes against 1 of 2
    assert diff[0]["verdict"] == "undefined"  # positions 0-1: no defective image


def test_plot_draws_one_column_per_dataset(tmp_path):
    runs = [run(f"fold{f}", ALL_BAD if f else ONE_ALARM, MISSES_TWO) for f in range(3)]
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.json"
        summary = line.summary(runs, 0.5, 5)
        path.write_text(json.dumps({"dataset": name, "summary": summary, "runs": runs,
                                    "command": "online_line.py --folds 3"}))  # fmt: skip
        paths.append(path)
    out = tmp_path / "curve.png"
    line.plot(paths, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
