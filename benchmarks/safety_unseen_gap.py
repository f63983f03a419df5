"""Where the default rule's unseen-defect AUROC differs from the single bank's: ``guarded`` is
the larger of a raising half (2 d_n * d_n / (d_n + d_d), above d_n near a known defect) and a
damping half (d_n * min(1, d_n / tau)); each half is scored alone on the stored distances of every
outer fold (``safety_compute.py``), at the default normalisation, with the same map and image
score as the rules, and its unseen-defect AUROC is set against the single bank's; the same on
each outer fold's inner split (``inner_splits``: training items only).

The image-level check is left out here (it decides only frames beyond what normal images reach;
``safety_<dataset>.json`` has the figures with it). A diagnostic: nothing is chosen on it.

    python benchmarks/safety_unseen_gap.py --work runs/safety

Writes ``benchmarks/results/safety_unseen_gap.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from line_speed import run_header
from safety_suite import DEFAULT_NORM, RESULTS, Fold, stored_fits_args

from dualpatch.fileio import write_json

#: the patch maps compared: the single bank, the rule, and each half of it alone
HALVES = {
    "single": lambda dn, share, tau: dn,
    "guarded": lambda dn, share, tau: torch.maximum(2 * dn * share, dn * (dn / tau).clamp(max=1)),
    "raising_half": lambda dn, share, tau: torch.maximum(2 * dn * share, dn),
    "damping_half": lambda dn, share, tau: dn * (dn / tau).clamp(max=1),
}


def image_scores(fold: Fold, part: str, half: str) -> np.ndarray:
    from dualpatch.scoring import GUARD_FLOOR, score_patches

    dn = torch.from_numpy(fold.arrays[f"{part}.dn"])
    dd = torch.from_numpy(fold.arrays[f"{part}.dd"])
    share = dn / (dn + dd).clamp_min(GUARD_FLOOR)
    _, score = score_patches(HALVES[half](dn, share, fold.level), tuple(dn.shape[1:]), 4.0)
    return score.double().numpy()


def unseen_auroc(fold: Fold, half: str) -> float:
    from sklearn.metrics import roc_auc_score

    good = image_scores(fold, "test", half)[fold.arrays["test.label"] == 0]
    unseen = image_scores(fold, "unseen", half)
    labels = np.r_[np.zeros(len(good)), np.ones(len(unseen))]
    return float(roc_auc_score(labels, np.r_[good, unseen]))


def dataset_gap(work: Path, name: str, split: str) -> dict:
    folds = sorted((work / name / DEFAULT_NORM).glob(f"r*f*.{split}.npz"))
    if not folds:  # before anything is written: a wrong --work must not replace the results
        folder = work / name / DEFAULT_NORM
        raise SystemExit(f"{folder}: no stored {split} folds (safety_compute.py)")
    per_fold = {half: [] for half in HALVES}
    for path in folds:
        fold = Fold(path)
        for half in HALVES:
            per_fold[half].append(unseen_auroc(fold, half))
    single = np.asarray(per_fold["single"])
    return {
        "folds": [p.name.split(".")[0] for p in folds],
        "unseen_auroc_per_fold": {h: [round(v, 4) for v in vals] for h, vals in per_fold.items()},
        "mean_difference_to_single": {
            h: round(float(np.mean(np.asarray(v) - single)), 4) for h, v in per_fold.items()
        },
    }


def main() -> None:
    args = stored_fits_args(__doc__.splitlines()[0])
    record = {
        **run_header(),
        "normalization": DEFAULT_NORM,
        "datasets": {name: dataset_gap(Path(args.work), name, "outer") for name in args.datasets},
        # the same on each outer fold's inner split (its validation items): the training side,
        # where a selection could see it
        "inner_splits": {
            name: dataset_gap(Path(args.work), name, "inner") for name in args.datasets
        },
    }
    write_json(RESULTS / "safety_unseen_gap.json", record)
    for part in ("datasets", "inner_splits"):
        gaps = {n: d["mean_difference_to_single"] for n, d in record[part].items()}
        print(part, json.dumps(gaps))


if __name__ == "__main__":
    main()
