"""Known answers computed independently of the scoring code, beside test_golden_scores.py (whose
values the code itself produced): the fixture models' image scores recomputed from their patch
features and banks with a float64 brute force written from the definitions (PatchCore's nearest
distance and the paper's re-weighting, each dual rule's formula in docs and README)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

EPS = 1e-6


def _distances(model, samples, bank) -> np.ndarray:
    """(N, h*w) float64 distance of every test patch to its nearest entry of ``bank``."""
    feats = model.image_features(samples, None).double()
    flat = feats.reshape(feats.shape[0], -1, feats.shape[-1])
    return torch.cdist(flat, bank.double()[None].expand(len(flat), -1, -1)).amin(-1).numpy()


def test_single_score_is_the_largest_nearest_distance(fitted_single, tiny_test):
    expected = _distances(fitted_single, tiny_test, fitted_single.memory_.bank_).max(1)
    got = fitted_single.predict(tiny_test).image_scores
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_reweighted_single_score_follows_the_paper(fitted_single, tiny_test):
    """s = (1 - exp(|f* - m*|) / sum over the 9 bank entries nearest m* of exp(|f* - m|)) * s*,
    with f* the test patch farthest from the bank and m* its nearest entry."""
    model = copy.copy(fitted_single)
    model.reweight = True
    bank = fitted_single.memory_.bank_.double()
    feats = model.image_features(tiny_test, None).double()
    expected = []
    for f in feats.reshape(feats.shape[0], -1, feats.shape[-1]):
        d = torch.cdist(f, bank)
        nearest, which = d.min(1)
        star = int(nearest.argmax())
        f_star, m_star = f[star], bank[which[star]]
        support = torch.cdist(m_star[None], bank)[0].argsort()[: model.reweight_neighbors]
        e = torch.exp(torch.linalg.vector_norm(bank[support] - f_star, dim=1))
        expected.append(float((1 - e[0] / e.sum()) * nearest[star]))
    np.testing.assert_allclose(model.predict(tiny_test).image_scores, expected, rtol=1e-5)


@pytest.mark.parametrize("rule", ["weighted", "patch", "seed"])
def test_dual_scores_follow_each_rules_formula(fitted_dual, tiny_test, rule):
    d_n = _distances(fitted_dual, tiny_test, fitted_dual.memory_.bank_)
    d_d = _distances(fitted_dual, tiny_test, fitted_dual.defect_memory_.bank_)
    expected = {
        "weighted": (d_n * d_n / (d_n + d_d + EPS)).max(1),
        "patch": (d_n / (d_d + EPS)).max(1),
        "seed": d_n.max(1) / (d_d.max(1) + EPS),
    }[rule]
    model = copy.copy(fitted_dual)
    model.rule = rule
    np.testing.assert_allclose(model.predict(tiny_test).image_scores, expected, rtol=1e-5)
