"""Pixel AUROC and the per-region-overlap curve from one sort of all pixels, walked in chunks.

Every pixel of a test set (5.6 million on KolektorSDD at 320x128) ranked at once in float64, as
scikit-learn's ``roc_curve`` and a plain PRO curve do, held several 44 MiB copies at a time:
``evaluate``'s peak RSS (benchmarks/evaluate_rss.py). Here the pixels are sorted once and walked
``CHUNK`` at a time; only the counts at each distinct score are kept. The sums are the same
sequential float operations in the same order (a chunk's running sum starts from the previous
chunk's last value), so the figures are the same bits as before (tests/unit/evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: pixels per step of the walk over the sorted scores (a few MiB of temporaries per step)
CHUNK = 1 << 20


@dataclass
class RankedPixels:
    """At each distinct score, descending, where its run of tied pixels ends (``ends``, the index
    in the descending order), the normal pixels at or above it (``normal``) and the PRO share of
    the defect pixels at or above it (``pro``, each defect pixel adding 1 / (regions * its
    region's size)). ``n_normal``: all normal pixels."""

    ends: np.ndarray
    normal: np.ndarray
    pro: np.ndarray
    n_normal: float


def rank_pixels(regions: np.ndarray, n_regions: int, flat: np.ndarray) -> RankedPixels:
    """``regions``: each pixel's region label (0: normal); ``flat``: each pixel's score."""
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    share = np.concatenate([[0.0], 1.0 / (n_regions * sizes[1:])])
    order = np.argsort(flat)[::-1]  # descending; the order the plain curve summed in
    ends, normal, pro = [], [], []
    normal_sum, pro_sum = 0, 0.0
    for start in range(0, flat.size, CHUNK):
        idx = order[start : start + CHUNK]
        scores = flat[idx]
        following = flat[order[start + CHUNK]] if start + CHUNK < flat.size else None
        last = np.append(scores[1:] != scores[:-1], following is None or scores[-1] != following)
        region = regions[idx]
        counts = np.cumsum(region == 0) + normal_sum
        shares = share[region]
        shares[0] += pro_sum  # the running sum carries on: s[i] = s[i - 1] + x[i] as before
        sums = np.cumsum(shares)
        normal_sum, pro_sum = int(counts[-1]), float(sums[-1])
        keep = np.flatnonzero(last)
        ends.append(keep + start)
        normal.append(counts[keep])
        pro.append(sums[keep])
    return RankedPixels(np.concatenate(ends), np.concatenate(normal), np.concatenate(pro), sizes[0])


def pixel_roc_auc(ranked: RankedPixels) -> float:
    """Pixel AUROC as scikit-learn's ``roc_auc_score`` computes it: its ROC curve at every
    distinct score (``roc_curve``, collinear points dropped) integrated by ``auc``."""
    from scipy.integrate import trapezoid

    fps = ranked.normal.astype(np.float64)
    tps = (ranked.ends + 1) - ranked.normal  # defect pixels at or above each score
    tps = tps.astype(np.float64)
    if fps.shape[0] > 2:  # drop_intermediate: a point with no corner in either count
        corner = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.flatnonzero(np.concatenate([[True], corner, [True]]))
        fps, tps = fps[keep], tps[keep]
    fps, tps = np.concatenate([[0.0], fps]), np.concatenate([[0.0], tps])
    return float(trapezoid(tps / tps[-1], fps / fps[-1]))
