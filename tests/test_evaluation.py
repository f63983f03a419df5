"""Metrics against scikit-learn and against closed-form expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from dualpatch.evaluation import METRIC_KEYS, aupro, evaluate, f1_max


def toy(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(labels * 1.0, 1.0)
    return labels, scores


def f1_max_brute_force(labels, scores) -> float:
    return max(f1_score(labels, scores >= t) for t in np.unique(scores))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_metrics_match_sklearn(seed):
    labels, scores = toy(seed)
    m = evaluate(labels, scores)
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["image_ap"] == pytest.approx(average_precision_score(labels, scores))
    assert m["f1_max"] == pytest.approx(f1_max_brute_force(labels, scores))
    # no masks given: pixel metrics undefined
    assert math.isnan(m["pixel_auroc"]) and math.isnan(m["pixel_aupro"])
    assert set(m) == set(METRIC_KEYS)


def test_image_metrics_with_ties():
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    scores = np.array([0.1, 0.5, 0.5, 0.9, 0.3, 0.3, 0.3, 0.7])
    m = evaluate(labels, scores)
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["image_ap"] == pytest.approx(average_precision_score(labels, scores))
    assert m["f1_max"] == pytest.approx(f1_max_brute_force(labels, scores))


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
    assert m["pixel_aupro"] == pytest.approx(1.0, abs=0.01)
    assert m["image_auroc"] == 1.0
    # a binary map (the mask itself) is just as perfect
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=0.01)


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
    assert math.isnan(aupro(np.zeros((2, 4, 4)), np.random.rand(2, 4, 4)))


def test_all_metrics_are_fractions():
    masks = masks_with_regions()
    rng = np.random.default_rng(5)
    maps = rng.random(masks.shape) + masks * 0.5
    labels = masks.any(axis=(1, 2)).astype(int)
    m = evaluate(labels, maps.reshape(len(maps), -1).max(1), masks, maps)
    for k in ("image_auroc", "pixel_auroc", "image_ap", "pixel_aupro", "f1_max"):
        assert 0.0 <= m[k] <= 1.0, k
    assert 0.15 < m["pixel_aupro"] < 1.0
