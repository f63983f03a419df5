"""The evaluation protocol: duplicate-aware splits, cross-validation folds, and a decision
threshold fitted on training data only.

KolektorSDD is split by item (``kosNN``), and items that share an image file (kos01 = kos26,
kos27 = kos34 in the public copy) form one group, so a copy never lands on both sides of a split.
Other datasets are split by image, byte-identical images grouped. Folds are stratified on the
image label (scikit-learn's ``StratifiedGroupKFold``).
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dualpatch.data import Dataset, Sample
from dualpatch.data.duplicates import DuplicateReport, check_splits, find_duplicates, warn_within
from dualpatch.errors import ConfigError, DataError
from dualpatch.fileio import sha256_file

#: KolektorSDD items that are file-for-file copies of each other in the public copy (checked by
#: ``tests/unit/protocol/test_protocol.py`` on the real data); kos21's Part6 = Part7 stays inside
#: one item.
KOLEKTOR_DUPLICATE_ITEMS = ((1, 26), (27, 34))


@dataclass
class Split:
    """One train/test split: a fold of cross-validation, or the dataset's own split."""

    name: str
    train: Dataset
    test: Dataset
    train_items: list[int] | None = None
    duplicates: DuplicateReport = field(default_factory=DuplicateReport)


def item_number(sample: Sample) -> int | None:
    """KolektorSDD's item number of a sample (``kos27/Part0`` -> 27), None for other datasets."""
    m = re.fullmatch(r"kos(\d+)/.*", sample.id)
    return int(m.group(1)) if m else None


def split_groups(samples: Sequence[Sample]) -> np.ndarray:
    """A group label per sample: samples in one group must stay on one side of a split.

    A KolektorSDD item is one unit; otherwise each image is. Units sharing a byte-identical image
    are merged (union-find), so duplicated items and copied images travel together.
    """
    units = [
        f"item{n}" if (n := item_number(s)) is not None else f"img{i}"
        for i, s in enumerate(samples)
    ]
    parent = {u: u for u in units}

    def root(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    first_unit: dict[str, str] = {}
    for s, u in zip(samples, units, strict=True):
        h = sha256_file(s.image_path)
        if h in first_unit:
            parent[root(u)] = root(first_unit[h])
        else:
            first_unit[h] = u
    roots = [root(u) for u in units]
    index = {r: i for i, r in enumerate(dict.fromkeys(roots))}
    return np.array([index[r] for r in roots])


def group_folds(
    samples: Sequence[Sample], k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train indices, test indices) pairs: groups kept whole, labels stratified."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.array([s.label for s in samples])
    groups = split_groups(samples)
    if k < 2 or k > len(set(groups)):
        raise ConfigError(f"config: folds is {k}; expected 2 to {len(set(groups))} for this data")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in cv.split(np.zeros(len(samples)), labels, groups)]


def subset(dataset: Dataset, indices: Sequence[int]) -> Dataset:
    """A copy of ``dataset`` holding only ``samples[indices]`` (same class, same root)."""
    out = copy.copy(dataset)
    out.samples = [dataset.samples[i] for i in indices]
    return out


def pooled(dataset_name: str, root: Any, layout: Any = None) -> Dataset:
    """Every image of a dataset, both official splits together, for cross-validation."""
    from dualpatch.data import KolektorSDD, load_dataset

    if dataset_name == "kolektorsdd":
        return KolektorSDD(root, "all")
    train, test = (
        load_dataset(dataset_name, root, "train", layout),
        load_dataset(dataset_name, root, "test", layout),
    )
    both = copy.copy(train)
    both.samples = list(train) + list(test)
    return both


