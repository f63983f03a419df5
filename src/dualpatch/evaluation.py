"""Metrics: image/pixel AUROC, image AP, pixel AUPRO (to FPR 0.3) and F1-max with its threshold."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

METRIC_KEYS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_aupro", "f1_max", "f1_threshold")


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < labels.sum() < labels.size


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (score >= threshold = defect)."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(f1[best]), float(thresholds[best]) if len(thresholds) else math.nan


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, steps: int = 200) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, normalised to [0, 1].

    Each connected defect region counts equally, whatever its size; the false-positive rate is taken
    over the pixels of all normal area. Thresholds are spread evenly over the score range of normal
    pixels' upper tail so that the curve is sampled densely where FPR <= fpr_limit.
    """
    masks = masks.astype(bool)
    if not masks.any() or masks.all():
        return math.nan
    structure = np.ones((3, 3))
    region_scores = []  # each defect region's pixel scores, sorted
    for mask, amap in zip(masks, maps, strict=True):
        lab, n = ndimage.label(mask, structure=structure)
        order = np.argsort(lab, axis=None, kind="stable")
        flat_lab, flat_map = lab.reshape(-1)[order], amap.reshape(-1)[order]
        bounds = np.searchsorted(flat_lab, np.arange(1, n + 2))
        region_scores += [
            np.sort(flat_map[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    normal_scores = np.sort(maps[~masks])
    hi = float(maps.max())
    lo = min(float(np.quantile(normal_scores, 1 - fpr_limit)), hi)
    thresholds = np.linspace(hi, lo, steps)
    # Fraction of pixels >= t, read off sorted scores for all thresholds at once.
    fprs = np.concatenate(
        [[0.0], 1.0 - np.searchsorted(normal_scores, thresholds) / normal_scores.size]
    )
    overlap = np.mean(
        [1.0 - np.searchsorted(r, thresholds) / r.size for r in region_scores], axis=0
    )
    pros = np.concatenate([[0.0], overlap])
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= fpr_limit
    fx, px = list(fprs[keep]), list(pros[keep])
    # close the curve exactly at fpr_limit by linear interpolation with the next point
    after = np.nonzero(~keep)[0]
    if after.size and fx[-1] < fpr_limit:
        j = after[0]
        w = (fpr_limit - fprs[j - 1]) / (fprs[j] - fprs[j - 1])
        fx.append(fpr_limit)
        px.append(pros[j - 1] + w * (pros[j] - pros[j - 1]))
    return float(auc(fx, px) / fpr_limit)


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics as fractions; NaN where the data cannot define one (e.g. no defect at all)."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    out = {k: math.nan for k in METRIC_KEYS}
    if _both_classes(labels):
        out["image_auroc"] = float(roc_auc_score(labels, scores))
        out["image_ap"] = float(average_precision_score(labels, scores))
        out["f1_max"], out["f1_threshold"] = f1_max(labels, scores)
    if masks is not None and maps is not None:
        flat_mask = masks.reshape(-1).astype(bool)
        if _both_classes(flat_mask):
            out["pixel_auroc"] = float(roc_auc_score(flat_mask, maps.reshape(-1)))
            out["pixel_aupro"] = aupro(masks, maps)
    return out
