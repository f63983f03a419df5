"""The nested choice of benchmarks/select_defaults.py: made per outer fold on training items only.

The fixture's items each favour one candidate. Training items favour "A"; test items favour "B"
so strongly that a choice which saw any test item's label, or a vote that pooled folds' test
items, would flip to "B".
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from dualpatch.data.base import Sample  # noqa: E402

select_defaults = pytest.importorskip("select_defaults")


def fixture(tmp_path: Path, n: int = 36) -> list[Sample]:
    out = []
    for i in range(n):
        path = tmp_path / f"img{i:02d}.png"
        path.write_bytes(f"image {i}".encode())  # distinct bytes: each image its own group
        out.append(Sample(f"img{i:02d}", path, None, int(i % 3 == 0)))
    return out


def rows_from(validation: list[Sample], favoured: dict[str, str]) -> list[dict]:
    """Each candidate's validation criterion: the share of validation items favouring it, with
    the test items' votes worth 100 (a leak would dominate)."""
    rows = []
    single = {"unseen_recall": 0.5, "unseen_auroc": 0.8, "foreign_recall": 1.0}
    for rule in ("A", "B"):
        weight = sum((100 if favoured[s.id] == "B*" else 1) * (favoured[s.id].rstrip("*") == rule)
                     for s in validation)  # fmt: skip
        m = {k: weight / 1000 for k in select_defaults.CRITERION}
        m.update(foreign_recall=1.0, unseen_recall=1.0, unseen_auroc=0.9)
        rows.append({"candidate": {"rule": rule, "normalization": "auto"}, "metrics": m,
                     "single": single})  # fmt: skip
    return rows


def test_each_outer_fold_chooses_on_its_training_items_only(tmp_path):
    samples = fixture(tmp_path)
    seen: list[set] = []
    for seed in (0, 1):
        outer = select_defaults.outer_folds("fixture", samples, seed)

        # training items favour A; every outer test item favours B (marked B*: worth 100)
        def evaluate(name, s, f, inner, validation, outer=outer):
            test_ids = {x.id for x in outer[f][1]}
            favoured = {x.id: ("B*" if x.id in test_ids else "A") for x in samples}
            seen.append({x.id for x in inner} | {x.id for x in validation})
            assert not seen[-1] & test_ids, "a test item reached the choice"
            return rows_from(validation, favoured)

        choices = select_defaults.nested_choices("fixture", samples, seed, evaluate)
        assert [c["chosen"]["rule"] for c in choices] == ["A", "A", "A"]
        assert [c["fold"] for c in choices] == [f"r{seed}f{f}" for f in range(3)]


def test_the_fixture_would_flip_the_choice_if_test_items_were_seen(tmp_path):
    # the control: the same rows computed on a validation set holding the test items pick B
    samples = fixture(tmp_path)
    train, test = select_defaults.outer_folds("fixture", samples, 0)[0]
    favoured = {x.id: ("B*" if x in test else "A") for x in samples}
    leaked = select_defaults.choose(rows_from(test + train[:5], favoured))
    assert leaked["rule"] == "B"


def test_hard_constraints_come_before_the_criterion():
    unseen = {"unseen_auroc": 0.8}
    good = {"foreign_recall": 1.0, "unseen_recall": 0.6, "image_auroc": 0.8, **unseen}
    blind = {"foreign_recall": 0.9, "unseen_recall": 0.9, "image_auroc": 0.99, **unseen}
    weak = {"foreign_recall": 1.0, "unseen_recall": 0.4, "image_auroc": 0.99, **unseen}
    single = {"foreign_recall": 1.0, "unseen_recall": 0.5, "image_auroc": 0.7, **unseen}
    rows = [{"candidate": {"rule": r, "normalization": "auto"}, "metrics": m, "single": single}
            for r, m in (("blind", blind), ("weak", weak), ("good", good))]  # fmt: skip
    assert select_defaults.choose(rows)["rule"] == "good"
    fallback = select_defaults.choose(rows[:2])
    assert fallback["rule"] == "single" and fallback["fallback"]


def test_the_counterfactual_also_requires_unseen_auroc_at_least_the_single_banks():
    # as many unseen defects caught at the threshold as the single bank, but ranked worse
    single = {"foreign_recall": 1.0, "unseen_recall": 0.5, "unseen_auroc": 0.8, "image_auroc": 0.7}
    ranks_worse = {**single, "unseen_auroc": 0.79, "image_auroc": 0.99}
    level = {**single, "image_auroc": 0.8}
    rows = [{"candidate": {"rule": r, "normalization": "auto"}, "metrics": m, "single": single}
            for r, m in (("ranks_worse", ranks_worse), ("level", level))]  # fmt: skip
    assert select_defaults.choose(rows)["rule"] == "ranks_worse"  # recall alone: the criterion
    with_auroc = select_defaults.UNSEEN_WITH_AUROC
    assert select_defaults.choose(rows, with_auroc)["rule"] == "level"
    fallback = select_defaults.choose(rows[:1], with_auroc)
    assert fallback["rule"] == "single" and fallback["fallback"]
    out = select_defaults.choose_defaults({"d1": rows, "d2": rows}, with_auroc)
    assert out["chosen"]["rule"] == "level" and out["feasible_everywhere"]


