"""Faster-search options of a memory bank (docs/search.md): a row budget (``coreset_rows``),
float16 storage (``bank_dtype``), ranking in a learned projection (``search_dim``), and the
search's memory planned by bytes (``chunk_plan``, the exported graph's ``search_plan``)."""

from __future__ import annotations

import pytest
import torch

from dualpatch.bank.memory import MemoryBank, knn
from dualpatch.bank.neighbours import (
    KNN_BUDGET,
    chunk_plan,
    knn_distances_chunked,
    pca_basis,
)
from dualpatch.errors import ConfigError


def _rows(n: int, dim: int = 24, seed: int = 0, rank: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(n, dim, generator=gen)
    # rows on a rank-``rank`` subspace, shifted off the origin
    return torch.randn(n, rank, generator=gen) @ torch.randn(rank, dim, generator=gen) + 3.0


# ------------------------------------------------------------------------- memory by bytes
@pytest.mark.parametrize(
    "n_query, n_bank",
    [(8 * 640, 15_000), (64 * 640, 1_000_000), (1, 1), (10**7, 10**7), (640, 10**9)],
)
def test_one_block_of_the_torch_search_stays_within_the_byte_budget(n_query, n_bank):
    query_rows, bank_rows = chunk_plan(n_query, n_bank)
    assert 1 <= query_rows <= n_query and 1 <= bank_rows <= n_bank
    assert 4 * query_rows * bank_rows <= KNN_BUDGET


def test_the_torch_search_never_holds_a_batch_against_the_whole_bank(monkeypatch):
    """Every distance block the search computes is within its budget (spied, not timed)."""
    from dualpatch.bank import neighbours

    blocks = []
    addmm = torch.addmm
    monkeypatch.setattr(
        neighbours.torch, "addmm", lambda *a, **k: blocks.append(addmm(*a, **k)) or blocks[-1]
    )
    block = 4096  # elements: 16 KiB
    knn(_rows(300, seed=1), _rows(500, seed=2), k=3, block=block)
    assert len(blocks) > 1
    assert max(b.numel() for b in blocks) <= block


@pytest.mark.parametrize("batch", [8, 64])
def test_the_exported_search_plan_keeps_a_planned_batch_within_the_budget(batch):
    from dualpatch.serving.export import search_plan

    for rows in (1_000, 15_000, 68_000, 2_000_000):
        plan = search_plan(640, rows, batch=batch)
        assert plan["block_bytes"] <= plan["budget_bytes"] == KNN_BUDGET
        assert plan["chunks"] * plan["bank_chunk"] >= rows
        assert (plan["chunks"] - 1) * plan["bank_chunk"] < rows
    # a large bank at the default's batch is cut into several chunks
    assert search_plan(640, 68_000)["chunks"] > 1


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk", [1, 7, 50, 10_000])
def test_chunked_graph_search_equals_the_torch_search(k, chunk):
    query, bank = _rows(60, seed=3), _rows(120, seed=4)
    centre = bank.mean(0)
    dist = knn_distances_chunked(query - centre, bank - centre, k, chunk)
    want, _ = knn(query, bank, k)
    torch.testing.assert_close(dist, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- a row budget
def test_a_row_budget_caps_the_bank_and_keeps_greedys_first_picks():
    feats = _rows(600, seed=5)
    full = MemoryBank(coreset_ratio=0.5, min_size=10, projection_dim=None).fit(feats)
    capped = MemoryBank(coreset_ratio=0.5, min_size=10, projection_dim=None, max_rows=40)
    capped.fit(feats)
    assert full.bank_.shape[0] == 300 and capped.bank_.shape[0] == 40
    # greedy k-center picks in order: the 40-row bank is the 300-row bank's first 40 rows
    assert torch.equal(capped.bank_, full.bank_[:40])
    assert capped.target_size(10) == 10  # the ratio and floor still apply under the cap
    assert MemoryBank(min_size=1000, max_rows=200).target_size(10**6) == 200


# ------------------------------------------------------------------------- float16 storage
def test_a_float16_bank_is_stored_in_float16_and_searched_like_its_rounded_rows():
    feats = _rows(400, seed=6)
    bank = MemoryBank(coreset_ratio=0.25, min_size=10, projection_dim=None, bank_dtype="float16")
    bank.fit(feats)
    assert bank.bank_.dtype == torch.float16
    query = _rows(30, seed=7)
    dist, idx = bank.query(query, 2)
    want_d, want_i = knn(query, bank.bank_.float(), 2)
    assert torch.equal(idx, want_i) and torch.equal(dist, want_d)
    # rows set later (a shared bank, rows added on the line) are stored in float16 too
    bank.bank_ = torch.cat([bank.bank_.float(), feats[:3]])
    assert bank.bank_.dtype == torch.float16


def test_an_unknown_bank_dtype_is_refused():
    with pytest.raises(ConfigError, match="bank_dtype"):
        MemoryBank(bank_dtype="int8").bank_ = torch.zeros(2, 3)


# ------------------------------------------------------------------------- learned projection
def test_the_search_basis_is_orthonormal_principal_axes():
    bank = _rows(500, dim=16, seed=8)
    basis = pca_basis(bank, 5)
    assert basis.shape == (16, 5)
    torch.testing.assert_close(basis.T @ basis, torch.eye(5), atol=1e-5, rtol=0)
    # the first axis carries the most variance of the centred rows
    centred = bank - bank.mean(0)
    spread = (centred @ basis).var(0)
    assert torch.all(spread[:-1] >= spread[1:] - 1e-5)
    assert torch.equal(basis, pca_basis(bank, 5))  # deterministic


def test_ranking_in_the_projection_is_exact_when_the_rows_span_no_more_dims():
    """Rows on a 6-dim subspace: 6 principal axes lose nothing, neighbours are exact's."""
    bank_rows, query = _rows(300, dim=32, seed=9, rank=6), _rows(40, dim=32, seed=10, rank=6)
    bank = MemoryBank(projection_dim=None, search_dim=6)
    bank.bank_ = bank_rows
    dist, idx = bank.query(query, 1)
    want_d, want_i = knn(query, bank_rows, 1)
    assert torch.equal(idx, want_i)
    torch.testing.assert_close(dist, want_d, rtol=1e-4, atol=1e-4)


def test_ranking_in_few_dims_reports_the_exact_distance_of_the_neighbour_it_chose():
    bank_rows, query = _rows(300, dim=32, seed=11), _rows(40, dim=32, seed=12)
    bank = MemoryBank(projection_dim=None, search_dim=4)
    bank.bank_ = bank_rows
    dist, idx = bank.query(query, 2)
    direct = torch.linalg.vector_norm(query[:, None] - bank_rows[idx], dim=-1)
    torch.testing.assert_close(dist, direct, rtol=1e-5, atol=1e-5)
    exact, _ = knn(query, bank_rows, 2)
    assert torch.all(dist >= exact - 1e-5)  # never nearer than the true neighbours
    assert torch.any(dist > exact + 1e-3)  # 4 of 32 random dims: some neighbours are missed


def test_a_search_dim_at_or_above_the_width_ranks_in_full():
    bank = MemoryBank(search_dim=32)
    bank.bank_ = _rows(50, dim=24, seed=13)
    assert bank.search_basis() is None


# ------------------------------------------------------------------------- the estimator
@pytest.mark.parametrize(
    "params, message",
    [
        ({"coreset_rows": 0}, "coreset_rows"),
        ({"search_dim": 2.5}, "search_dim"),
        ({"bank_dtype": "bfloat16"}, "bank_dtype"),
        ({"search_dim": 8, "knn": "faiss-flat"}, "search_dim"),
    ],
)
def test_bad_search_settings_are_refused_before_any_work(params, message):
    from dualpatch import PatchCore

    with pytest.raises(ConfigError, match=message):
        PatchCore(**params).check_params()
