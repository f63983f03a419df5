"""Memory bank: greedy k-center coreset on a seeded random projection, and chunked k-NN.

The coreset is exact greedy k-center (``coreset="greedy"``) or, for large inputs, greedy on a
seeded random pre-sample of a fixed number of rows (``coreset="approx"``), whose cost grows
linearly with the number of patches instead of quadratically. k-NN search is exact (torch, or
faiss's flat index) or approximate (faiss IVF, for banks of millions of rows).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import query_memo
from .defaults import CORESET_METHODS, KNN_METHODS, NORMAL_CORESET
from .errors import ConfigError, DataError

# a repeated query answered from memory (few-shot comparisons); re-exported for callers
from .query_memo import remembered_queries  # noqa: F401

#: Elements in one distance block: bounds k-NN memory (64 MiB of float32) whatever the sizes.
KNN_BLOCK = 16 * 1024 * 1024
#: Rows projected at a time. Fixed chunks aligned to row 0 make the projection of a row the same
#: whichever path computes it (in memory, or read back from an on-disk feature store).
PROJECT_CHUNK = 65536
#: the coreset methods by name, and KNN_METHODS: kept in defaults.py, where the config and the CLI
#: read them without loading torch; each is implemented below
CORESETS = CORESET_METHODS
#: Greedy k-center: candidates per pass, and rows per distance-update block (64 MiB at most).
GREEDY_CANDIDATES = 1024
GREEDY_CHUNK = 16384
#: ``coreset="approx"``: rows kept by the pre-sample, and the least multiple of the picks kept.
APPROX_SAMPLE = 65536
APPROX_OVERSAMPLE = 4
#: ``knn="faiss-ivf"``: inverted lists probed per query.
IVF_NPROBE = 8
IVF_MAX_LISTS = 1024


def random_projection(dim_in: int, dim_out: int, seed: int) -> torch.Tensor:
    """A fixed Gaussian (dim_in, dim_out) matrix; distances are kept up to a small distortion."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=gen) / math.sqrt(dim_out)


def projection_for(dim: int, projection_dim: int | None, seed: int) -> torch.Tensor | None:
    """The coreset's projection matrix for ``dim``-d features, or None when it would not shrink."""
    if projection_dim and dim > projection_dim:
        return random_projection(dim, projection_dim, seed)
    return None


def project(features: torch.Tensor, matrix: torch.Tensor | None) -> torch.Tensor:
    """(N, p) float32 projection of ``features``, computed in fixed chunks of rows."""
    if matrix is None:
        return features.float().contiguous()
    out = torch.empty(features.shape[0], matrix.shape[1])
    for start in range(0, features.shape[0], PROJECT_CHUNK):
        rows = features[start : start + PROJECT_CHUNK]
        torch.mm(torch.as_tensor(rows).float(), matrix, out=out[start : start + PROJECT_CHUNK])
    return out


def greedy_kcenter(x: torch.Tensor, n_select: int, seed: int = 0, progress=None) -> torch.Tensor:
    """Greedy k-center (farthest-point) on rows of ``x`` (already projected): indices, in order.

    Gonzalez's algorithm (radius at most twice the optimum), computed in passes: each pass takes
    the ``GREEDY_CANDIDATES`` rows farthest from the picks so far and keeps picking the farthest
    candidate while it is still farther than every row outside the candidates (whose distances
    can only shrink), so every pick is the one plain greedy makes; then all rows' distances are
    updated with one matrix product per chunk instead of one matrix-vector product per pick.
    """
    n = x.shape[0]
    if n_select >= n:
        return torch.arange(n)
    x = x.float().contiguous()
    # squared norms chunk by chunk: (x * x) whole would be a second copy of x at its peak
    sq = torch.empty(n)
    for start in range(0, n, GREEDY_CHUNK):
        part = x[start : start + GREEDY_CHUNK]
        sq[start : start + GREEDY_CHUNK] = (part * part).sum(1)
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    selected = [first]
    min_d = sq + sq[first] - 2 * (x @ x[first])
    while len(selected) < n_select:
        n_cand = min(n, GREEDY_CANDIDATES)
        cand_d, cand = torch.topk(min_d, n_cand)
        # no row outside the candidates is farther than this; a candidate below it may not be next
        outside = float(cand_d[-1]) if n_cand < n else float("-inf")
        xc, sqc = x[cand], sq[cand]
        picks: list[int] = []
        while len(selected) + len(picks) < n_select:
            j = int(torch.argmax(cand_d))
            if picks and float(cand_d[j]) <= outside:
                break
            picks.append(j)
            torch.minimum(cand_d, sqc + sqc[j] - 2 * (xc @ xc[j]), out=cand_d)
        chosen = cand[torch.tensor(picks)]
        xp, sqp = x[chosen], sq[chosen]
        for start in range(0, n, GREEDY_CHUNK):
            stop = min(n, start + GREEDY_CHUNK)
            d = torch.addmm(sqp[None, :], x[start:stop], xp.T, beta=1, alpha=-2)
            d += sq[start:stop, None]
            torch.minimum(min_d[start:stop], d.min(1).values, out=min_d[start:stop])
        selected += chosen.tolist()
        if progress is not None:
            progress(len(picks))
    return torch.tensor(selected, dtype=torch.long)


