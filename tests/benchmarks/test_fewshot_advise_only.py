"""benchmarks/fewshot.py --advise-only: a written JSON's advice recomputed from its own results
(the inner-fold advice where the results carry the rule choice), the figures untouched."""

from __future__ import annotations

import json

from dualpatch.experiment.fewshot_runner import INNER_EVIDENCE
from tests.benchmarks import load_script


def _entry(run: str, auroc: float, inner: float, **extra) -> dict:
    choice = {f: {"chosen": "patch", "criterion": {"patch": inner, "weighted": 0.0}}
              for f in ("fold0", "fold1")}  # fmt: skip
    return {"run": run, "defect_shots": 1, "image_auroc": auroc, "image_ap": auroc,
            "rule": "inner: fold0 patch, fold1 patch", "rule_choice": choice, **extra}  # fmt: skip


def test_advise_only_chooses_on_the_inner_figures_and_keeps_the_results(tmp_path):
    wins = {"verdict": "dual+paste n=1 wins"}  # the test folds favour paste; validation, dual
    results = {
        "single": {"run": "single", "defect_shots": None, "image_auroc": 0.7, "image_ap": 0.6},
        "dual n=1": _entry("dual", 0.90, 0.95),
        "dual+paste n=1": _entry("dual+paste", 0.97, 0.80,
                                 comparisons={"image_auroc": wins, "image_ap": wins}),
    }  # fmt: skip
    runs = [{"name": "single", "bank": "single"}, {"name": "dual", "bank": "dual"},
            {"name": "dual+paste", "bank": "dual", "augment": {"method": "paste"}}]  # fmt: skip
    path = tmp_path / "fewshot_cv.json"
    path.write_text(json.dumps({"runs": runs, "results": results, "advice_and_goal": {"1": {}}}))
    load_script("fewshot").readvise(path)
    saved = json.loads(path.read_text())
    advice = saved["advice_and_goal"]["1"]
    assert advice["use"] == "dual n=1" and advice["chosen_on"] == INNER_EVIDENCE
    assert advice["test_fold_reading"]["use"] == "dual+paste n=1"
    assert saved["results"] == results and "--advise-only" in saved["advice_recomputed"]
