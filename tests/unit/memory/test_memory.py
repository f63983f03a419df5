"""Memory bank: greedy k-center coreset, bank size, exact chunked k-NN, input validation."""

from __future__ import annotations

import math

import pytest
import torch

from dualpatch.bank.memory import MemoryBank, greedy_coreset
from dualpatch.bank.neighbours import knn
from dualpatch.errors import DataError
from tests.support.coreset import brute_force_k_center


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("projection_dim", [16, None])
def test_greedy_coreset_matches_brute_force(seed, projection_dim):
    gen = torch.Generator().manual_seed(100 + seed)
    feats = torch.randn(150, 40, generator=gen)
    got = greedy_coreset(feats, 25, projection_dim=projection_dim, seed=seed)
    assert got.dtype == torch.long
    assert got.tolist() == brute_force_k_center(feats, 25, projection_dim, seed)
    assert len(set(got.tolist())) == 25  # no point chosen twice


def test_greedy_coreset_projection_changes_selection():
    """The projection is really applied (and seeded): another seed's projection picks otherwise."""
    feats = torch.randn(120, 64, generator=torch.Generator().manual_seed(3))
    a = greedy_coreset(feats, 20, projection_dim=8, seed=0)
    assert a.tolist() == greedy_coreset(feats, 20, projection_dim=8, seed=0).tolist()
    assert a.tolist() != greedy_coreset(feats, 20, projection_dim=8, seed=1).tolist()


def test_greedy_coreset_reports_progress_and_keeps_all_when_asked_for_more():
    feats = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    steps = []
    greedy_coreset(feats, 10, progress=steps.append)
    assert sum(steps) == 9  # one step per point after the first
    assert greedy_coreset(feats, 30).tolist() == list(range(30))
    assert greedy_coreset(feats, 99).tolist() == list(range(30))


@pytest.mark.parametrize(
    "ratio, min_size, n, expected",
    [
        (0.01, 1000, 500_000, 5000),  # ratio wins
        (0.01, 1000, 50_000, 1000),  # floor wins
        (0.01, 1000, 300, 300),  # fewer patches than the floor: keep all
        (0.1, 5, 1001, 101),  # ratio rounds up
        (0.5, 0, 7, 4),
        (1.0, 10, 42, 42),
    ],
)
def test_target_size(ratio, min_size, n, expected):
    assert MemoryBank(coreset_ratio=ratio, min_size=min_size).target_size(n) == expected


def test_memory_bank_fit_keeps_target_size_rows_of_the_input():
    feats = torch.randn(400, 12, generator=torch.Generator().manual_seed(5))
    bank = MemoryBank(coreset_ratio=0.1, min_size=10, projection_dim=None, seed=0).fit(feats)
    assert bank.bank_.shape == (40, 12)
    assert bank.bank_.dtype == torch.float32
    # every bank row is one of the input rows, and they are distinct
    same = (bank.bank_[:, None, :] == feats[None, :, :]).all(dim=2)  # (40, 400)
    assert torch.all(same.any(dim=1))
    assert len(set(same.float().argmax(dim=1).tolist())) == 40


def reference_knn(query, bank, k):
    d = torch.cdist(query.double(), bank.double())
    dist, idx = torch.topk(d, k, dim=1, largest=False)
    return dist, idx


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize(
    "n_query, n_bank, block",
    [
        (600, 23, 256 * 5),  # bank chunks of 5 (last one short), query chunks of 256
        (37, 11, 256 * 3),  # bank chunks of 3, one query chunk
        (50, 9, 1),  # degenerate block: one bank row at a time
        (70, 40, 10**9),  # no chunking at all
    ],
)
def test_chunked_knn_equals_cdist(k, n_query, n_bank, block):
    gen = torch.Generator().manual_seed(n_query + n_bank + k)
    query = torch.randn(n_query, 8, generator=gen)
    bank = torch.randn(n_bank, 8, generator=gen)
    dist, idx = knn(query, bank, k=k, block=block)
    ref_d, ref_i = reference_knn(query, bank, k)
    assert dist.shape == idx.shape == (n_query, k)
    assert torch.equal(idx, ref_i)
    torch.testing.assert_close(dist.double(), ref_d, atol=1e-4, rtol=1e-4)
    # distances come out sorted, nearest first
    assert torch.all(dist[:, 1:] >= dist[:, :-1])


def test_knn_k_larger_than_bank_returns_whole_bank():
    query = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    bank = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    dist, idx = knn(query, bank, k=5, block=256)
    assert dist.shape == (5, 2)
    assert sorted(idx[0].tolist()) == [0, 1]


def test_knn_exact_match_has_zero_distance():
    bank = torch.randn(20, 6, generator=torch.Generator().manual_seed(2))
    dist, idx = knn(bank[[3, 17]], bank, k=1)
    assert idx[:, 0].tolist() == [3, 17]
    assert torch.all(dist < 1e-3)


def test_empty_bank_raises_data_error():
    with pytest.raises(DataError, match="empty"):
        knn(torch.randn(4, 3), torch.empty(0, 3))
    with pytest.raises(DataError):
        MemoryBank().fit(torch.empty(0, 3))
    with pytest.raises(DataError):
        MemoryBank().fit(torch.randn(10))  # not (N, D)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_features_raise(bad):
    feats = torch.randn(50, 4)
    feats[17, 2] = bad
    with pytest.raises(DataError, match="NaN|infinite"):
        MemoryBank(min_size=5).fit(feats)


def test_a_bank_is_centred_once_for_all_its_queries(monkeypatch):
    """The bank's mean and squared norms are computed once per bank, not per query, and the
    answers are the plain search's, bit for bit; a new bank gets its own."""
    from dualpatch.bank import memory, neighbours

    calls = []
    monkeypatch.setattr(memory, "centred", lambda b: calls.append(1) or neighbours.centred(b))
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 16, generator=gen) * 30 + 100  # large norms: centring matters
    queries = [torch.randn(7, 16, generator=gen) * 30 + 100 for _ in range(3)]
    bank = MemoryBank(coreset_ratio=1.0, min_size=50).fit(feats)
    for q in queries:
        for got, want in zip(bank.query(q, 3), knn(q, bank.bank_, 3), strict=True):
            assert torch.equal(got, want)
    assert len(calls) == 1
    bank.bank_ = bank.bank_[:20].clone()
    assert torch.equal(bank.query(queries[0], 1)[0], knn(queries[0], bank.bank_, 1)[0])
    assert len(calls) == 2