def test_defaults_need_a_candidate_feasible_on_every_dataset():
    single = {"foreign_recall": 1.0, "unseen_recall": 0.5, "unseen_auroc": 0.8}

    def row(rule, foreign, auroc):
        m = {"foreign_recall": foreign, "unseen_recall": 0.9, "unseen_auroc": 0.8,
             "image_auroc": auroc}  # fmt: skip
        return {"candidate": {"rule": rule, "normalization": "auto"}, "metrics": m,
                "single": single}  # fmt: skip

    rows = {"d1": [row("A", 1.0, 0.7), row("B", 1.0, 0.99)],
            "d2": [row("A", 1.0, 0.7), row("B", 0.5, 0.99)]}  # fmt: skip
    out = select_defaults.choose_defaults(rows)
    assert out["chosen"] == {"normalization": "auto", "rule": "A"} and out["feasible_everywhere"]
    assert np.isclose(out["candidates"][1]["criterion_mean"], 0.99)
    # nothing feasible on d3: the most datasets, then the criterion, and it says so
    rows["d3"] = [row("A", 0.5, 0.7), row("B", 0.5, 0.99)]
    out = select_defaults.choose_defaults(rows)
    assert out["chosen"]["rule"] == "A" and not out["feasible_everywhere"]
    assert out["feasible_on"] == ["d1", "d2"]


# --- the same flip through the safety suite's plumbing (stored fits, tags, levels) -----------
#
# A store of stored fits built from a per-item table: in the fit of outer fold r{s}f{f}, every
# item that is a test item of that fold favours the "imagenet" normalisation 100 times over;
# every other item favours "auto". The suite's procedure reads the inner fits (validation items
# of the fold's training items), so every fold must choose "auto"; the outer fits' rows (the
# fold's test items) choose "imagenet".


class _Fit:
    def __init__(self, ids: list[str]):
        self._ids = ids

    def ids(self, which: str) -> list[str]:
        assert which == "test"
        return self._ids


def _flip_store(safety_suite, samples):
    compute = safety_suite.compute
    fits, tests = {}, {}
    for fs in compute.FOLD_SEEDS:  # what safety_compute.run_dataset stores per fold
        for f, (train, test) in enumerate(select_defaults.outer_folds("fixture", samples, fs)):
            _inner, validation = select_defaults.inner_split("fixture", train, seed=fs)
            tests[f"r{fs}f{f}"] = {s.id for s in test}
            fits[(f"r{fs}f{f}", "inner")] = [s.id for s in validation]
            fits[(f"r{fs}f{f}", "outer")] = [s.id for s in test]

    class FlipStore(safety_suite.Store):
        def __init__(self):
            self.name = "fixture"

        def has(self, norm, tag, level):
            return (tag, level) in fits

        def fold(self, norm, tag, level):
            return _Fit(fits[(tag, level)])

        def metrics(self, norm, tag, level, run):
            ids = fits[(tag, level)]
            test = tests[tag]
            votes = sum((100 if i in test else 1) * ((i in test) == (norm == "imagenet"))
                        for i in ids)  # fmt: skip
            m = dict.fromkeys(select_defaults.CRITERION, votes / 10_000)
            unseen = 0.5 if run == "single" else 1.0
            return {**m, "foreign_recall": 1.0, "unseen_recall": unseen, "unseen_auroc": unseen,
                    "foreign_missed": []}  # fmt: skip

    return FlipStore()


@pytest.fixture(scope="module")
def safety_suite():
    return pytest.importorskip("safety_suite")


def test_the_suites_procedure_chooses_each_fold_on_its_training_items(tmp_path, safety_suite):
    samples = fixture(tmp_path)
    store = _flip_store(safety_suite, samples)
    choices = safety_suite._procedure(store, samples, [])
    seeds = safety_suite.compute.FOLD_SEEDS
    assert [c["fold"] for c in choices] == [f"r{s}f{f}" for s in seeds for f in range(3)]
    assert {c["chosen"]["normalization"] for c in choices} == {"auto"}
    assert all(c["complete"] for c in choices)


def test_the_suites_fixture_flips_on_the_test_items(tmp_path, safety_suite):
    # the control: the same store's rows on a fold's test items (its outer fit) choose imagenet
    samples = fixture(tmp_path)
    store = _flip_store(safety_suite, samples)
    leaked = select_defaults.choose(store.candidate_rows("r0f1", "outer"))
    assert leaked["normalization"] == "imagenet"
