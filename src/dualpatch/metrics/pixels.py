"""Pixel AUROC and the per-region-overlap curve from one sort of all pixels, walked in chunks.

Every pixel of a test set (5.6 million on KolektorSDD at 320x128) ranked at once in float64, as
scikit-learn's ``roc_curve`` and a whole PRO curve do, held several 44 MiB copies at a time, and
the curves kept a point per distinct score (millions): ``evaluate``'s peak RSS
(benchmarks/evaluate_rss.py). Here the pixels are sorted once and walked ``CHUNK`` at a time:

- the PRO curve's sums are the same sequential float operations in the same order (a chunk's
  running sum starts from the previous chunk's last value): the same bits as the whole-array
  curve, and only its points up to the AUPRO's false-positive limit are kept when asked;
- the AUROC is counted in whole numbers (defect pixels above each normal pixel, ties half) and
  divided once: the exact value, which scikit-learn's trapezoid sum over the ROC curve reaches
  to within rounding (1e-12 in tests/unit/evaluation/test_pixels.py; the last digits of
  metrics.json's ``pixel_auroc`` may differ from before).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: pixels per step of the walk over the sorted scores (a few MiB of temporaries per step)
CHUNK = 1 << 18


@dataclass
class RankedPixels:
    """At each distinct score, descending, where its run of tied pixels ends (``ends``, the index
    in the descending order), the normal pixels at or above it (``normal``) and the PRO share of
    the defect pixels at or above it (``pro``, each defect pixel adding 1 / (regions * its
    region's size)). ``n_normal``: all normal pixels; ``complete``: False when the points stop
    at the first past a false-positive rate (``rank_pixels``'s ``fpr_limit``). ``auroc``: the
    pixel AUROC, from the same walk."""

    ends: np.ndarray
    normal: np.ndarray
    pro: np.ndarray
    n_normal: float
    complete: bool
    auroc: float


def rank_pixels(
    regions: np.ndarray, n_regions: int, flat: np.ndarray, fpr_limit: float | None = None
) -> RankedPixels:
    """``regions``: each pixel's region label (0: normal); ``flat``: each pixel's score.
    ``fpr_limit``: keep the points up to the first whose false-positive rate exceeds it (all that
    an AUPRO to that limit reads): a few of the millions of distinct scores."""
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    share = np.concatenate([[0.0], 1.0 / (n_regions * sizes[1:])])
    order = np.argsort(flat)[::-1]  # descending; the order the plain curve summed in
    walk = _Walk(int(sizes[0]), fpr_limit)
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
        walk.add(keep + start, counts[keep], sums[keep])
    return walk.result(flat.size)


class _Walk:
    """The points kept by ``rank_pixels`` and the pixel AUROC, chunk by chunk."""

    def __init__(self, n_normal: int, fpr_limit: float | None):
        self.n_normal, self.limit = n_normal, fpr_limit
        self.ends: list[np.ndarray] = []
        self.normal: list[np.ndarray] = []
        self.pro: list[np.ndarray] = []
        self.storing, self.twice_area = True, 0
        self.last_normal = self.last_defect = 0

    def add(self, ends: np.ndarray, normal: np.ndarray, pro: np.ndarray) -> None:
        if not ends.size:
            return
        defect = ends + 1 - normal  # defect pixels at or above each distinct score
        # AUROC = P(defect pixel > normal pixel) + P(tie) / 2, in whole numbers: each run of
        # tied scores adds its defect pixels x (2 x normal pixels below it + its normal pixels)
        new_normal = np.diff(normal, prepend=self.last_normal)
        new_defect = np.diff(defect, prepend=self.last_defect)
        below = 2 * (self.n_normal - normal) + new_normal
        self.twice_area += int(np.dot(new_defect.astype(np.int64), below.astype(np.int64)))
        self.last_normal, self.last_defect = int(normal[-1]), int(defect[-1])
        if not self.storing:
            return
        stop = len(ends)
        if self.limit is not None:  # the first point past the limit closes the AUPRO's curve
            past = np.flatnonzero(normal / self.n_normal > self.limit)
            if past.size:
                stop, self.storing = int(past[0]) + 1, False
        self.ends.append(ends[:stop])
        self.normal.append(normal[:stop])
        self.pro.append(pro[:stop])

    def result(self, n_pixels: int) -> RankedPixels:
        ends = np.concatenate(self.ends)
        n_defect = n_pixels - self.n_normal
        both = self.n_normal > 0 and n_defect > 0
        return RankedPixels(
            ends, np.concatenate(self.normal), np.concatenate(self.pro), float(self.n_normal),
            complete=bool(ends[-1] == n_pixels - 1),
            auroc=self.twice_area / (2 * n_defect * self.n_normal) if both else float("nan"),
        )  # fmt: skip
