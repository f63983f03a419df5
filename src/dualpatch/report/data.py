"""What the report shows, as data: ``RunResult`` (one evaluated model on one test set), metric
names, the gallery's order and the per-run scores CSV."""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.fileio import write_text

#: A per-image array source: an (N, ...) array, a list of arrays, or ``i -> array`` (lazy loading).
ArraySource = np.ndarray | Sequence[np.ndarray] | Callable[[int], np.ndarray]

#: Metric key -> (column header, direction: +1 higher is better, -1 lower is better, 0 neither).
METRICS: dict[str, tuple[str, int]] = {
    "image_auroc": ("Image AUROC", 1),
    "pixel_auroc": ("Pixel AUROC", 1),
    "image_ap": ("Image AP", 1),
    "pixel_aupro": ("Pixel AUPRO", 1),
    "f1_max": ("Oracle F1 max", 1),
    "f1_at_threshold": ("F1 at threshold", 1),
    "f1_threshold": ("Oracle F1 threshold", 0),
    "threshold": ("Threshold", 0),
    "fit_seconds": ("Fit s", -1),
    "images_per_second": ("Images/s", 1),
    "peak_rss_mb": ("Peak RSS MB", -1),
}

KINDS = ("FP", "FN", "TP", "TN")
KIND_TITLES = {
    "FP": "False positives (normal, score ≥ threshold), highest score first",
    "FN": "False negatives (defective, score < threshold), lowest score first",
    "TP": "True positives, lowest score first",
    "TN": "True negatives, highest score first",
}


@dataclass
class RunResult:
    """One evaluated model on one test set.

    ``scores[i]`` is the image score of ``ids[i]``; an image counts as defective when
    ``score >= threshold``. ``maps``, ``images`` and ``masks`` are optional per-image sources
    (anomaly map HxW float at any resolution, image HxWx3 uint8, ground truth HxW bool); callables
    are called once per image, so the runner can load lazily. ``map_range`` fixes the colour scale
    (default: min and max over all maps of the run).
    """

    name: str
    metrics: Mapping[str, float | None]
    ids: Sequence[str]
    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    maps: ArraySource | None = None
    images: ArraySource | None = None
    masks: ArraySource | None = None
    map_range: tuple[float, float] | None = None
    #: what the threshold is, shown beside it (e.g. where it was fitted)
    threshold_label: str = "threshold"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.ids)
        if len(self.labels) != n or len(self.scores) != n:
            raise ValueError(
                f"run {self.name!r}: {n} ids, {len(self.labels)} labels, {len(self.scores)} scores"
            )
        if not np.isfinite(self.scores).all():
            raise ValueError(f"run {self.name!r}: scores contain NaN or infinite values")
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError(f"run {self.name!r}: labels must be 0 (normal) or 1 (defective)")

    def map(self, i: int) -> np.ndarray | None:
        return None if self.maps is None else np.asarray(_get(self.maps, i), dtype=np.float32)

    def image(self, i: int) -> np.ndarray | None:
        return None if self.images is None else np.asarray(_get(self.images, i))

    def mask(self, i: int) -> np.ndarray | None:
        return None if self.masks is None else np.asarray(_get(self.masks, i)).astype(bool)


def _get(source: ArraySource, i: int) -> np.ndarray:
    return source(i) if callable(source) else source[i]


def slug(text: str) -> str:
    """A file-name-safe form of an id or run name (``test/10000`` -> ``test_10000``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def metric_value(value: Any) -> float | None:
    """A metric as a finite float, or None when missing or NaN (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metrics_dict(runs: Sequence[RunResult]) -> dict[str, dict[str, float | None]]:
    """``{run: {metric: value}}`` with NaN as None: what metrics.json holds and the table shows.

    Spreads (``<metric>_std``) and intervals (``<metric>_ci``) are shown inside their metric's
    cell, and text entries (rules, comparisons) are left out of the table.
    """
    return {
        r.name: {
            k: metric_value(v)
            for k, v in r.metrics.items()
            if isinstance(v, int | float) and not k.endswith("_std") and k != "n_evaluations"
        }
        for r in runs
    }


# --------------------------------------------------------------------------- scores


def write_scores_csv(run: RunResult, path: str | os.PathLike[str]) -> Path:
    """``id,label,score`` per image, in the run's order, scores at full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "label", "score"])
    for i, label, score in zip(run.ids, run.labels, run.scores, strict=True):
        writer.writerow([i, int(label), repr(float(score))])
    write_text(path, buf.getvalue())
    return Path(path)


def gallery_order(run: RunResult) -> list[tuple[int, str]]:
    """``(index, kind)`` for every image, hardest first: FP, FN, TP, TN.

    Worst false positives (highest-scoring normals) and worst false negatives (lowest-scoring
    defects) lead; correct images follow nearest-the-threshold first. Ties keep the input order.
    """
    pred = run.scores >= run.threshold
    order: list[tuple[int, str]] = []
    for kind, label, predicted, sign in (
        ("FP", 0, True, -1),
        ("FN", 1, False, 1),
        ("TP", 1, True, 1),
        ("TN", 0, False, -1),
    ):
        idx = np.flatnonzero((run.labels == label) & (pred == predicted))
        idx = idx[np.argsort(sign * run.scores[idx], kind="stable")]
        order += [(int(i), kind) for i in idx]
    return order