def approx_sample_size(n: int, n_select: int, budget: int | None = None) -> int:
    """Rows the approximate coreset keeps: a fixed budget, but at least a few times the picks."""
    budget = APPROX_SAMPLE if budget is None else budget
    return min(n, max(budget, APPROX_OVERSAMPLE * n_select))


def presample(n: int, size: int, seed: int) -> torch.Tensor:
    """A seeded uniform sample of ``size`` of ``n`` row numbers, ascending (sequential reads)."""
    if size >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed + 1)  # not the start point's stream
    return torch.randperm(n, generator=gen)[:size].sort().values


def greedy_coreset(
    features: torch.Tensor,
    n_select: int,
    projection_dim: int | None = 128,
    seed: int = 0,
    progress=None,
    method: str = "greedy",
    sample_budget: int | None = None,
) -> torch.Tensor:
    """Indices of ``n_select`` rows chosen by k-center on the seeded projection of ``features``.

    ``method="greedy"``: exact greedy over all rows, O(N^2 * ratio). ``method="approx"``: greedy
    over a seeded pre-sample of ``approx_sample_size`` rows, O(N * budget * ratio).
    """
    if method not in CORESETS:
        raise ConfigError(f"unknown coreset {method!r} (choose from {', '.join(CORESETS)})")
    n = features.shape[0]
    if n_select >= n:
        return torch.arange(n)
    matrix = projection_for(features.shape[1], projection_dim, seed)
    if method == "approx":
        rows = presample(n, approx_sample_size(n, n_select, sample_budget), seed)
        if len(rows) < n:
            return rows[greedy_kcenter(project(features[rows], matrix), n_select, seed, progress)]
    return greedy_kcenter(project(features, matrix), n_select, seed, progress)


def kcenter_radius(x: torch.Tensor, centres: torch.Tensor) -> float:
    """Max over rows of ``x`` of the distance to the nearest of rows ``centres``: the k-center
    objective (in whatever space ``x`` is, e.g. the coreset's projection)."""
    dist, _ = knn(x, x[centres], 1)
    return float(dist.max())


def knn_distances_one_block(query: torch.Tensor, bank: torch.Tensor, k: int = 1) -> torch.Tensor:
    """(n, k) distances of each query row to its k nearest bank rows, without chunking loops.

    ``knn``'s arithmetic in one block, so that it traces into an exported graph whatever the batch
    size: rank by |b|^2 - 2 q.b, then compute the chosen neighbours' distances directly. As in
    ``knn``, callers centre both sides on the bank's mean first (float32 cancellation).
    """
    ranked = torch.addmm((bank * bank).sum(1), query, bank.T, beta=1, alpha=-2)
    index = torch.topk(ranked, k, dim=1, largest=False).indices
    return torch.linalg.vector_norm(query[:, None] - bank[index], dim=-1)


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


