"""Scoring: anomaly maps, dual-bank rules, the PatchCore paper's re-weighted image score."""

from __future__ import annotations

import math

import pytest
import torch

from dualpatch.bank.neighbours import knn
from dualpatch.errors import ConfigError
from dualpatch.scoring import (
    anomaly_map,
    dual_patch_ratio,
    dual_scores,
    max_score,
    reweighted_score,
)


def unravel(flat_index: int, width: int) -> tuple[int, int]:
    return flat_index // width, flat_index % width


@pytest.mark.parametrize(
    "grid, size",
    [((40, 16), (320, 128)), ((31, 12), (250, 96)), ((8, 4), (64, 32)), ((5, 7), (40, 56))],
)
def test_anomaly_map_has_requested_size(grid, size):
    scores = torch.rand(2, *grid, generator=torch.Generator().manual_seed(0))
    for sigma in (0.0, 4.0):
        out = anomaly_map(scores, size, sigma=sigma)
        assert out.shape == (2, *size)
        assert out.dtype == torch.float32


@pytest.mark.parametrize("sigma", [0.0, 2.0, 4.0])
@pytest.mark.parametrize("peak", [(30, 3), (5, 12), (21, 8)])
def test_anomaly_map_blur_keeps_the_peak(sigma, peak):
    """A single hot patch on a tall, narrow grid stays where it was, in image coordinates."""
    grid, size = (40, 16), (320, 128)
    scores = torch.zeros(1, *grid)
    scores[0, peak[0], peak[1]] = 5.0
    out = anomaly_map(scores, size, sigma=sigma)[0]
    y, x = unravel(int(out.argmax()), size[1])
    # patch (i, j) covers pixels 8i .. 8i+7; its centre is at 8i + 3.5
    assert abs(y - (8 * peak[0] + 3.5)) <= 1
    assert abs(x - (8 * peak[1] + 3.5)) <= 1
    if sigma > 0:  # blurred: lower peak, spread wider, mass roughly kept
        unblurred = anomaly_map(scores, size, sigma=0)[0]
        assert out.max() < unblurred.max()
        assert (out > 1e-3).sum() > (unblurred > 1e-3).sum()
        assert out.sum() == pytest.approx(float(unblurred.sum()), rel=0.05)


