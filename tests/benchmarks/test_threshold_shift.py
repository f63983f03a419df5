"""benchmarks/threshold_shift.py: held-out normals against good test images, one stored fold."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

threshold_shift = pytest.importorskip("threshold_shift")


class _Fold:
    """A stored fold as the script reads it: scores per set and the stored threshold."""

    def __init__(self, held: np.ndarray, test: np.ndarray, labels: np.ndarray):
        self._scores = {"held": held, "test": test}
        self.arrays = {"test.label": labels}

    def scores(self, run: str, part: str):
        return self._scores[part], None

    def threshold(self, run: str) -> float:
        return float(np.max(self._scores["held"]))


def _fold(shift: float, seed: int = 0) -> _Fold:
    rng = np.random.default_rng(seed)
    held = rng.normal(1.0, 0.1, 90)
    good = rng.normal(1.0 + shift, 0.1, 200)
    defects = np.full(20, 5.0)
    labels = np.r_[np.zeros(200, int), np.ones(20, int)]
    return _Fold(held, np.r_[good, defects], labels)


def test_test_images_like_the_held_out_ones_raise_about_one_in_n_plus_one_alarms():
    row = threshold_shift.fold_shift(_fold(0.0), "guarded")
    assert row["held_out_images"] == 90 and row["good_test_images"] == 200  # defects left out
    assert row["expected_if_alike"] == round(1 / 91, 4)
    assert row["false_alarm_rate"] < 0.05
    assert row["ks_p"] > 0.01


def test_a_shifted_test_set_is_told_apart():
    row = threshold_shift.fold_shift(_fold(0.3), "guarded")
    assert row["false_alarm_rate"] > 0.5
    assert row["ks_p"] < 1e-6
    over = row["median_over_threshold"]
    assert over["good_test"] > over["held_out"]


def test_a_score_equal_to_the_threshold_is_not_an_alarm():
    # the verdict is threshold.flag's: flagged only above the threshold, as predict and serve
    held = np.array([1.0, 2.0])
    fold = _Fold(held, np.array([2.0, 2.0, 2.5]), np.zeros(3, int))
    assert threshold_shift.fold_shift(fold, "guarded")["false_alarm_rate"] == round(1 / 3, 4)
