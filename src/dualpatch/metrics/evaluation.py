"""Metrics: image/pixel AUROC, image AP, pixel AUPRO (to FPR 0.3) and F1-max with its threshold."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

# scikit-learn is imported where a metric is computed, not here: importing it maps about 120 MiB
# (measured), and evaluate would hold it through scoring, its peak RSS (benchmarks/evaluate_rss.py).
from dualpatch.metrics.pixels import RankedPixels, rank_pixels

METRIC_KEYS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_aupro", "f1_max", "f1_threshold")


def _both_classes(labels: np.ndarray) -> bool:
    return 0 < labels.sum() < labels.size


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (score >= threshold = defect)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(f1[best]), float(thresholds[best]) if len(thresholds) else math.nan


#: 8-connectivity, as in the MVTec AD reference evaluation: diagonal neighbours join one region.
REGION_STRUCTURE = np.ones((3, 3), dtype=bool)


def aupro_undefined_reason(masks: np.ndarray) -> str | None:
    """Why AUPRO cannot be computed for these masks, or None when it can."""
    masks = np.asarray(masks).astype(bool)
    if not masks.any():
        return "no defect pixels in the ground-truth masks"
    if masks.all():
        return "every pixel is a defect pixel: no normal pixels to take a false-positive rate over"
    return None


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve at every distinct score: (false-positive rates, PRO), ascending.

    Regions are the 8-connected components of each image's mask. At threshold t (score >= t is a
    defect), the FPR is the fraction of all normal pixels at or above t and the PRO is the mean,
    over regions, of the fraction of each region's pixels at or above t. Both are sums over pixels
    taken in descending score order: a normal pixel adds 1 / (normal pixels) to the FPR and a
    defect pixel adds 1 / (regions * its region's size) to the PRO, so one sort and two cumulative
    sums give the curve at every threshold. Tied scores form one step (the last index of the tie).
    The curve starts at (0, 0) and ends at (1, 1).
    """
    return _pro_curve(rank_pixels(*_regions_and_scores(masks, maps)))


def _pro_curve(ranked: RankedPixels) -> tuple[np.ndarray, np.ndarray]:
    fpr = np.concatenate([[0.0], ranked.normal / ranked.n_normal])
    pro = np.concatenate([[0.0], ranked.pro])
    if ranked.complete:  # the sums may land a few ulps off 1; the last point is (1, 1) exactly
        fpr[-1], pro[-1] = 1.0, 1.0
    return np.minimum(fpr, 1.0), np.minimum(pro, 1.0)


def _regions_and_scores(masks, maps) -> tuple[np.ndarray, int, np.ndarray]:
    """(region label of every pixel, 0 = normal; the number of regions; every pixel's score), all
    images flattened one after another. ``masks`` and ``maps``: (N, H, W) arrays, one (H, W)
    image, or lists of 2-D arrays whose sizes differ between images (native resolution)."""
    if isinstance(masks, list | tuple):
        pairs = [
            (np.asarray(m).astype(bool), np.asarray(a)) for m, a in zip(masks, maps, strict=True)
        ]
    else:
        masks, maps = np.asarray(masks).astype(bool), np.asarray(maps)
        if masks.shape != maps.shape:
            raise ValueError(f"masks {masks.shape} and maps {maps.shape} differ in shape")
        pairs = [(masks, maps)] if maps.ndim == 2 else list(zip(masks, maps, strict=True))
    for m, a in pairs:
        if m.shape != a.shape:
            raise ValueError(f"a mask {m.shape} and its map {a.shape} differ in shape")
    reason = aupro_undefined_reason(np.concatenate([m.reshape(-1) for m, _ in pairs]))
    if reason:
        raise ValueError(reason)
    # written into one array, and the maps' own array read in place where it is one: a test set's
    # pixels are millions, and copies of them set evaluate's peak RSS
    total = sum(m.size for m, _ in pairs)
    labels = np.empty(total, dtype=np.int32 if total < 2**31 else np.int64)
    start, n_regions = 0, 0
    for m, _ in pairs:  # 8-connected within an image; no region joins two images
        lab, n = ndimage.label(m, structure=REGION_STRUCTURE)
        part = labels[start : start + m.size]
        part[:] = lab.reshape(-1)
        part[part > 0] += n_regions
        start, n_regions = start + m.size, n_regions + n
    whole = isinstance(maps, np.ndarray) and len(pairs) > 0 and maps.size == total
    flat = maps.reshape(-1) if whole else np.concatenate([a.reshape(-1) for _, a in pairs])
    if not np.isfinite(flat).all():
        raise ValueError("anomaly maps hold NaN or infinite values")
    return labels, n_regions, flat


