"""benchmarks/online_guard_choice.py: each outer fold chooses its guard from its training items
only. The fixture's counts favour one guard on any training image and another, overwhelmingly,
on test images: a choice that saw a test image would flip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from dualpatch.experiment.protocol import Split  # noqa: E402

choice = pytest.importorskip("online_guard_choice")


class Fitted:
    threshold_ = 1.0


def test_one_fold_chooses_on_training_items_only(demo_train, demo_test, monkeypatch):
    test_ids = {s.id for s in demo_test}
    asked: list[set[str]] = []

    def fake_counts(model, held, images):
        ids = {s.id for s in images}
        asked.append(ids)
        leak = bool(ids & test_ids)
        # training images favour "patch"; any test image makes "score" win by far
        good, bad = (50, 10)
        return {
            name: {"caught": 10 if name == ("score" if leak else "patch") else 0, "defective": bad,
                   "refused": 0, "good": good}
            for name in choice.GUARDS
        }  # fmt: skip

    monkeypatch.setattr(choice, "fit_dual", lambda train, *a: (Fitted(), []))
    monkeypatch.setattr(choice, "guard_counts", fake_counts)
    fold = choice.one_fold(Split("fold0", demo_train, demo_test), 0, None, {})
    assert not asked[0] & test_ids, "a test image reached the choice"
    assert asked[1] == test_ids  # the outer figures: the test fold, after the choice
    assert fold["chosen"] == "patch"
    assert choice.choose_guard(fold["outer_test"])[0] == "score"  # the control: it would flip


def test_summary_reports_each_folds_own_choice():
    def fold(chosen, caught):
        outer = {n: {"caught": caught if n == chosen else 0, "defective": 10, "refused": 0,
                     "good": 10} for n in choice.GUARDS}  # fmt: skip
        return {"chosen": chosen, "outer_test": outer}

    out = choice.summary([fold("score", 10), fold("patch", 5), fold("score", 0)], 0.5)
    assert out["procedure"]["catch_rate"]["mean"] == pytest.approx(0.5)
    assert out["fixed_candidates_not_used_to_choose"]["score"]["catch_rate"]["mean"] == (
        pytest.approx(10 / 30)
    )
