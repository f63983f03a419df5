"""Large-data coreset: the pass-wise greedy equals textbook greedy; the approximate coreset
(pre-sample, then greedy) keeps its k-center radius within its stated bound."""

from __future__ import annotations

import pytest
import torch

from dualpatch import memory
from dualpatch.errors import ConfigError
from dualpatch.memory import (
    MemoryBank,
    greedy_coreset,
    greedy_kcenter,
    kcenter_radius,
    presample,
    project,
    projection_for,
)
from tests.support.coreset import brute_force_k_center


def clustered(n: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    """Gaussian blobs of unequal spread: k-center has real structure to find."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=gen) * 6
    which = torch.randint(clusters, (n,), generator=gen)
    spread = torch.rand(clusters, generator=gen)[which, None] + 0.2
    return centres[which] + torch.randn(n, dim, generator=gen) * spread


@pytest.mark.parametrize("seed", [0, 3])
def test_greedy_in_passes_picks_what_textbook_greedy_picks(seed, monkeypatch):
    # few candidates and small update blocks: many passes, each ending early
    monkeypatch.setattr(memory, "GREEDY_CANDIDATES", 16)
    monkeypatch.setattr(memory, "GREEDY_CHUNK", 37)
    feats = clustered(300, 24, 7, seed)
    got = greedy_coreset(feats, 60, projection_dim=None, seed=seed)
    assert got.tolist() == brute_force_k_center(feats, 60, None, seed)


def radius_bruteforce(x: torch.Tensor, centres: torch.Tensor) -> float:
    return float(torch.cdist(x.double(), x[centres].double()).min(1).values.max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_approx_coreset_radius_within_its_bounds(seed):
    """Stated bounds of pre-sample + greedy, with r_S its greedy radius over the sample S and
    eps the farthest any point lies from S:
    - guaranteed (triangle inequality): radius <= r_S + eps;
    - measured (docs/large-data.md): radius <= 1.5 x exact greedy's radius on clustered data;
    and greedy itself is a 2-approximation: exact greedy's radius <= 2 x the approx radius."""
    feats = clustered(3000, 32, 12, seed)
    x = project(feats, projection_for(32, 16, seed))
    exact = greedy_coreset(feats, 40, 16, seed)
    approx = greedy_coreset(feats, 40, 16, seed, method="approx", sample_budget=400)
    sample = presample(3000, 400, seed)
    assert set(approx.tolist()) <= set(sample.tolist())  # picks come from the pre-sample only
    r_exact, r_approx = kcenter_radius(x, exact), kcenter_radius(x, approx)
    assert r_approx == pytest.approx(radius_bruteforce(x, approx), rel=1e-4)
    pos = {int(r): i for i, r in enumerate(sample)}
    r_sample = radius_bruteforce(x[sample], torch.tensor([pos[int(a)] for a in approx]))
    eps = float(torch.cdist(x.double(), x[sample].double()).min(1).values.max())
    assert r_approx <= r_sample + eps + 1e-4
    assert r_approx <= 1.5 * r_exact
    assert r_exact <= 2 * r_approx + 1e-4  # any k centres are at least OPT >= r_exact / 2


def test_approx_coreset_keeps_everything_when_the_sample_is_all():
    feats = clustered(500, 8, 4, 0)
    exact = greedy_coreset(feats, 20, None, 0)
    assert greedy_coreset(feats, 20, None, 0, method="approx", sample_budget=10_000).tolist() == (
        exact.tolist()
    )


def test_approx_cost_grows_with_the_budget_not_the_input(monkeypatch):
    """The greedy stage sees a fixed number of rows whatever N (with at least 4 per pick)."""
    seen = []
    real = memory.greedy_kcenter

    def spy(x, n_select, seed=0, progress=None):
        seen.append(x.shape[0])
        return real(x, n_select, seed, progress)

    monkeypatch.setattr(memory, "greedy_kcenter", spy)
    for n in (2000, 8000):
        greedy_coreset(torch.randn(n, 8), 10, None, 0, method="approx", sample_budget=500)
    greedy_coreset(torch.randn(8000, 8), 200, None, 0, method="approx", sample_budget=500)
    assert seen == [500, 500, 800]


def test_unknown_coreset_method_is_refused():
    with pytest.raises(ConfigError, match="unknown coreset 'fast'"):
        MemoryBank(coreset="fast").fit(torch.randn(50, 4))


def test_greedy_kcenter_reports_each_pick():
    steps = []
    picks = greedy_kcenter(clustered(2000, 8, 5, 1), 50, progress=steps.append)
    assert sum(steps) == 49 and len(set(picks.tolist())) == 50
