"""Uncertainty: mean ± std over folds × seeds, bootstrap intervals, a paired comparison, and
fold-level intervals (repeated K-fold with Nadeau and Bengio's corrected resampled t-test).

The fold-level interval is the one a "win" rests on: between-fold variation (which training set
the model got) is what varies most at these sizes, and the image bootstrap, which resamples test
images inside fixed training sets, does not see it. The bootstrap stays as a second, labelled
figure.

The bootstrap resamples test images with replacement inside each fold (the same resamples for
every seed and every run, so two runs on the same folds are compared pair-wise), recomputes each
fold × seed metric and averages them: the interval is for the reported mean. Image metrics are
exact on each resample. Pixel metrics are computed from per-image histograms of the anomaly-map
scores (``PIXEL_BINS`` bins at quantiles of the fold's scores), which makes a resample a matrix
product instead of a pass over millions of pixels; the point estimates stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BOOTSTRAP_METRICS = (
    "image_auroc",
    "image_ap",
    "f1_max",
    "f1_at_threshold",
    "pixel_auroc",
    "pixel_aupro",
)
PIXEL_BINS = 2048
FPR_LIMIT = 0.3


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) counts: how often each of n images is drawn in each bootstrap resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def fold_counts(sizes: Sequence[int], resamples: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """Bootstrap counts for each fold, from one seeded generator: identical for identical folds."""
    rng = np.random.default_rng(seed)
    return [resample_counts(n, resamples, rng) for n in sizes]


def _curves(pos: np.ndarray, neg: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, AP and F1-max for weighted positives/negatives at thresholds sorted high to low.

    ``pos``/``neg``: (B, M) weight of positives/negatives at each of M descending score levels.
    """
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    p, n = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tp / p, fp / n
        zero = np.zeros((pos.shape[0], 1))
        auroc = np.trapezoid(np.hstack([zero, tpr]), np.hstack([zero, fpr]), axis=1)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 1.0)
        ap = np.sum(pos / p * precision, axis=1)
        f1 = np.max(2 * tp / (tp + fp + p), axis=1)
    bad = (p[:, 0] == 0) | (n[:, 0] == 0)
    return {k: np.where(bad, np.nan, v) for k, v in (("auroc", auroc), ("ap", ap), ("f1", f1))}


def image_metrics(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float = math.nan
) -> dict[str, np.ndarray]:
    """Image AUROC, AP, F1-max and F1 at ``threshold`` for each row of ``weights`` (B, n)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s = np.asarray(scores, dtype=np.float64)[order]
    # equal scores form one threshold level
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * labels[order], starts, axis=1)
    neg = np.add.reduceat(w * ~labels[order], starts, axis=1)
    c = _curves(pos, neg)
    flagged = np.asarray(scores) >= threshold
    tp = weights @ (flagged & labels)
    f1_thr = 2 * tp / np.maximum(weights @ flagged + weights @ labels, 1e-300)
    # a resample without a defective image: recall, and so F1, undefined (as protocol.f1_at)
    f1_thr = np.where(weights @ labels > 0, f1_thr, np.nan)
    if not math.isfinite(threshold):
        f1_thr = np.full(len(w), np.nan)
    return {
        "image_auroc": c["auroc"],
        "image_ap": c["ap"],
        "f1_max": c["f1"],
        "f1_at_threshold": f1_thr,
    }


@dataclass
class PixelHistograms:
    """Per-image counts of defect and normal pixels, and per-region counts, in score bins."""

    pos: np.ndarray  # (n_images, bins), bins from the highest scores down
    neg: np.ndarray  # (n_images, bins)
    region_hist: np.ndarray  # (n_regions, bins), each row sums to 1
    region_image: np.ndarray  # (n_regions,) index of the region's image


def pixel_histograms(maps: np.ndarray, masks: np.ndarray, bins: int = PIXEL_BINS):
    """Histograms of ``maps`` (n, H, W) under ``masks`` at ``bins`` quantile bins (high to low)."""
    maps = np.asarray(maps, dtype=np.float32)
    masks = np.asarray(masks).astype(bool)
    edges = np.unique(np.quantile(maps, np.linspace(0, 1, bins + 1)[1:-1]))
    # bin index counted from the top so that cumulative sums run from high scores to low
    idx = len(edges) - np.searchsorted(edges, maps, side="right")
    nb = len(edges) + 1
    pos = np.stack([np.bincount(i[m], minlength=nb) for i, m in zip(idx, masks, strict=True)])
    neg = np.stack([np.bincount(i[~m], minlength=nb) for i, m in zip(idx, masks, strict=True)])
    regions, owner = [], []
    for k, (i, m) in enumerate(zip(idx, masks, strict=True)):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        for r in range(1, n + 1):
            h = np.bincount(i[lab == r], minlength=nb).astype(np.float64)
            regions.append(h / h.sum())
            owner.append(k)
    region_hist = np.array(regions).reshape(-1, nb)
    return PixelHistograms(pos.astype(np.float64), neg.astype(np.float64), region_hist,
                           np.array(owner, dtype=np.int64))  # fmt: skip


def pixel_metrics(h: PixelHistograms, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel AUROC and AUPRO (FPR up to 0.3) for each row of ``weights`` (B, n_images)."""
    pos, neg = weights @ h.pos, weights @ h.neg
    auroc = _curves(pos, neg)["auroc"]
    aupro = np.full(len(weights), np.nan)
    if len(h.region_image):
        rw = weights[:, h.region_image]  # (B, R) how often each region's image was drawn
        with np.errstate(invalid="ignore", divide="ignore"):
            pro = np.cumsum(rw @ h.region_hist, axis=1) / rw.sum(1, keepdims=True)
            fpr = np.cumsum(neg, axis=1) / neg.sum(1, keepdims=True)
        for b in range(len(weights)):
            x, y = np.r_[0.0, fpr[b]], np.r_[0.0, pro[b]]
            if not np.isfinite(y).all() or not np.isfinite(x).all():
                continue
            cut = np.searchsorted(x, FPR_LIMIT, side="right")
            xs = np.r_[x[:cut], FPR_LIMIT]
            ys = np.r_[y[:cut], np.interp(FPR_LIMIT, x, y)]
            aupro[b] = np.trapezoid(ys, xs) / FPR_LIMIT
    return {"pixel_auroc": auroc, "pixel_aupro": aupro}


