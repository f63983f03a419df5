"""Fidelity metrics on toy feature sets whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualpatch.augment.fidelity import (
    density_coverage,
    fidelity,
    mean_nearest_distance,
    precision_recall,
)


def blob(n: int, d: int = 8, centre: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(centre, 1.0, size=(n, d))


def test_hand_checked_one_dimensional_case():
    real = np.array([[0.0], [1.0], [3.0]])  # k=1 radii: 1, 1, 2
    fake = np.array([[0.5], [10.0]])  # k=1 radii: 9.5, 9.5
    assert mean_nearest_distance(fake, real) == pytest.approx((0.5 + 7.0) / 2)
    assert precision_recall(fake, real, k=1) == pytest.approx((0.5, 1.0))
    # 0.5 lies in the balls of 0 and 1, not of 3; 10 lies in none.
    assert density_coverage(fake, real, k=1) == pytest.approx((2 / 2, 2 / 3))


def test_identical_sets_are_perfect():
    x = blob(200)
    f = fidelity(x, x.copy())
    assert (f.precision, f.recall, f.coverage) == (1.0, 1.0, 1.0)
    assert f.mean_nn_distance == 0.0
    # every real ball holds its own centre and its k neighbours: (k + 1) / k
    assert f.density == pytest.approx(6 / 5)


def test_two_samples_of_one_distribution_have_density_near_one():
    f = fidelity(blob(1500, d=4, seed=1), blob(1500, d=4, seed=2))
    assert f.density == pytest.approx(1.0, abs=0.1)
    assert f.precision > 0.9 and f.recall > 0.9 and f.coverage > 0.9


def test_far_disjoint_sets_score_zero():
    f = fidelity(blob(100, centre=50.0, seed=1), blob(100, seed=2))
    assert (f.precision, f.recall, f.density, f.coverage) == (0.0, 0.0, 0.0, 0.0)
    assert f.mean_nn_distance > 100  # sqrt(8) * 50 minus the spread


def test_a_subset_is_precise_but_does_not_recall():
    a, b = blob(150, seed=1), blob(150, centre=30.0, seed=2)
    real = np.concatenate([a, b])
    fake = a[:100]  # one of the two modes only
    p, r = precision_recall(fake, real)
    assert p == 1.0
    assert 0.3 < r < 0.6
    _, coverage = density_coverage(fake, real)
    assert coverage < 0.6
    # the mode that is missed is what lowers recall, not the one that is covered
    assert precision_recall(a, real)[1] == pytest.approx(0.5, abs=0.02)


def test_accepts_tensors_and_refuses_bad_shapes():
    x = blob(20)
    assert mean_nearest_distance(torch.from_numpy(x).float(), x) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="feature set"):
        fidelity(x[0], x)
    with pytest.raises(ValueError, match="k=5"):
        precision_recall(x[:3], x)
