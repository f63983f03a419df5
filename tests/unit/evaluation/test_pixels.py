"""metrics.pixels against the whole-array computations it replaced: the PRO curve and AUPRO are
the same bits as one cumsum over all pixels (the code before the chunked walk, kept here as the
reference); the AUROC, counted exactly, is scikit-learn's roc_auc_score to 1e-12. Chunks are
small enough that runs of tied scores straddle their boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dualpatch.metrics import pixels
from dualpatch.metrics.evaluation import _area, _regions_and_scores, pixel_metrics, pro_curve


def whole_array_pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``pro_curve`` as it was: every pixel's share gathered and summed in one cumsum."""
    regions, n_regions, flat = _regions_and_scores(masks, maps)
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    pro_share = np.concatenate([[0.0], 1.0 / (n_regions * sizes[1:])])[regions]
    order = np.argsort(flat)[::-1]
    ranked = flat[order]
    fpr = np.cumsum(regions[order] == 0) / sizes[0]
    pro = np.cumsum(pro_share[order])
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    fpr = np.concatenate([[0.0], fpr[last]])
    pro = np.concatenate([[0.0], pro[last]])
    fpr[-1], pro[-1] = 1.0, 1.0
    return np.minimum(fpr, 1.0), np.minimum(pro, 1.0)


def random_case(seed: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(masks, maps) of 6 images 24x20 with blob-shaped defects; ``levels``: scores rounded to
    that many distinct values (many ties), None: continuous float32 scores."""
    rng = np.random.default_rng(seed)
    maps = rng.random((6, 24, 20)).astype(np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    for i in range(4):
        y, x = rng.integers(0, 20, 2)
        masks[i, y : y + rng.integers(1, 5), x : x + rng.integers(1, 6)] = True
        maps[i][masks[i]] += np.float32(0.4)
    if levels is not None:
        maps = (np.round(maps * levels) / levels).astype(np.float32)
    return masks, maps


CASES = [(seed, levels) for seed in range(4) for levels in (None, 7, 50)]


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
@pytest.mark.parametrize("seed,levels", CASES)
def test_chunked_walk_gives_the_same_bits(monkeypatch, chunk, seed, levels):
    monkeypatch.setattr(pixels, "CHUNK", chunk)
    masks, maps = random_case(seed, levels)
    fpr, pro = pro_curve(masks, maps)
    ref_fpr, ref_pro = whole_array_pro_curve(masks, maps)
    assert np.array_equal(fpr, ref_fpr) and np.array_equal(pro, ref_pro)
    ranked = pixels.rank_pixels(*_regions_and_scores(masks, maps))
    assert ranked.auroc == pytest.approx(sklearn_auroc(masks, maps), rel=1e-12, abs=1e-12)
    # only the points an AUPRO to 0.3 reads: the curve's head, the same bits, one point past 0.3
    head = pixels.rank_pixels(*_regions_and_scores(masks, maps), fpr_limit=0.3)
    n = len(head.ends)
    assert not head.complete and head.normal[-1] / head.n_normal > 0.3
    assert head.normal[-2] / head.n_normal <= 0.3 and n < len(ranked.ends)
    assert np.array_equal(head.pro, ranked.pro[:n]) and head.auroc == ranked.auroc


@pytest.mark.parametrize("seed,levels", CASES)
def test_pixel_metrics_match_sklearn_and_the_whole_array_curve(seed, levels):
    masks, maps = random_case(seed, levels)
    found = pixel_metrics(masks, maps)
    assert found["pixel_auroc"] == pytest.approx(sklearn_auroc(masks, maps), rel=1e-12, abs=1e-12)
    assert found["pixel_aupro"] == _area(*whole_array_pro_curve(masks, maps), 0.3)
    # native resolution: lists of images of different sizes give the same as their arrays
    listed = pixel_metrics([m[: 20 - i] for i, m in enumerate(masks)],
                           [a[: 20 - i] for i, a in enumerate(maps)])  # fmt: skip
    flat_mask = np.concatenate([m[: 20 - i].reshape(-1) for i, m in enumerate(masks)])
    flat_map = np.concatenate([a[: 20 - i].reshape(-1) for i, a in enumerate(maps)])
    assert listed["pixel_auroc"] == pytest.approx(roc_auc_score(flat_mask, flat_map), rel=1e-12)


def sklearn_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    return float(roc_auc_score(masks.reshape(-1), maps.reshape(-1)))


@pytest.mark.parametrize(
    "maps,auroc",
    [([1.0, 0.0, 0.0, 0.0], 1.0), ([0.0, 1.0, 1.0, 0.5], 0.0), ([0.5, 0.5, 0.5, 0.5], 0.5),
     ([0.5, 0.5, 0.0, 1.0], 0.5)],
)  # fmt: skip
def test_auroc_by_hand(maps, auroc):
    """One defect pixel (the first) against three normal ones: above all, below all, tied with
    all (half), tied with one and between the others (1/2 x 1/3 + 1/3 = 1/2)."""
    masks = np.array([[[True, False], [False, False]]])
    maps = np.array(maps, dtype=np.float32).reshape(1, 2, 2)
    assert pixels.rank_pixels(*_regions_and_scores(masks, maps)).auroc == auroc
    assert sklearn_auroc(masks, maps) == auroc