# ------------------------------------------------------------------------ summaries
def summarise(
    point: Sequence[Mapping[str, float]], boot: Mapping[str, np.ndarray] | None = None
) -> dict[str, float | list[float]]:
    """``{metric: mean, metric_std: std, metric_ci: [lo, hi]}`` over folds × seeds.

    ``point``: the exact metrics of each fold × seed; ``boot``: each metric's bootstrap replicates
    of the mean (for the 95% percentile interval).
    """
    out: dict[str, float | list[float]] = {}
    keys = [k for k in point[0] if all(isinstance(p.get(k), int | float) for p in point)]
    for k in keys:
        values = np.array([p[k] for p in point], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[k] = float(finite.mean()) if finite.size else math.nan
        out[f"{k}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        if boot is not None and k in boot and np.isfinite(boot[k]).any():
            lo, hi = np.nanpercentile(boot[k], [2.5, 97.5])
            out[f"{k}_ci"] = [float(lo), float(hi)]
    out["n_evaluations"] = len(point)
    return out


def compare(
    a: np.ndarray,
    b: np.ndarray,
    names: tuple[str, str] = ("A", "B"),
    observed: float | None = None,
) -> dict:
    """Paired bootstrap of the difference ``a - b`` (replicates of two runs' means on the same
    resamples). A run wins only when the 95% interval of the difference excludes 0.

    ``difference`` is ``observed`` (the difference of the two runs' own means) when given: the
    figure measured, not the mean of the resamples, which drifts from it where a metric is skewed
    (AUROC near 1). Without it, the bootstrap mean is reported under ``bootstrap_mean`` only.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    diff = diff[np.isfinite(diff)]
    if not diff.size:
        return {"difference": math.nan, "ci": [math.nan, math.nan], "verdict": "undefined"}
    lo, hi = np.percentile(diff, [2.5, 97.5])
    out = {
        "difference": math.nan if observed is None else float(observed),
        "bootstrap_mean": float(diff.mean()),
        "ci": [float(lo), float(hi)],
        "verdict": _verdict(lo, hi, names),
    }
    return out


def _verdict(lo: float, hi: float, names: tuple[str, str]) -> str:
    if lo > 0:
        return f"{names[0]} wins"
    if hi < 0:
        return f"{names[1]} wins"
    return "within noise"


# ------------------------------------------------------------------------ fold level
def corrected_t_interval(
    values: Sequence[float], test_share: float, level: float = 0.95
) -> dict[str, float | list[float] | int]:
    """Mean of per-fold values (one per outer fold of repeated K-fold) with Nadeau and Bengio's
    corrected resampled t interval.

    Folds of one dataset share most of their training data, so their values are correlated and
    the plain t interval (variance s^2 / J) is too narrow. The correction (Nadeau & Bengio 2003,
    Machine Learning 52:239) widens the variance to (1/J + n_test/n_train) s^2; ``test_share`` is
    n_test / n_train (1/2 for 3 folds). J - 1 degrees of freedom.
    """
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    j = x.size
    if j < 2:
        mean = float(x.mean()) if j else math.nan
        return {"mean": mean, "ci": [math.nan, math.nan], "n_folds": j, "se": math.nan}
    mean, var = float(x.mean()), float(x.var(ddof=1))
    se = math.sqrt((1.0 / j + test_share) * var)
    half = float(stats.t.ppf(0.5 + level / 2, j - 1)) * se
    return {"mean": mean, "ci": [mean - half, mean + half], "n_folds": j, "se": se}


def corrected_paired_test(
    a: Sequence[float],
    b: Sequence[float],
    test_share: float,
    names: tuple[str, str] = ("A", "B"),
    level: float = 0.95,
) -> dict:
    """Nadeau-Bengio corrected resampled t-test of the paired per-fold differences ``a - b``.

    ``difference`` is the observed mean difference; a run wins only when the fold-level interval
    excludes 0. ``p`` is the two-sided p-value of the corrected t statistic."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    t = corrected_t_interval(d, test_share, level)
    lo, hi = t["ci"]
    out = {"difference": t["mean"], "ci": [lo, hi], "n_folds": t["n_folds"], "p": math.nan}
    if not math.isfinite(lo):
        return {**out, "verdict": "undefined"}
    if t["se"] > 0:
        out["p"] = float(2 * stats.t.sf(abs(t["mean"]) / t["se"], t["n_folds"] - 1))
    return {**out, "verdict": _verdict(lo, hi, names)}
