"""Why the stored threshold raises more false alarms on some datasets than its held-out images
promise: the held-out normal images against the good test images, fold by fold.

At quantile 1 the stored threshold is the largest held-out score (capped at tau under a safe
rule). A new normal image drawn like the held-out ones exceeds the largest of n of them with
probability 1 / (n + 1): that is the false-alarm rate to expect when the test images are like the
held-out ones. ``fit`` draws its held-out images at random from the training normals, so they
share whatever groups the bank images come from (BSData's spindle locations); the safety suite's
outer test folds hold whole groups the training side never saw. Per outer fold, at the default
normalisation, for the single bank and ``guarded`` (with the image-level check, as ``fit`` makes
it):

* the false-alarm rate on good test images at the stored threshold, and 1 / (n + 1);
* the median score of the held-out and of the good test images, as shares of the threshold;
* a two-sample Kolmogorov-Smirnov test of the two score samples (scipy): a small p says the good
  test images do not score like the held-out ones.

A diagnostic of the stored fits (``safety_compute.py``, ``safety_gate.py``): test labels are read
only to describe the threshold already stored; nothing is chosen on them.

    python benchmarks/threshold_shift.py --work runs/safety

Writes ``benchmarks/results/threshold_shift.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from line_speed import run_header
from safety_suite import DEFAULT_NORM, RESULTS, Fold, stored_fits_args

from dualpatch.fileio import write_json

#: the runs described: the single bank and the default rule
RUNS = ("single", "guarded")


def fold_shift(fold: Fold, run: str) -> dict:
    from scipy.stats import ks_2samp

    from dualpatch.threshold import flag

    threshold = fold.threshold(run)
    held, _ = fold.scores(run, "held")
    test, _ = fold.scores(run, "test")
    good = test[fold.arrays["test.label"] == 0]
    ks = ks_2samp(held, good)
    return {
        "held_out_images": len(held),
        "good_test_images": len(good),
        "false_alarm_rate": round(float(flag(good, threshold).mean()), 4),
        "expected_if_alike": round(1 / (len(held) + 1), 4),
        "median_over_threshold": {
            "held_out": round(float(np.median(held)) / threshold, 4),
            "good_test": round(float(np.median(good)) / threshold, 4),
        },
        "ks_statistic": round(float(ks.statistic), 4),
        "ks_p": float(ks.pvalue),
    }


def dataset_shift(work: Path, name: str) -> dict:
    paths = sorted((work / name / DEFAULT_NORM).glob("r*f*.outer.npz"))
    if not paths:  # before anything is written: a wrong --work must not replace the results
        raise SystemExit(f"{work / name / DEFAULT_NORM}: no stored outer folds (safety_compute.py)")
    out: dict = {"folds": [p.name.split(".")[0] for p in paths]}
    for run in RUNS:
        rows = [fold_shift(Fold(p), run) for p in paths]
        out[run] = {
            "per_fold": rows,
            **{
                f"{k}_mean": round(float(np.mean([r[k] for r in rows])), 4)
                for k in ("false_alarm_rate", "expected_if_alike")
            },
            "folds_with_ks_p_below_0.05": sum(r["ks_p"] < 0.05 for r in rows),
        }
    return out


def main() -> None:
    args = stored_fits_args(__doc__.splitlines()[0])
    datasets = {name: dataset_shift(Path(args.work), name) for name in args.datasets}
    record = {
        **run_header(),
        "normalization": DEFAULT_NORM,
        "datasets": datasets,
    }
    write_json(RESULTS / "threshold_shift.json", record)
    for name, d in datasets.items():
        summary = {run: {k: v for k, v in d[run].items() if k != "per_fold"} for run in RUNS}
        print(name, json.dumps(summary))


if __name__ == "__main__":
    main()
