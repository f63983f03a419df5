"""Metrics against scikit-learn and against closed-form expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score, roc_auc_score

from dualpatch.metrics.evaluation import METRIC_KEYS, aupro, evaluate, f1_max


def toy(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(labels * 1.0, 1.0)
    return labels, scores


def f1_max_brute_force(labels, scores) -> float:
    return max(f1_score(labels, scores >= t) for t in np.unique(scores))


def auroc_by_pairs(labels, scores) -> float:
    """Share of (defective, good) pairs ranked right, ties counting half: the AUROC's definition."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def ap_by_thresholds(labels, scores) -> float:
    """Sum over distinct thresholds of (recall gained) x (precision at or above the threshold)."""
    total, recall_before, n_pos = 0.0, 0.0, labels.sum()
    for t in np.unique(scores)[::-1]:
        chosen = scores >= t
        recall = labels[chosen].sum() / n_pos
        total += (recall - recall_before) * labels[chosen].mean()
        recall_before = recall
    return total


def test_image_metrics_by_hand():
    """Good 0.1, 0.4, 0.2; defective 0.35, 0.8, 0.7.

    AUROC: 8 of 9 (defective, good) pairs in order (0.35 < 0.4 is the one miss).
    AP: ranked 0.8 D, 0.7 D, 0.4 G, 0.35 D: recall steps of 1/3 at precision 1, 1, 3/4 -> 11/12.
    F1-max: at threshold 0.35, precision 3/4 and recall 1 -> 6/7."""
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7])
    m = evaluate(labels, scores)
    assert m["image_auroc"] == pytest.approx(8 / 9, abs=1e-12)
    assert m["image_ap"] == pytest.approx(11 / 12, abs=1e-12)
    assert m["f1_max"] == pytest.approx(6 / 7, abs=1e-12)
    assert m["f1_threshold"] == 0.35
    # no masks given: pixel metrics undefined
    assert math.isnan(m["pixel_auroc"]) and math.isnan(m["pixel_aupro"])
    assert set(m) == set(METRIC_KEYS)