def make_splits(
    dataset_name: str,
    root: Any,
    folds: int | None = None,
    train_items: Sequence[int] | None = None,
    on_duplicates: str = "warn",
    fold_seed: int = 0,
    layout: Any = None,
    near_bits: int | None = None,
) -> list[Split]:
    """The splits an experiment evaluates on, duplicates checked on each.

    ``folds`` = K: K group-aware stratified folds over all images (each fold's test images are
    never in its training set). ``folds`` = None: the dataset's own split (KolektorSDD: kos01-33
    train unless ``train_items``). ``layout``: a folder dataset's ``data.FolderLayout``.
    ``near_bits``: near copies count too (``check_splits``).
    """
    from dualpatch.data import KolektorSDD, load_dataset

    if folds is None:
        # both splits are opened; a loader warning that both repeat (an orphaned mask in a shared
        # ground_truth folder) is passed on once
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if dataset_name == "kolektorsdd" and train_items:
                train = KolektorSDD(root, "train", train_items)
                test = KolektorSDD(root, "test", train_items)
            else:
                train = load_dataset(dataset_name, root, "train", layout)
                test = load_dataset(dataset_name, root, "test", layout)
        for message in dict.fromkeys(str(w.message) for w in caught):
            warnings.warn(message, stacklevel=2)
        test, report = check_splits(train, test, on_duplicates, near_bits=near_bits)
        items = sorted(train_items) if train_items else None
        return [Split("split", train, test, items, report)]
    everything = pooled(dataset_name, root, layout)
    groups = find_duplicates({"all": list(everything)})
    if groups:
        note = "; cross-validation keeps each group on one side of every split"
        warn_within(groups, str(root), note)
    splits = []
    for f, (tr, te) in enumerate(group_folds(list(everything), folds, fold_seed)):
        train, test = subset(everything, tr), subset(everything, te)
        test, report = check_splits(train, test, on_duplicates, False, near_bits)
        items = sorted({n for s in train if (n := item_number(s)) is not None}) or None
        splits.append(Split(f"fold{f}", train, test, items, report))
    return splits


def seeds_of(config: dict) -> list[int]:
    """An experiment config's model seeds: ``seeds``, else the one ``seed``."""
    return list(config["seeds"]) if config["seeds"] else [config["seed"]]


def inner_split(train: Dataset, seed: int = 0, k: int = 4) -> tuple[Dataset, Dataset]:
    """(inner training set, validation set): one of ``k`` group-aware stratified folds of ``train``,
    so validation items never share an image with the inner training items."""
    tr, te = group_folds(list(train), k, seed)[0]
    return subset(train, tr), subset(train, te)


# ------------------------------------------------------------------------ threshold
def f1_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold (score >= t is defective) that maximises F1 on these labels."""
    from dualpatch.metrics.evaluation import f1_max

    return f1_max(labels, scores)[1]


def choose_threshold(labels: np.ndarray, scores: np.ndarray, quantile: float = 0.99) -> dict:
    """A decision threshold from validation scores: F1-optimal when the validation set holds both
    classes, else the ``quantile`` of its normal scores."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    if 0 < labels.sum() < labels.size:
        t, rule = f1_optimal_threshold(labels, scores), "F1-optimal on the validation split"
    elif (labels == 0).any():
        t, rule = (
            float(np.quantile(scores[labels == 0], quantile)),
            (f"{quantile:.0%} quantile of validation normal scores"),
        )
    else:
        raise DataError("validation split holds no normal image: cannot fit a threshold")
    return {
        "threshold": float(t),
        "rule": rule,
        "validation_images": int(labels.size),
        "validation_defective": int(labels.sum()),
    }


def validation_threshold(
    fit_predict: Callable[[Dataset, Dataset], tuple[np.ndarray, np.ndarray]],
    train: Dataset,
    seed: int = 0,
) -> dict:
    """Fit on an inner training split of ``train``, score its validation split, pick a threshold.

    ``fit_predict(inner_train, validation)`` fits a model with the run's settings and returns the
    validation (labels, scores). Test data is never involved.

    The threshold is then applied, unchanged, to the model fitted on all of ``train``; it is not
    refitted there because that model has no held-out image left (every training normal is in its
    bank). Why it transfers, and its bias: both models score a patch by its distance to the same
    kind of bank, built with the same settings from the same items; the final bank holds about 4/3
    as many normal patches, so its normal scores are, if anything, a little lower and the
    threshold is expected (not measured) to err towards fewer false alarms and more misses
    (docs/protocol.md).
    """
    inner, validation = inner_split(train, seed)
    labels, scores = fit_predict(inner, validation)
    found = choose_threshold(labels, scores)
    found["rule"] += (
        "; scored by a model fitted on the inner 3/4 of the training items, applied unchanged to"
        " the model fitted on all of them"
    )
    return found


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the decision ``score >= threshold``; NaN without a defective image, where recall
    is undefined (else a model that flags a normal image scores 0 and one that does not n/a)."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp = float(np.sum(pred & labels))
    denom = float(pred.sum() + labels.sum())
    return 2 * tp / denom if labels.any() else math.nan
