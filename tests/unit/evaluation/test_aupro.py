"""Exact AUPRO: hand-computed curves, invariance, and an independent brute-force reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.exceptions import UndefinedMetricWarning

from dualpatch.metrics.evaluation import aupro, aupro_undefined_reason, pro_curve


def reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Written from the definition, independently of ``metrics.evaluation``: label each image's
    regions with scipy (8-connected), sweep every distinct score as a threshold with explicit
    per-region counts, then integrate the piecewise-linear curve segment by segment up to the limit.
    """
    regions = []
    normal = []
    for mask, amap in zip(masks.astype(bool), maps, strict=True):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [amap[labels == r] for r in range(1, n + 1)]
        normal.append(amap[~mask])
    normal = np.concatenate(normal)
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        fpr = float(np.mean(normal >= t))
        pro = float(np.mean([np.mean(r >= t) for r in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def blobs(n: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks with a few irregular regions (some touching only diagonally) and noisy maps that
    are higher inside the regions: a realistic, non-trivial PRO curve."""
    rng = np.random.default_rng(seed)
    masks = ndimage.gaussian_filter(rng.random((n, h, w)), (0, 2, 2)) > 0.56
    masks[0] = False  # one good image
    maps = ndimage.gaussian_filter(rng.random((n, h, w)), (0, 1, 1)) + 0.15 * masks
    return masks, maps


# -- hand-computed cases -------------------------------------------------------------------------


def test_one_region_by_hand():
    """Defect pixels score 0.9 and 0.5; ten normal pixels 0.8, 0.4, 0.3, then lower.

    Curve: (0, 0) -> (0, 0.5) -> (0.1, 0.5) -> (0.1, 1) -> (0.3, 1): area 0.05 + 0.2 = 0.25,
    divided by 0.3 = 5/6.
    """
    normal = [0.8, 0.4, 0.3, 0.2, 0.19, 0.18, 0.17, 0.16, 0.15, 0.14]
    maps = np.array([[[0.9, 0.5, *normal]]])
    masks = np.zeros_like(maps, dtype=bool)
    masks[0, 0, :2] = True
    assert aupro(masks, maps) == pytest.approx(5 / 6, abs=1e-12)


def two_region_case():
    """Region A: one pixel (0.9). Region B: three pixels (0.7, 0.6, 0.2) that touch only
    diagonally between (0, 3) and (1, 4). Ten normal pixels: 0.8, 0.65, 0.5, then below 0.2."""
    masks = np.zeros((1, 2, 7), dtype=bool)
    masks[0, 0, 0] = True  # A
    masks[0, 0, 3] = masks[0, 1, 4] = masks[0, 1, 5] = True  # B
    maps = np.zeros((1, 2, 7))
    maps[0, 0, 0] = 0.9
    maps[0, 0, 3], maps[0, 1, 4], maps[0, 1, 5] = 0.7, 0.6, 0.2
    normal = [0.8, 0.65, 0.5, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04]
    maps[~masks] = normal
    return masks, maps


def test_two_regions_by_hand():
    """8-connected, B is one region. PRO steps: 0.9 -> 1/2; 0.7 -> 1/2 + 1/6; 0.6 -> 1/2 + 2/6.
    FPR steps of 0.1 at 0.8, 0.65 and 0.5. Area to 0.3: 0.1 * (1/2 + 2/3 + 5/6) = 0.2; / 0.3 = 2/3.
    (With 4-connectivity B would split in two and the answer would be 0.1 * (1/3 + 2/3 + 5/6) / 0.3
    = 11/18.)"""
    masks, maps = two_region_case()
    assert aupro(masks, maps) == pytest.approx(2 / 3, abs=1e-12)
    fpr, pro = pro_curve(masks, maps)
    assert fpr[:7].tolist() == pytest.approx([0, 0, 0.1, 0.1, 0.2, 0.2, 0.3])
    assert pro[:7].tolist() == pytest.approx([0, 0.5, 0.5, 2 / 3, 2 / 3, 5 / 6, 5 / 6])
    assert (fpr[-1], pro[-1]) == (1.0, 1.0)


def test_regions_never_join_across_images():
    """A one-pixel region in image 0 (found) and a three-pixel region at the same place in image 1
    (missed) are two regions: PRO is 1/2 until the last threshold, then the curve runs straight to
    (1, 1), so PRO(0.3) = 0.65 and the area is 0.3 * (0.5 + 0.65) / 2; / 0.3 = 0.575. Joined into
    one region of four pixels they would give PRO 1/4 and 0.3625 instead."""
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[:, 1, 1] = True
    masks[1, 1, 2] = masks[1, 2, 2] = True
    maps = np.zeros((2, 3, 3))
    maps[0, 1, 1] = 1.0  # above every normal pixel
    assert aupro(masks, maps) == pytest.approx(0.575, abs=1e-12)


def test_constant_map_is_the_diagonal():
    """One tie for all pixels: the curve is the straight line (0, 0) -> (1, 1); area 0.045 / 0.3."""
    masks, _ = two_region_case()
    assert aupro(masks, np.full(masks.shape, 3.0)) == pytest.approx(0.15, abs=1e-12)


def test_ties_between_a_region_and_normal_pixels():
    """A tie moves FPR and PRO together: the curve takes the diagonal of that step."""
    masks = np.zeros((1, 1, 11), dtype=bool)
    masks[0, 0, 0] = True
    maps = np.array([[[1.0] + [1.0] + [0.0] * 9]])  # defect tied with one of ten normal pixels
    # (0, 0) -> (0.1, 1) -> (0.3, 1): 0.05 + 0.2 = 0.25; / 0.3 = 5/6
    assert aupro(masks, maps) == pytest.approx(5 / 6, abs=1e-12)


# -- properties ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: np.exp(5 * x),
        lambda x: x**3,
        lambda x: 1 / (3.0 - x),
        lambda x: np.log(x + 1e-3),
    ],
    ids=["exp", "cube", "reciprocal", "log"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_invariant_under_strictly_increasing_transforms(transform, seed):
    masks, maps = blobs(4, 32, 24, seed)
    base = aupro(masks, maps)
    assert 0.2 < base < 0.99  # a curve with something to lose
    assert aupro(masks, transform(maps)) == pytest.approx(base, abs=1e-12)


def test_one_huge_pixel_keeps_a_perfect_map_perfect():
    """Every defect pixel above every normal pixel is AUPRO 1, with or without one huge score."""
    masks, maps = blobs(4, 32, 24, 2)
    perfect = np.where(masks, 1.0 + maps, maps)  # maps lie in [0, 1.15]: separated by > 0.85
    # 1.0 up to the rounding of summing thousands of 1 / (regions * size) steps
    assert aupro(masks, perfect) == pytest.approx(1.0, abs=1e-12)
    region_pixel = tuple(np.argwhere(masks)[0])
    perfect[region_pixel] = 1e9
    assert aupro(masks, perfect) == pytest.approx(1.0, abs=1e-12)


def test_one_huge_normal_pixel_moves_aupro_by_at_most_one_pixel():
    masks, maps = blobs(4, 32, 24, 3)
    base = aupro(masks, maps)
    spiked = maps.copy()
    spiked[tuple(np.argwhere(~masks)[5])] = 1e9
    n_normal = (~masks).sum()
    assert abs(aupro(masks, spiked) - base) <= 1 / (0.3 * n_normal) + 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_agrees_with_an_independent_brute_force(seed):
    masks, maps = blobs(5, 24, 16, seed)
    maps = np.round(maps, 2)  # ties, and a sweep of about a hundred thresholds
    # the two agree to about 1e-15 on these cases (measured: at most 1.3e-15 over seeds and
    # limits); 1e-12 leaves room for summation order only, not for a wrong curve or interpolation
    for limit in (0.3, 0.05, 1.0):
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(
            reference_aupro(masks, maps, limit), abs=1e-12
        )


def test_two_regions_agree_with_brute_force():
    masks, maps = two_region_case()
    assert aupro(masks, maps) == pytest.approx(reference_aupro(masks, maps), abs=1e-12)


def test_single_image_without_batch_axis():
    masks, maps = two_region_case()
    assert aupro(masks[0], maps[0]) == pytest.approx(2 / 3, abs=1e-12)


# -- edge cases ----------------------------------------------------------------------------------


def test_no_defect_pixels_is_nan_with_a_reason():
    masks = np.zeros((2, 4, 4), dtype=bool)
    assert "no defect pixels" in aupro_undefined_reason(masks)
    with pytest.warns(UndefinedMetricWarning, match="no defect pixels"):
        assert math.isnan(aupro(masks, np.random.default_rng(0).random((2, 4, 4))))


def test_all_defect_pixels_is_nan_with_a_reason():
    masks = np.ones((2, 4, 4), dtype=bool)
    assert "no normal pixels" in aupro_undefined_reason(masks)
    with pytest.warns(UndefinedMetricWarning, match="no normal pixels"):
        assert math.isnan(aupro(masks, np.random.default_rng(0).random((2, 4, 4))))


def test_defined_case_has_no_reason_and_no_warning():
    masks, maps = two_region_case()
    assert aupro_undefined_reason(masks) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aupro(masks, maps)


def test_bad_maps_are_refused():
    masks, maps = two_region_case()
    maps[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        aupro(masks, maps)
    with pytest.raises(ValueError, match="shape"):
        aupro(masks, maps[:, :1])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(masks, maps, fpr_limit=0)
