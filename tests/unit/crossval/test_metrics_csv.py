"""metrics.csv of a cross-validated run: written with the csv module, read back by it."""

from __future__ import annotations

import csv
import io
import math

from dualpatch.experiment.crossval import metrics_csv


def test_run_names_with_commas_and_quotes_survive_a_round_trip():
    metrics = {
        'dual, "patch"': {
            "image_auroc": 0.75,
            "image_auroc_std": 0.1,
            "image_auroc_ci": [0.6, 0.9],
        },
        "single": {"image_auroc": 0.5},
    }
    rows = list(csv.DictReader(io.StringIO(metrics_csv(metrics))))
    assert [r["run"] for r in rows] == ['dual, "patch"', "single"]
    first, second = rows
    assert float(first["image_auroc"]) == 0.75
    assert (float(first["image_auroc_ci_low"]), float(first["image_auroc_ci_high"])) == (0.6, 0.9)
    # a figure a run does not have is NaN, not a shifted column
    assert math.isnan(float(second["image_auroc_std"]))
    assert math.isnan(float(second["pixel_aupro"]))
