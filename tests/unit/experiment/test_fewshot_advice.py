"""The few-shot advice (``fewshot_runner.goal_and_advice``) is chosen on training items only when
the inner-validation figures exist, and a test item cannot reach it.

The fixture is a per-item table for each outer fold: the fold's inner-validation items favour the
real defects alone ("dual", option A) and its test items favour copy-paste ("dual+paste", option
B) by far more. The figures a run publishes are built from it the way the runner builds them: the
nested rule choice's criterion from the validation items, the means and the paired verdict from
the test items. An advice that read any test figure flips to B.
"""

from __future__ import annotations

import numpy as np

from dualpatch.experiment.fewshot_runner import INNER_EVIDENCE, goal_and_advice, source_per_fold

A, B = "dual n=1", "dual+paste n=1"
FOLDS = ("fold0", "fold1", "fold2")
ENTRIES = [
    {"name": "single", "run": "single", "shots": None, "bank": "single", "real_only": False},
    {"name": A, "run": "dual", "shots": 1, "bank": "dual", "real_only": True},
    {"name": B, "run": "dual+paste", "shots": 1, "bank": "dual", "real_only": False},
]


def item_scores(favour_on_validation: dict[str, str] | None = None) -> dict:
    """fold -> "validation"/"test" -> source -> per-item scores. Validation items favour A (or
    ``favour_on_validation[fold]``) by 0.05; test items favour B by 0.25."""
    favour_on_validation = favour_on_validation or {}
    rng = np.random.default_rng(0)
    table = {}
    for f in FOLDS:
        good = favour_on_validation.get(f, A)
        noise = rng.uniform(-0.01, 0.01, 12)
        table[f] = {
            "validation": {s: 0.85 + (0.05 if s == good else 0.0) + noise for s in (A, B)},
            "test": {A: 0.70 + noise, B: 0.95 + noise},
        }
    return table


def published(table: dict) -> dict:
    """metrics.json's entries from the per-item table: ``rule_choice`` (per fold, the criterion
    of each rule; the rule acts the same here, so every rule gets the validation mean) from the
    validation items; means, intervals and the paired verdict from the test items."""
    metrics = {"single": {"image_auroc": 0.6, "image_ap": 0.5}}
    for s in (A, B):
        test = np.concatenate([table[f]["test"][s] for f in FOLDS])
        choice = {
            f: {"chosen": "patch", "criterion": {"patch": float(np.mean(table[f]["validation"][s])),
                                                 "weighted": 0.0}}
            for f in FOLDS
        }  # fmt: skip
        mean = float(np.mean(test))
        metrics[s] = {"image_auroc": mean, "image_ap": mean, "image_auroc_ci": [mean - 0.01,
                      mean + 0.01], "image_ap_ci": [mean - 0.01, mean + 0.01],
                      "rule": "inner: fold0 patch, fold1 patch, fold2 patch",
                      "rule_choice": choice}  # fmt: skip
    gap = metrics[B]["image_auroc"] - metrics[A]["image_auroc"]
    verdict = {"verdict": f"{B} wins" if gap > 0 else f"{A} wins"}
    metrics[B]["comparisons"] = {"image_auroc": verdict, "image_ap": verdict}
    return metrics


def test_the_advice_is_chosen_on_inner_folds_in_every_fold():
    advice = goal_and_advice(published(item_scores()), ENTRIES)["1"]
    assert advice["per_outer_fold"] == dict.fromkeys(FOLDS, A)
    assert advice["use"] == A and advice["chosen_on"] == INNER_EVIDENCE
    assert advice["rule"] == "inner: fold0 patch, fold1 patch, fold2 patch"


def test_the_fixture_flips_the_advice_when_test_figures_are_read():
    # the control: the same published figures read the old way (test-fold verdicts) pick B, and
    # so does the chooser handed the test items' scores in place of the validation items'
    metrics = published(item_scores())
    reading = goal_and_advice(metrics, ENTRIES)["1"]["test_fold_reading"]
    assert reading["use"] == B and reading["chosen_on"].startswith("test folds, uncorrected")
    table = item_scores()
    leaked = {s: {f: float(np.mean(table[f]["test"][s])) for f in FOLDS} for s in (A, B)}
    assert source_per_fold(leaked, prefer=A) == dict.fromkeys(FOLDS, B)


