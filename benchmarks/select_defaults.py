"""Nested, train-only choice of the dual model's settings: per outer fold, and for the defaults.

The procedure, for one training set (the training items of one outer fold, or for the defaults
every image of a dataset): split it again, group-aware and stratified, into an inner training set
(2/3) and a validation set (1/3); fit every candidate on the inner training set and score the
validation set; keep the candidates that meet the hard constraints, then take the best criterion.

* candidates: every default-eligible dual rule (``scoring.DUAL_RULES`` with ``safe``: the rules
  that keep the scoring contract) x normalisation (auto, imagenet);
* hard constraints, on validation data: every foreign frame flagged at the candidate's stored
  threshold (``foreign_recall`` = 1), and unseen-defect recall at least the single bank's at its
  own stored threshold, same normalisation (``unseen_recall``). ``safety_suite.py
  --unseen-auroc-constraint`` adds unseen-defect AUROC at least the single bank's
  (``UNSEEN_WITH_AUROC``) and writes its figures beside the published ones, for the trade it
  makes (docs/results.md);
* criterion: the mean of validation image AUROC, image AP and pixel AUPRO;
* no candidate feasible: the single bank (plain) at the normalisation with the best criterion
  among those whose single bank flags every foreign frame (``fallback`` says so).

Each outer fold keeps its own choice (``nested_choices``): there is no vote across folds, and the
published estimate (benchmarks/safety_suite.py) is of this procedure. The defaults
(``choose_defaults``) run the same procedure on ALL images of each of the three datasets: a
candidate must be feasible on every dataset, and the criterion is averaged over the datasets; when
no candidate is feasible everywhere, the best criterion among those feasible on the most datasets
is taken and ``feasible_everywhere`` is False.

The fits themselves are done by ``safety_compute.py`` (distances stored per fold);
``safety_suite.py --defaults`` writes ``benchmarks/results/select_defaults.json``.

Tests (``tests/benchmarks/test_select_defaults.py``): flip fixtures whose test items would turn
the choice, through ``nested_choices`` and through ``safety_suite``'s stored fits (tags, inner and
outer levels): every fold must choose on its training items, and the same rows on the test items
choose otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

CRITERION = ("image_auroc", "image_ap", "pixel_aupro")
NORMALIZATIONS = ("auto", "imagenet")
#: outer and inner folds
K = 3


def groups_of(name: str, samples: Sequence) -> np.ndarray:
    """Split units: KolektorSDD items (copies merged), BSData spindle locations (images of one
    location over time are strongly correlated), other data image by image (copies merged)."""
    from dualpatch.experiment.protocol import split_groups

    if name != "bsdata":
        return split_groups(samples)
    locations = ["_".join(Path(s.image_path).stem.split("_")[2:4]) for s in samples]
    index = {loc: i for i, loc in enumerate(dict.fromkeys(locations))}
    return np.array([index[loc] for loc in locations])


def folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list:
    """``k`` (train indices, test indices): groups kept whole, labels stratified."""
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(labels)), labels, groups))


def outer_folds(name: str, samples: Sequence, seed: int) -> list[tuple[list, list]]:
    """(training samples, test samples) of each of the ``K`` outer folds of fold seed ``seed``."""
    labels = np.array([s.label for s in samples])
    return [
        ([samples[i] for i in tr], [samples[i] for i in te])
        for tr, te in folds(labels, groups_of(name, samples), K, seed)
    ]


def inner_split(name: str, train: Sequence, seed: int) -> tuple[list, list]:
    """(inner training set, validation set): one of ``K`` group-aware stratified folds of
    ``train``, and of nothing else."""
    labels = np.array([s.label for s in train])
    tr, te = folds(labels, groups_of(name, train), K, seed)[0]
    return [train[i] for i in tr], [train[i] for i in te]


def criterion(metrics: dict) -> float:
    values = [metrics.get(k, math.nan) for k in CRITERION]
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else -math.inf


#: the unseen-defect figures a candidate must match the single bank on: recall at the stored
#: thresholds (the issue's hard constraint); with AUROC as well, the counterfactual selection
UNSEEN = ("unseen_recall",)
UNSEEN_WITH_AUROC = ("unseen_recall", "unseen_auroc")


def feasible(row: dict, unseen: Sequence[str] = UNSEEN) -> bool:
    """The hard constraints: every foreign frame flagged, and each of the ``unseen`` figures at
    least the single bank's (``row["single"]``: its metrics, same normalisation)."""
    m, single = row["metrics"], row["single"]
    return m["foreign_recall"] >= 1.0 and all(m[k] >= single[k] for k in unseen)


def choose(rows: Sequence[dict], unseen: Sequence[str] = UNSEEN) -> dict:
    """The chosen candidate among ``rows`` ({"candidate", "metrics", "single"} per candidate, all
    measured on one validation set): the best criterion among the feasible ones, else the
    fallback to the single bank. Ties go to the earlier row."""
    ok = [r for r in rows if feasible(r, unseen)]
    if ok:
        best = max(ok, key=lambda r: criterion(r["metrics"]))
        return {**best["candidate"], "criterion": criterion(best["metrics"]), "fallback": False}
    singles = {r["candidate"]["normalization"]: r["single"] for r in rows}
    safe = {n: m for n, m in singles.items() if m["foreign_recall"] >= 1.0} or singles
    norm = max(safe, key=lambda n: criterion(safe[n]))
    return {"rule": "single", "normalization": norm, "criterion": criterion(safe[norm]),
            "fallback": True}  # fmt: skip


Evaluate = Callable[[str, int, int, list, list], list[dict]]


def nested_choices(
    name: str, samples: Sequence, seed: int, evaluate: Evaluate, unseen: Sequence[str] = UNSEEN
) -> list[dict]:
    """Each outer fold's own choice, made on its training items only.

    ``evaluate(name, seed, fold, inner, validation)`` returns the candidate rows of one fold
    (fits on ``inner``, metrics on ``validation``); the fold's test items never reach it.
    """
    out = []
    for f, (train, _test) in enumerate(outer_folds(name, samples, seed)):
        inner, validation = inner_split(name, train, seed)
        rows = evaluate(name, seed, f, inner, validation)
        out.append({"fold": f"r{seed}f{f}", "chosen": choose(rows, unseen), "candidates": rows})
    return out


def choose_defaults(rows_by_dataset: dict[str, list[dict]], unseen: Sequence[str] = UNSEEN) -> dict:
    """The defaults: the candidate feasible on every dataset (else on the most datasets) with
    the best criterion averaged over the datasets (rows measured on each dataset's own validation
    split of all its images)."""
    keys = [tuple(sorted(r["candidate"].items())) for r in next(iter(rows_by_dataset.values()))]
    table = []
    for key in keys:
        per = {n: next(r for r in rows if tuple(sorted(r["candidate"].items())) == key)
               for n, rows in rows_by_dataset.items()}  # fmt: skip
        table.append({
            "candidate": dict(key),
            "feasible_on": [n for n, r in per.items() if feasible(r, unseen)],
            "criterion_mean": float(np.mean([criterion(r["metrics"]) for r in per.values()])),
        })  # fmt: skip
    # feasible on every dataset first; failing that (say so), on the most datasets
    best = max(len(t["feasible_on"]) for t in table)
    ok = [t for t in table if len(t["feasible_on"]) == best]
    chosen = max(ok, key=lambda t: t["criterion_mean"])
    return {"candidates": table, "chosen": {**chosen["candidate"]},
            "feasible_everywhere": best == len(rows_by_dataset),
            "feasible_on": chosen["feasible_on"]}  # fmt: skip