def require_faiss(method: str):
    """The faiss module, or a ConfigError that says how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise ConfigError(
            f"knn {method!r} needs faiss: pip install 'dualpatch[scale]' (faiss-cpu)"
        ) from exc
    return faiss


def faiss_index(bank: torch.Tensor, method: str, seed: int = 0):
    """A faiss index over ``bank``: exact ``IndexFlatL2`` or ``IndexIVFFlat`` (k-means lists).

    Built from the bank tensor whenever needed (never saved: a model file holds no pickled index).
    """
    faiss = require_faiss(method)
    x = np.ascontiguousarray(bank.detach().float().numpy())
    m, dim = x.shape
    if method == "faiss-flat":
        index = faiss.IndexFlatL2(dim)
    elif method == "faiss-ivf":
        # about 4 sqrt(M) lists (at most IVF_MAX_LISTS), with the 39 training points per list that
        # faiss asks for; k-means on a bounded sample, so that a bank of millions builds in seconds
        nlist = max(1, min(int(4 * math.sqrt(m)), m // 39, IVF_MAX_LISTS))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        index.cp.seed = seed
        index.cp.niter = 10
        index.cp.max_points_per_centroid = 64
        index.train(x)
        index.nprobe = min(IVF_NPROBE, nlist)
    else:
        raise ConfigError(f"unknown knn {method!r} (choose from {', '.join(KNN_METHODS)})")
    index.add(x)
    return index


def faiss_knn(index, query: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices) from a faiss index, in ``knn``'s form (Euclidean, not squared)."""
    k = min(k, index.ntotal)
    sq, idx = index.search(np.ascontiguousarray(query.detach().float().numpy()), k)
    return torch.from_numpy(sq).clamp_min_(0).sqrt_(), torch.from_numpy(idx).long()


class MemoryBank:
    """Patch features kept for nearest-neighbour search, subsampled by k-center.

    ``coreset_ratio`` of the patches are kept, but never fewer than ``min_size`` (or all, if
    there are fewer). ``coreset`` is ``"greedy"`` (exact) or ``"approx"`` (pre-sample, then
    greedy); ``knn`` is ``"torch"`` (exact), ``"faiss-flat"`` (exact) or ``"faiss-ivf"``
    (approximate). Learned state: ``bank_`` (M, D).
    """

    def __init__(
        self,
        coreset_ratio: float = NORMAL_CORESET,
        min_size: int = 1000,
        projection_dim: int | None = 128,
        seed: int = 0,
        coreset: str = "greedy",
        knn: str = "torch",
    ):
        self.coreset_ratio = coreset_ratio
        self.min_size = min_size
        self.projection_dim = projection_dim
        self.seed = seed
        self.coreset = coreset
        self.knn = knn

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
            features,
            self.target_size(features.shape[0]),
            self.projection_dim,
            self.seed,
            progress,
            self.coreset,
        )
        self.bank_ = features[idx].contiguous().float()
        return self

    def query(self, features: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        memo = query_memo.active()
        if memo is None:
            return self._search(features, k)
        cached = getattr(self, "_digest", None)
        if cached is None or cached[0] is not self.bank_:  # a bank's digest: once per bank
            self._digest = cached = (self.bank_, query_memo.values_digest(self.bank_))
        digest = query_memo.values_digest(features)
        key = (cached[1], self.knn, self.seed, k, tuple(features.shape), digest)
        return query_memo.answer(memo, key, lambda: self._search(features, k))  # type: ignore[return-value]

    def _search(self, features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.knn == "torch":
            return knn(features, self.bank_, k)
        if self.knn not in KNN_METHODS:
            raise ConfigError(f"unknown knn {self.knn!r} (choose from {', '.join(KNN_METHODS)})")
        if self.bank_.shape[0] == 0:
            raise DataError("memory bank is empty: nothing to compare against")
        cached = getattr(self, "_index", None)
        if cached is None or cached[0] is not self.bank_ or cached[1] != self.knn:
            self._index = (self.bank_, self.knn, faiss_index(self.bank_, self.knn, self.seed))
        return faiss_knn(self._index[2], features, k)
