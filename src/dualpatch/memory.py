"""Memory bank: greedy k-center coreset on a seeded random projection, and exact chunked k-NN."""

from __future__ import annotations

import math

import torch

from .errors import DataError

#: Elements in one distance block: bounds k-NN memory (64 MiB of float32) whatever the sizes.
KNN_BLOCK = 16 * 1024 * 1024


def random_projection(dim_in: int, dim_out: int, seed: int) -> torch.Tensor:
    """A fixed Gaussian (dim_in, dim_out) matrix; distances are kept up to a small distortion."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=gen) / math.sqrt(dim_out)


def greedy_coreset(
    features: torch.Tensor,
    n_select: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    progress=None,
) -> torch.Tensor:
    """Indices of ``n_select`` rows chosen by greedy k-center (farthest-point) selection.

    Each step is one matrix-vector product over the projected features, so the whole
    selection is O(N * n_select * projection_dim) with no N x N matrix ever formed.
    """
    n = features.shape[0]
    if n_select >= n:
        return torch.arange(n)
    x = features.float()
    if projection_dim and x.shape[1] > projection_dim:
        x = x @ random_projection(x.shape[1], projection_dim, seed)
    x = x.contiguous()
    sq = (x * x).sum(1)
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    selected = torch.empty(n_select, dtype=torch.long)
    selected[0] = first
    min_d = sq + sq[first] - 2 * (x @ x[first])
    d = torch.empty_like(min_d)
    for i in range(1, n_select):
        idx = int(torch.argmax(min_d))
        selected[i] = idx
        # d = |x|^2 + |c|^2 - 2 x.c, computed in place to avoid a fresh N-vector per step
        torch.addmv(sq, x, x[idx], beta=1, alpha=-2, out=d)
        d += sq[idx]
        torch.minimum(min_d, d, out=min_d)
        if progress is not None:
            progress(1)
    return selected


def knn(
    query: torch.Tensor, bank: torch.Tensor, k: int = 1, block: int = KNN_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Euclidean k nearest bank rows for each query row: (distances, indices), each (n, k).

    Query and bank are both processed in chunks so that at most ``block`` distances exist at once.
    Neighbours are chosen with |b|^2 - 2 q.b, one matrix product per block; in float32 that form
    cancels badly when the features have large norms, so both sides are first centred on the bank's
    mean (distances do not change) and the chosen neighbours' distances are then computed directly
    as ||q - b||.
    """
    if bank.shape[0] == 0:
        raise DataError("memory bank is empty: nothing to compare against")
    k = min(k, bank.shape[0])
    centre = bank.double().mean(0).float()
    query, bank = query.float() - centre, bank.float() - centre
    bank_sq = (bank * bank).sum(1)
    bank_chunk = max(1, min(bank.shape[0], block // 256))
    query_chunk = max(1, block // bank_chunk)
    out_d, out_i = [], []
    for qs in range(0, query.shape[0], query_chunk):
        q = query[qs : qs + query_chunk]
        best_d = torch.full((q.shape[0], k), float("inf"))
        best_i = torch.zeros((q.shape[0], k), dtype=torch.long)
        for bs in range(0, bank.shape[0], bank_chunk):
            b = bank[bs : bs + bank_chunk]
            # |b|^2 - 2 q.b ranks bank rows like the distance does
            d = torch.addmm(bank_sq[bs : bs + bank_chunk], q, b.T, beta=1, alpha=-2)
            if k == 1:
                cd, ci = d.min(dim=1, keepdim=True)
                closer = cd < best_d
                best_d = torch.where(closer, cd, best_d)
                best_i = torch.where(closer, ci + bs, best_i)
                continue
            cd, ci = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
            cand_d, cand_i = torch.cat([best_d, cd], 1), torch.cat([best_i, ci + bs], 1)
            order = torch.topk(cand_d, k, dim=1, largest=False).indices
            best_d, best_i = cand_d.gather(1, order), cand_i.gather(1, order)
        out_d.append(_exact_distances(q, bank, best_i, block))
        out_i.append(best_i)
    dist, idx = torch.cat(out_d), torch.cat(out_i)
    if k > 1:  # the exact distances may reorder near-ties
        dist, order = dist.sort(dim=1)
        idx = idx.gather(1, order)
    return dist, idx


def _exact_distances(q: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, block: int):
    """||q_i - bank[index[i, j]]|| for (n, k) ``index``, in slices of at most ``block`` values."""
    n, k = index.shape
    rows = max(1, block // max(1, k * bank.shape[1]))
    return torch.cat(
        [
            torch.linalg.vector_norm(q[s : s + rows, None] - bank[index[s : s + rows]], dim=-1)
            for s in range(0, n, rows)
        ]
    )


class MemoryBank:
    """Patch features kept for nearest-neighbour search, subsampled by greedy k-center.

    ``coreset_ratio`` of the patches are kept, but never fewer than ``min_size`` (or all, if
    there are fewer). Learned state: ``bank_`` (M, D).
    """

    def __init__(
        self,
        coreset_ratio: float = 0.01,
        min_size: int = 1000,
        projection_dim: int | None = 128,
        seed: int = 0,
    ):
        self.coreset_ratio = coreset_ratio
        self.min_size = min_size
        self.projection_dim = projection_dim
        self.seed = seed

    def target_size(self, n: int) -> int:
        return min(n, max(int(math.ceil(self.coreset_ratio * n)), self.min_size))

    def fit(self, features: torch.Tensor, progress=None) -> MemoryBank:
        if features.ndim != 2 or features.shape[0] == 0:
            raise DataError(
                f"memory bank needs a non-empty (N, D) feature matrix, got {tuple(features.shape)}"
            )
        if not torch.isfinite(features).all():
            raise DataError("features contain NaN or infinite values")
        idx = greedy_coreset(
            features, self.target_size(features.shape[0]), self.projection_dim, self.seed, progress
        )
        self.bank_ = features[idx].contiguous().float()
        return self

    def query(self, features: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return knn(features, self.bank_, k)
