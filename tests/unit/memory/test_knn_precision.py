"""k-NN distances stay exact when the features have large norms (float32 cancellation)."""

from __future__ import annotations

import pytest
import torch

from dualpatch.bank.neighbours import knn


def far_from_origin(seed: int, n: int, dim: int = 64, norm: float = 1e4, spread: float = 1.0):
    """Rows at distance ~``norm`` from the origin, ~``spread`` apart from each other: float32."""
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randn(dim, generator=gen, dtype=torch.float64)
    offset *= norm / offset.norm()
    return (offset + spread * torch.randn(n, dim, generator=gen, dtype=torch.float64)).float()


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("spread", [1.0, 1e3])
def test_knn_with_norms_of_1e4_matches_float64(k, spread):
    bank = far_from_origin(0, 300, spread=spread)
    # queries near bank rows (distances ~0.01 * spread) and a few far away
    gen = torch.Generator().manual_seed(1)
    near = bank[:40] + 0.01 * spread * torch.randn(40, bank.shape[1], generator=gen)
    query = torch.cat([near, far_from_origin(2, 10, spread=spread)])
    dist, idx = knn(query, bank, k=k, block=4096)  # small blocks: several chunks on both sides
    exact = torch.cdist(query.double(), bank.double())
    ref_d, ref_i = exact.topk(k, dim=1, largest=False)
    torch.testing.assert_close(dist.double(), ref_d, rtol=1e-5, atol=1e-6 * spread)
    # where the distance is not tied, the neighbour is the same one
    assert (idx == ref_i).float().mean() > 0.99
    # the old form |q|^2 + |b|^2 - 2 q.b in float32 is off by orders of magnitude here
    if spread == 1.0:
        sq = (query * query).sum(1, keepdim=True) + (bank * bank).sum(1) - 2 * query @ bank.T
        naive = sq.clamp_min(0).sqrt().min(1).values.double()
        assert (naive - ref_d[:, 0]).abs().max() > 0.1


def test_knn_distances_are_sorted_for_k_above_one():
    bank = far_from_origin(3, 200)
    query = far_from_origin(4, 30)
    dist, _ = knn(query, bank, k=5)
    assert torch.all(dist[:, 1:] >= dist[:, :-1])