def test_no_test_figure_moves_the_advice():
    metrics = published(item_scores())
    before = goal_and_advice(metrics, ENTRIES)["1"]
    for s in (A, B):  # every test-fold figure and verdict changed
        metrics[s].update(image_auroc=0.5, image_ap=0.5)
        metrics[s].pop("comparisons", None)
    after = goal_and_advice(metrics, ENTRIES)["1"]
    assert (after["use"], after["per_outer_fold"]) == (before["use"], before["per_outer_fold"])


def test_folds_that_disagree_give_no_single_advice():
    metrics = published(item_scores({"fold1": B}))
    advice = goal_and_advice(metrics, ENTRIES)["1"]
    assert advice["per_outer_fold"] == {"fold0": A, "fold1": B, "fold2": A}
    assert advice["use"] is None and advice["rule"] is None
    assert "disagree" in advice["why"]


def test_the_chosen_rules_criterion_counts_and_ties_go_to_the_real_defects():
    metrics = published(item_scores())
    # B's best rule on validation beats A, but B's fold0 choice was "patch": its figure counts
    metrics[B]["rule_choice"]["fold0"]["criterion"]["weighted"] = 0.99
    assert goal_and_advice(metrics, ENTRIES)["1"]["per_outer_fold"]["fold0"] == A
    tie = {A: dict.fromkeys(FOLDS, 0.9), B: dict.fromkeys(FOLDS, 0.9)}
    assert source_per_fold(tie, prefer=A) == dict.fromkeys(FOLDS, A)
    assert source_per_fold({B: tie[B], A: tie[A]}, prefer=A) == dict.fromkeys(FOLDS, A)


def test_without_inner_figures_the_test_fold_reading_is_used_and_marked():
    metrics = published(item_scores())
    metrics[B].pop("rule_choice")  # one source without inner figures: no inner comparison
    advice = goal_and_advice(metrics, ENTRIES)["1"]
    assert advice["use"] == B and advice["chosen_on"].startswith("test folds, uncorrected")
    assert "per_outer_fold" not in advice


def test_a_run_with_the_nested_rule_choice_gives_advice_chosen_on_inner_folds(tmp_path):
    """The runner end to end (two folds, rule_selection: inner): metrics.json's advice is chosen
    on the rule choice's inner figures, and report.html says so."""
    import json
    import warnings

    from dualpatch.experiment.config import load_config
    from dualpatch.experiment.runner import Experiment
    from tests.support.protocol_fixtures import make_folder

    data = make_folder(tmp_path / "data", n_good=8, n_bad_train=6)
    out = tmp_path / "out"
    runs = ("runs=[{name: single, bank: single}, {name: dual, bank: dual}, {name: dual+feature, "
            "bank: dual, defect_feature_augment: {method: interpolate}}]")  # fmt: skip
    cfg = load_config(
        None,
        [f"data={data}", f"out={out}", "dataset=folder", "image_size=[64, 32]", "coreset_min=20",
         "bootstrap=20", "threshold=none", f"cache_dir={tmp_path / 'cache'}", runs, "folds=2",
         "defect_shots=[1]", "defect_draws=1", "rule_selection=inner"],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Experiment(cfg).run()
    metrics = json.loads((out / "metrics.json").read_text())
    advice = metrics["fewshot"]["1"]
    assert advice["chosen_on"] == INNER_EVIDENCE
    folds = set(metrics["dual n=1"]["rule_choice"])
    assert len(folds) == 2 and set(advice["per_outer_fold"]) == folds
    for name in ("dual n=1", "dual+feature n=1"):
        for fold, c in metrics[name]["rule_choice"].items():
            assert advice["inner_criterion"][name][fold] == c["criterion"][c["chosen"]]
    assert advice["test_fold_reading"]["chosen_on"].startswith("test folds, uncorrected")
    page = (out / "report.html").read_text()
    assert 'id="fewshot-advice-evidence">Chosen on training items only' in page
