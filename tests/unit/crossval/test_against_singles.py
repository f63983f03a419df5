"""A dual run read against every single bank (plain and re-weighted), and the strongest named."""

from __future__ import annotations

import numpy as np

from dualpatch.experiment.crossval import COMPARED, against_singles, compare_all


def _run(name: str, bank: str, mean: float) -> dict:
    return {"name": name, "settings": {"bank": bank}, "metrics": dict.fromkeys(COMPARED, mean)}


def _boots(mean: float) -> dict:
    rng = np.random.default_rng(int(mean * 100))
    return {k: mean + 0.01 * rng.standard_normal(200) for k in COMPARED}


def test_dual_is_compared_with_the_strongest_single_not_only_the_first():
    results = [_run("single", "single", 0.80), _run("single-rw", "single", 0.90),
               _run("dual", "dual", 0.85)]  # fmt: skip
    boots = {r["name"]: _boots(r["metrics"]["image_auroc"]) for r in results}
    first = compare_all(results, boots)["dual"]["image_auroc"]
    assert first["against"] == "single" and first["verdict"] == "dual wins"
    found = against_singles(results, boots)
    assert set(found) == {"dual"}  # single runs are not read against each other here
    dual = found["dual"]
    assert dual["strongest_single"] == dict.fromkeys(COMPARED, "single-rw")
    strongest = dual["against_strongest"]["image_auroc"]
    assert strongest["against"] == "single-rw" and strongest["verdict"] == "single-rw wins"
    assert set(dual["against_each"]) == {"single", "single-rw"}
    assert dual["against_each"]["single"]["image_auroc"] == first


def test_one_single_run_adds_nothing():
    results = [_run("single", "single", 0.8), _run("dual", "dual", 0.9)]
    boots = {r["name"]: _boots(r["metrics"]["image_auroc"]) for r in results}
    assert against_singles(results, boots) == {}