def test_image_metrics_with_ties_by_hand():
    """Good 0.5, 0.2; defective 0.5, 0.9. AUROC (2 + 1 + 0.5) / 4; AP 1/2 * 1 + 1/2 * 2/3;
    F1-max 0.8 at threshold 0.5 (precision 2/3, recall 1)."""
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.5, 0.5, 0.2, 0.9])
    m = evaluate(labels, scores)
    assert m["image_auroc"] == pytest.approx(0.875, abs=1e-12)
    assert m["image_ap"] == pytest.approx(5 / 6, abs=1e-12)
    assert m["f1_max"] == pytest.approx(0.8, abs=1e-12)
    assert m["f1_threshold"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_metrics_match_their_definitions(seed):
    labels, scores = toy(seed)
    scores = np.round(scores, 1)  # ties
    m = evaluate(labels, scores)
    assert m["image_auroc"] == pytest.approx(auroc_by_pairs(labels, scores), abs=1e-12)
    assert m["image_ap"] == pytest.approx(ap_by_thresholds(labels, scores), abs=1e-12)
    assert m["f1_max"] == pytest.approx(f1_max_brute_force(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_f1_threshold_reproduces_the_f1(seed):
    labels, scores = toy(seed)
    best, threshold = f1_max(labels, scores)
    assert f1_score(labels, scores >= threshold) == pytest.approx(best)
    m = evaluate(labels, scores)
    assert f1_score(labels, scores >= m["f1_threshold"]) == pytest.approx(m["f1_max"])


def test_perfect_image_scores():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    m = evaluate(labels, scores)
    assert m["image_auroc"] == 1.0 and m["image_ap"] == 1.0 and m["f1_max"] == 1.0
    assert 0.3 < m["f1_threshold"] <= 0.8


def masks_with_regions(n=6, h=48, w=32, seed=0, sides=(2, 10)):
    """Images with 0-2 rectangular defect regions of varied size each (the first image is good)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(1, n):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, h - sides[1]), rng.integers(0, w - sides[1])
            masks[i, y : y + rng.integers(*sides), x : x + rng.integers(*sides)] = True
    return masks


def test_perfect_maps():
    masks = masks_with_regions()
    rng = np.random.default_rng(1)
    maps = np.where(masks, 1.0 + rng.random(masks.shape), rng.random(masks.shape) * 0.5)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.reshape(len(maps), -1).max(1)
    m = evaluate(labels, scores, masks, maps)
    assert m["pixel_auroc"] == 1.0
    assert m["pixel_aupro"] == pytest.approx(1.0, abs=1e-12)
    assert m["image_auroc"] == 1.0
    # a binary map (the mask itself) is just as perfect
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_maps_aupro(seed):
    """Random scores: PRO(FPR) ~ FPR, so the area to FPR 0.3, divided by 0.3, is ~0.15."""
    rng = np.random.default_rng(seed)
    # regions of at least 10x10 pixels keep the per-region noise of random scores small
    masks = masks_with_regions(n=12, h=96, w=64, seed=seed, sides=(10, 24))
    maps = rng.random(masks.shape)
    assert aupro(masks, maps) == pytest.approx(0.15, abs=0.02)
    m = evaluate(masks.any(axis=(1, 2)).astype(int), rng.random(12), masks, maps)
    assert m["pixel_auroc"] == pytest.approx(0.5, abs=0.05)


def test_inverted_maps_aupro_near_zero():
    masks = masks_with_regions()
    maps = np.where(masks, 0.0, 1.0) + np.random.default_rng(0).random(masks.shape) * 0.1
    assert aupro(masks, maps) < 0.01


def test_aupro_weights_regions_equally():
    """One large region found, one small region missed: PRO is 0.5, whatever the sizes."""
    masks = np.zeros((1, 40, 40), dtype=bool)
    masks[0, 0:20, 0:20] = True  # 400 px, found
    masks[0, 30:32, 30:32] = True  # 4 px, missed
    maps = np.zeros((1, 40, 40))
    maps[0, 0:20, 0:20] = 1.0
    maps[0, 32:, :] = np.linspace(0.1, 0.2, 8 * 40).reshape(8, 40)  # normal area, below the found
    assert aupro(masks, maps) == pytest.approx(0.5, abs=0.02)
    pixel_weighted = roc_auc_score(masks.reshape(-1), maps.reshape(-1))
    assert pixel_weighted > 0.9  # a pixel-level metric hardly notices the missed region


def test_one_class_gives_nan():
    good = evaluate(np.zeros(5), np.arange(5.0), np.zeros((5, 8, 8)), np.random.rand(5, 8, 8))
    for k in METRIC_KEYS:
        assert math.isnan(good[k]), k
    bad = evaluate(np.ones(4), np.arange(4.0), np.ones((4, 8, 8)), np.random.rand(4, 8, 8))
    for k in METRIC_KEYS:
        assert math.isnan(bad[k]), k
    with pytest.warns(UndefinedMetricWarning, match="no defect pixels"):
        assert math.isnan(aupro(np.zeros((2, 4, 4)), np.random.rand(2, 4, 4)))


def test_pixel_metrics_by_hand():
    """Four defect pixels (0.9, 0.7, 0.6, 0.2) in two regions, ten normal pixels (0.8, 0.65, 0.5,
    then seven below 0.2), and a good image of 14 pixels at 0."""
    masks = np.zeros((1, 2, 7), dtype=bool)
    masks[0, 0, 0] = masks[0, 0, 3] = masks[0, 1, 4] = masks[0, 1, 5] = True
    maps = np.zeros((1, 2, 7))
    maps[masks] = [0.9, 0.7, 0.6, 0.2]
    maps[~masks] = [0.8, 0.65, 0.5, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04]
    good = np.zeros((1, 2, 7), dtype=bool)
    both_masks, both_maps = np.concatenate([masks, good]), np.concatenate([maps, 0 * maps])
    m = evaluate(np.array([1, 0]), np.array([0.9, 0.3]), both_masks, both_maps)
    # the good image adds 14 normal pixels at 0, below every defect pixel
    assert m["pixel_auroc"] == pytest.approx((10 + 9 + 8 + 7 + 4 * 14) / (4 * 24), abs=1e-12)
    # 24 normal pixels: PRO 1/2, 2/3, 5/6 over FPR steps of 1/24, then 1 from 3/24 to 0.3:
    # (1/24) * (1/2 + 2/3 + 5/6) + (0.3 - 3/24) = 0.258333; / 0.3 = 31/36
    assert m["pixel_aupro"] == pytest.approx(31 / 36, abs=1e-12)
    assert m["image_auroc"] == 1.0