@pytest.mark.parametrize("size", [(64, 16), (128, 12), (16, 16)])
def test_anomaly_map_small_images(size):
    """Narrow inputs (a side no longer than the default blur kernel's radius) still get a map."""
    grid = (size[0] // 8, size[1] // 8)
    scores = torch.zeros(1, *grid)
    scores[0, grid[0] // 2, grid[1] // 2] = 1.0
    out = anomaly_map(scores, size, sigma=4.0)
    assert out.shape == (1, *size)
    assert torch.all(torch.isfinite(out)) and out.max() > 0


def test_anomaly_map_keeps_images_apart():
    scores = torch.zeros(2, 8, 4)
    scores[1, 2, 1] = 1.0
    out = anomaly_map(scores, (64, 32), sigma=4.0)
    assert torch.all(out[0] == 0)
    assert out[1].max() > 0


def dual_case():
    """Two images of 6x4 patches: image 1 holds one patch that looks like a known defect."""
    gen = torch.Generator().manual_seed(0)
    normal = 1.0 + 0.1 * torch.rand(2, 6, 4, generator=gen)  # ordinary surface: near normal bank
    defect = 3.0 + 0.1 * torch.rand(2, 6, 4, generator=gen)  # ... and far from the defect bank
    normal[1, 4, 2], defect[1, 4, 2] = 5.0, 0.2  # the defect patch: far from normal, near defect
    return normal, defect


@pytest.mark.parametrize("rule", ["patch", "seed"])
def test_dual_scores_rank_the_defect_patch_first(rule):
    normal, defect = dual_case()
    ratio, score = dual_scores(normal, defect, rule=rule)
    assert ratio.shape == normal.shape
    assert score.shape == (2,)
    # the defect patch tops its image's map and every patch of the good image
    assert unravel(int(ratio[1].argmax()), 4) == (4, 2)
    assert ratio[1, 4, 2] > ratio[0].max()
    assert ratio[1, 4, 2] > 5 * ratio[1].flatten().sort().values[-2]
    # the defective image scores above the good one
    assert score[1] > score[0]


def test_dual_rules_by_hand():
    """One image of 2x2 patches, eps = 0. d_n = [[2, 1], [4, 0.5]], d_d = [[1, 3], [0.5, 0.5]].

    patch: map [[2, 1/3], [8, 1]], score 8. seed: same map, score max d_n / max d_d = 4/3.
    weighted: d_n^2 / (d_n + d_d) = [[4/3, 1/4], [16/4.5, 1/4]], score 16/4.5."""
    normal = torch.tensor([[[2.0, 1.0], [4.0, 0.5]]])
    defect = torch.tensor([[[1.0, 3.0], [0.5, 0.5]]])
    ratio = torch.tensor([[2.0, 1 / 3], [8.0, 1.0]])
    patch_map, patch_score = dual_scores(normal, defect, rule="patch", eps=0)
    torch.testing.assert_close(patch_map[0], ratio)
    assert patch_score.tolist() == pytest.approx([8.0])
    seed_map, seed_score = dual_scores(normal, defect, rule="seed", eps=0)
    torch.testing.assert_close(seed_map[0], ratio)
    assert seed_score.tolist() == pytest.approx([4 / 3])
    weighted_map, weighted_score = dual_scores(normal, defect, rule="weighted", eps=0)
    torch.testing.assert_close(weighted_map[0], torch.tensor([[4 / 3, 0.25], [16 / 4.5, 0.25]]))
    assert weighted_score.tolist() == pytest.approx([16 / 4.5])


def test_weighted_rule_ranking():
    """Hand-made patches: how the weighted rule orders them against the plain normal distance."""
    d_n = torch.tensor([[[2.0, 2.0, 2.0, 3.0, 1.5, 0.2]]])
    d_d = torch.tensor([[[0.5, 2.0, 8.0, 30.0, 0.1, 0.2]]])
    w = dual_scores(d_n, d_d, rule="weighted", eps=0)[0][0, 0]
    # same distance to normal surface: the nearer a known defect, the higher (1.6 > 1 > 0.4)
    assert w[0] > w[1] > w[2]
    assert w[:3].tolist() == pytest.approx([1.6, 1.0, 0.4])
    # never above the single bank's distance; exactly half of it where both banks are as far
    assert torch.all(w <= d_n[0, 0])
    assert w[1] == pytest.approx(d_n[0, 0, 1] / 2)
    # a normal-looking outlier far from every defect (d_n 3, d_d 30) ranks below a milder patch
    # that sits next to a known defect (d_n 1.5, d_d 0.1): the single bank ranks them the other way
    assert w[3] < w[4] and d_n[0, 0, 3] > d_n[0, 0, 4]
    # an ordinary patch stays low even though it is as near the defect bank as the normal one
    assert w[5] == pytest.approx(0.1)


def test_dual_ratio_is_finite_at_zero_defect_distance():
    ratio = dual_patch_ratio(torch.ones(3), torch.zeros(3))
    assert torch.all(torch.isfinite(ratio))


@pytest.mark.parametrize("rule", ["max", "", "Patch", "seeds"])
def test_unknown_dual_rule_raises_config_error(rule):
    normal, defect = dual_case()
    with pytest.raises(ConfigError, match="rule"):
        dual_scores(normal, defect, rule=rule)


def test_max_score():
    scores = torch.tensor([[[1.0, 2.0], [0.5, 0.0]], [[-1.0, -3.0], [-2.0, -0.5]]])
    assert max_score(scores).tolist() == [2.0, -0.5]


def reweight_case():
    """A bank of 6 points in 2-D, two images of 2x2 patches with features (B, 4, 2)."""
    bank = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 3.0], [5.0, 0.0], [0.2, 0.2]])
    feats = torch.tensor(
        [
            [[0.05, 0.0], [0.0, 0.05], [0.4, 0.5], [0.1, 0.1]],  # hot patch 2, near the dense mode
            [[0.0, 0.0], [3.5, 3.0], [0.1, 0.0], [0.0, 0.1]],  # hot patch 1, near isolated (3, 3)
        ]
    )
    dist, idx = knn(feats.reshape(-1, 2), bank, k=1)
    return bank, feats, dist[:, 0].reshape(2, 2, 2), idx[:, 0].reshape(2, 4)


def test_reweighted_score_by_hand():
    bank, feats, dist, idx = reweight_case()
    k = 3
    got = reweighted_score(dist, feats, idx, bank, reweight_neighbors=k)
    expected = []
    for b in range(2):
        flat = dist[b].flatten()
        j = int(flat.argmax())
        f_star = feats[b, j]
        m_star = bank[int(idx[b, j])]
        # N_b(m*): the k bank entries nearest m* (m* itself first)
        order = torch.cdist(m_star[None], bank)[0].argsort()[:k]
        d = [math.dist(f_star.tolist(), bank[int(m)].tolist()) for m in order]
        weight = 1 - math.exp(d[0]) / sum(math.exp(v) for v in d)
        expected.append(weight * float(flat[j]))
    assert got.tolist() == pytest.approx(expected, rel=1e-5)


def test_reweighted_score_never_exceeds_the_plain_max():
    bank, feats, dist, idx = reweight_case()
    plain = max_score(dist)
    for k in (1, 2, 3, 6):
        got = reweighted_score(dist, feats, idx, bank, reweight_neighbors=k)
        assert torch.all(got <= plain + 1e-7)
        assert torch.all(got >= 0)
    # with more neighbours around a dense mode the weight stays well below 1;
    # near an isolated bank entry it approaches 1 (the score is kept)
    got = reweighted_score(dist, feats, idx, bank, reweight_neighbors=3)
    assert got[0] < 0.8 * plain[0]
    assert got[1] > 0.9 * plain[1]


def test_reweighted_score_random_case_is_bounded():
    gen = torch.Generator().manual_seed(4)
    bank = torch.randn(30, 5, generator=gen)
    feats = torch.randn(3, 12, 5, generator=gen)
    dist, idx = knn(feats.reshape(-1, 5), bank, k=1)
    dist, idx = dist[:, 0].reshape(3, 3, 4), idx[:, 0].reshape(3, 12)
    got = reweighted_score(dist, feats, idx, bank, reweight_neighbors=9)
    plain = max_score(dist)
    assert got.shape == (3,)
    assert torch.all(got <= plain) and torch.all(got > 0)