#: the false-positive rate up to which ``pixel_aupro`` integrates
AUPRO_FPR_LIMIT = 0.3


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by ``fpr_limit``.

    Exact: the curve is taken at every distinct score (``pro_curve``), integrated with the
    trapezoid rule and closed at ``fpr_limit`` by linear interpolation, as the MVTec AD reference
    does. It depends only on the order of the scores, so any strictly increasing transform of the
    maps leaves it unchanged. NaN when the masks hold no defect or no normal pixel
    (``aupro_undefined_reason`` says which; a ``UndefinedMetricWarning`` carries the same reason).
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    whole = (
        np.concatenate([np.asarray(m).reshape(-1) for m in masks])
        if isinstance(masks, list | tuple)
        else masks
    )
    reason = aupro_undefined_reason(whole)
    if reason:
        from sklearn.exceptions import UndefinedMetricWarning

        warnings.warn(f"AUPRO undefined: {reason}", UndefinedMetricWarning, stacklevel=2)
        return math.nan
    return _area(*pro_curve(masks, maps), fpr_limit)


def _area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """The PRO curve's area up to ``fpr_limit``, divided by it (``aupro``)."""
    end = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit
    x, y = fpr[:end], pro[:end]
    if x[-1] < fpr_limit:  # close the curve at the limit between the last point and the next
        w = (fpr_limit - fpr[end - 1]) / (fpr[end] - fpr[end - 1])
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[end - 1] + w * (pro[end] - pro[end - 1]))
    return float(np.trapezoid(y, x) / fpr_limit)


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    known: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics as fractions; NaN where the data cannot define one (e.g. no defect at all).

    ``known``: per image, whether its mask is known (``Sample.mask_known``); the pixel metrics
    leave out defective images without a mask, whose defect pixels nobody marked."""
    if known is not None and masks is not None and maps is not None:
        keep = np.asarray(known, dtype=bool)
        if not keep.all():  # a copy of every map only when some are left out
            masks, maps = np.asarray(masks)[keep], np.asarray(maps)[keep]
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    out = {k: math.nan for k in METRIC_KEYS}
    if masks is not None and maps is not None:  # first: freed before scikit-learn is imported
        out.update(pixel_metrics(masks, maps))
    if _both_classes(labels):
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["image_auroc"] = float(roc_auc_score(labels, scores))
        out["image_ap"] = float(average_precision_score(labels, scores))
        out["f1_max"], out["f1_threshold"] = f1_max(labels, scores)
    return out


def pixel_metrics(masks, maps) -> dict[str, float]:
    """Pixel AUROC and AUPRO; ``masks`` and ``maps`` as ``(N, H, W)`` arrays or as lists of 2-D
    arrays whose sizes differ between images (each image at its own resolution)."""
    out = {"pixel_auroc": math.nan, "pixel_aupro": math.nan}
    if isinstance(masks, list | tuple):
        whole = np.concatenate([np.asarray(m).reshape(-1) for m in masks]).astype(bool)
    else:
        whole = np.asarray(masks).reshape(-1).astype(bool)
    if _both_classes(whole):
        del whole
        # one sort of all pixels gives both (metrics.pixels), without the float64 copies of
        # every pixel that scikit-learn's roc_auc_score and a whole PRO curve held
        ranked = rank_pixels(*_regions_and_scores(masks, maps), fpr_limit=AUPRO_FPR_LIMIT)
        out["pixel_auroc"] = ranked.auroc
        out["pixel_aupro"] = _area(*_pro_curve(ranked), AUPRO_FPR_LIMIT)
    return out


def native_pixel_metrics(samples, maps: np.ndarray) -> dict[str, float]:
    """``pixel_auroc_native`` and ``pixel_aupro_native``: each anomaly map upsampled (bilinear)
    to its image's own size and compared with the mask as annotated, instead of the mask
    downscaled to the model's size (where a thin crack breaks into fragments and a small defect
    can vanish). ``samples`` are the scored images, in the order of ``maps`` (N, h, w)."""
    from dualpatch.data.images import image_shape, resize

    masks, upsampled = [], []
    for s, amap in zip(samples, maps, strict=True):
        shape = image_shape(s.image_path)
        masks.append(s.mask())
        upsampled.append(resize(np.asarray(amap, dtype=np.float32), shape, "bilinear"))
    found = pixel_metrics(masks, upsampled)
    return {f"{k}_native": v for k, v in found.items()}
