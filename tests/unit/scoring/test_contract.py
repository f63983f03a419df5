"""The scoring contract (scoring.DUAL_RULES), proven on random distance maps with hypothesis.

With tau the normal bank's novelty level, every ``safe`` rule (the default among them):
(a) scores a patch with d_n >= tau at least d_n, so an image whose single-bank score is >= tau
scores at least that much; (b) stays in [d_n^2 / tau, 2 d_n] below tau (2 d_n only where
d_d = 0); (c) is non-decreasing in d_n and non-increasing in d_d. The old ratio rules break
(a), which is why they are not safe: the last tests show it on a case they get wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dualpatch.defaults import DUAL_RULE
from dualpatch.errors import ConfigError
from dualpatch.scoring import DUAL_RULES, dual_scores, score_patches

SAFE = [name for name, rule in DUAL_RULES.items() if rule.safe]
#: distances as the banks give them: non-negative, from exact matches to far outliers
DIST = st.floats(0.0, 1e4, allow_nan=False, allow_infinity=False, width=32)
LEVEL = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6))


@st.composite
def distance_maps(draw):
    """(d_n, d_d, tau): two random (B, h, w) float32 distance maps and a novelty level."""
    shape = draw(SHAPES)
    normal = draw(arrays(np.float32, shape, elements=DIST))
    defect = draw(arrays(np.float32, shape, elements=DIST))
    return torch.from_numpy(normal), torch.from_numpy(defect), draw(LEVEL)


def property_test(test):
    """Run ``test(rule, case)`` for every safe rule on 300 random distance maps."""
    test = given(case=distance_maps())(test)
    return pytest.mark.parametrize("rule", SAFE)(settings(max_examples=300, deadline=None)(test))


def test_the_default_rule_is_safe():
    assert DUAL_RULE in SAFE
    assert all(DUAL_RULES[name].safe is False for name in ("patch", "seed", "weighted"))
    for name in ("patch", "seed", "weighted"):
        assert "UNSAFE for novelties" in DUAL_RULES[name].description


@property_test
def test_never_below_the_single_bank_above_tau(rule, case):
    normal, defect, tau = case
    patch_map, score = dual_scores(normal, defect, rule, novelty_level=tau)
    assert torch.all(torch.isfinite(patch_map)) and torch.all(patch_map >= 0)
    far = normal >= tau
    assert torch.all(patch_map[far] >= normal[far])
    # the image-level statement: single-bank score >= tau -> dual score >= single-bank score
    single = normal.flatten(1).amax(1)
    novel = single >= tau
    assert torch.all(score[novel] >= single[novel])
    # the image score is the map's max: the map and the score never disagree
    assert torch.equal(score, patch_map.flatten(1).amax(1))


@property_test
def test_bounded_below_tau(rule, case):
    normal, defect, tau = case
    patch_map, _ = dual_scores(normal, defect, rule, novelty_level=tau)
    d_n, s = normal.double(), patch_map.double()
    # float32 rounding of the products: a few ulps, and underflow of squares below 1e-30
    assert torch.all(s >= d_n * torch.clamp(d_n / tau, max=1) * (1 - 1e-6) - 1e-30)
    # 2 d_n exactly only where the patch sits on a defect bank entry (d_d = 0)
    assert torch.all(s <= 2 * d_n * (1 + 1e-6) + 1e-30)
    apart = (defect.double() > 1e-3 * d_n) & (d_n > 1e-30)
    assert torch.all(s[apart] < 2 * d_n[apart])


@pytest.mark.parametrize("rule", SAFE)
@settings(max_examples=300, deadline=None)
@given(case=distance_maps(), more=st.floats(0.0, 1e3, width=32))
def test_monotone(rule, case, more):
    normal, defect, tau = case
    base, _ = dual_scores(normal, defect, rule, novelty_level=tau)
    farther_from_normal, _ = dual_scores(normal + more, defect, rule, novelty_level=tau)
    farther_from_defects, _ = dual_scores(normal, defect + more, rule, novelty_level=tau)
    slack = 1e-6 * base.abs() + 1e-30  # float32 rounding only
    assert torch.all(farther_from_normal >= base - slack)
    assert torch.all(farther_from_defects <= base + slack)


@pytest.mark.parametrize("rule", SAFE)
def test_raises_near_known_defects_and_damps_near_normal_surface(rule):
    """Below tau: a patch nearer a known defect than normal surface is raised above d_n, one
    near normal surface and far from defects is damped below it."""
    normal = torch.tensor([[[1.0, 1.0]]])
    defect = torch.tensor([[[0.1, 50.0]]])
    patch_map, _ = dual_scores(normal, defect, rule, novelty_level=4.0)
    assert patch_map[0, 0, 0] == pytest.approx(2 / 1.1)  # w = 2 d_n / (d_n + d_d)
    assert patch_map[0, 0, 1] == pytest.approx(0.25)  # d_n^2 / tau: w is smaller still


@pytest.mark.parametrize("rule", SAFE)
def test_both_distances_zero(rule):
    zero = torch.zeros(1, 2, 2)
    patch_map, score = dual_scores(zero, zero, rule, novelty_level=1.0)
    assert torch.equal(patch_map, zero) and score.tolist() == [0.0]


@pytest.mark.parametrize("level", [None, 0.0, -1.0, float("nan")])
def test_guarded_refuses_a_missing_level(level):
    with pytest.raises(ConfigError, match="novelty level"):
        dual_scores(torch.ones(1, 2, 2), torch.ones(1, 2, 2), "guarded", novelty_level=level)


@pytest.mark.parametrize("rule", ["patch", "seed"])
def test_ratio_rules_break_the_contract(rule):
    """A patch far from both banks (d_n = d_d = 10 tau): the ratio rules score it about 1, far
    below its single-bank score of 10; the guarded rule keeps 10 (the case of issue 23)."""
    normal, defect = torch.full((1, 2, 2), 10.0), torch.full((1, 2, 2), 10.0)
    _, unsafe = dual_scores(normal, defect, rule)
    _, guarded = dual_scores(normal, defect, "guarded", novelty_level=1.0)
    assert float(unsafe[0]) < 1.01 and float(guarded[0]) >= 10.0


def test_score_patches_passes_the_level():
    normal, defect = torch.full((1, 2, 2), 3.0), torch.full((1, 2, 2), 30.0)
    _, low = score_patches(normal, (8, 8), 0.0, defect, "guarded", novelty_level=1.0)
    _, high = score_patches(normal, (8, 8), 0.0, defect, "guarded", novelty_level=9.0)
    assert float(low[0]) == pytest.approx(3.0) and float(high[0]) == pytest.approx(1.0)
