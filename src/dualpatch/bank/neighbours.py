"""Nearest-neighbour search over a memory bank: exact chunked k-NN in torch (memory bounded by a
byte budget whatever the sizes), optionally ranked in a learned projection (``search_dim``), and
faiss's exact flat or approximate IVF index for banks of millions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dualpatch.defaults import KNN_METHODS, SEARCH_BUDGET
from dualpatch.errors import ConfigError, DataError

#: Bytes one block of float32 distances may take: the search's memory bound whatever the sizes
#: (the torch search and the exported graph plan their chunks from it: ``chunk_plan``).
KNN_BUDGET = SEARCH_BUDGET
#: the same bound in float32 elements (the unit of ``knn``'s ``block``)
KNN_BLOCK = KNN_BUDGET // 4
#: the fewest bank rows per block: below this the per-block overhead dominates the arithmetic
MIN_BANK_CHUNK = 256
#: ``knn="faiss-ivf"``: inverted lists probed per query.
IVF_NPROBE = 8
IVF_MAX_LISTS = 1024


def chunk_plan(n_query: int, n_bank: int, budget: int = KNN_BUDGET) -> tuple[int, int]:
    """(query rows, bank rows) per block so that one block's float32 distances, query rows x bank
    rows x 4 bytes, fit in ``budget`` bytes (one row of each at least)."""
    elements = max(1, budget // 4)
    bank_chunk = max(1, min(n_bank, elements // MIN_BANK_CHUNK))
    query_chunk = max(1, min(n_query, elements // bank_chunk))
    return query_chunk, bank_chunk


def graph_bank_chunk(query_rows: int, n_bank: int, budget: int = KNN_BUDGET) -> int:
    """Bank rows per chunk of the exported graph's search: its batch size is free, so the chunk
    is planned for ``query_rows`` query rows (a planned batch's patches), whose float32 ranking
    values against one chunk fit in ``budget`` bytes."""
    return max(1, min(n_bank, budget // (4 * max(1, query_rows))))


def pca_basis(bank: torch.Tensor, dim: int) -> torch.Tensor:
    """(D, dim) float32: the ``dim`` leading principal axes of the bank's rows (training patches),
    columns by decreasing variance, each signed so that its largest entry is positive (the same
    basis on every machine that computes the same eigenvectors)."""
    x = bank.double() - bank.double().mean(0)
    values, vectors = torch.linalg.eigh(x.T @ x)
    axes = vectors[:, torch.argsort(values, descending=True)[:dim]]
    signs = torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    return (axes * torch.where(signs == 0, 1.0, signs)).float().contiguous()


def knn_distances_one_block(query: torch.Tensor, bank: torch.Tensor, k: int = 1) -> torch.Tensor:
    """(n, k) distances of each query row to its k nearest bank rows, without chunking loops.

    ``knn``'s arithmetic in one block: rank by |b|^2 - 2 q.b, then compute the chosen neighbours'
    distances directly. As in ``knn``, callers centre both sides on the bank's mean first (float32
    cancellation). The exported graph uses ``knn_distances_chunked`` (bounded memory) instead.
    """
    ranked = torch.addmm((bank * bank).sum(1), query, bank.T, beta=1, alpha=-2)
    index = torch.topk(ranked, k, dim=1, largest=False).indices
    return torch.linalg.vector_norm(query[:, None] - bank[index], dim=-1)


@dataclass(frozen=True)
class CentredBank:
    """A bank as ``knn`` searches it: its mean (``centre``), its rows less the mean (``rows``)
    and their squared norms (``sq``): made once per bank (``MemoryBank`` keeps it), not per
    query."""

    centre: torch.Tensor
    rows: torch.Tensor
    sq: torch.Tensor


def centred(bank: torch.Tensor) -> CentredBank:
    """``bank`` centred on its mean (computed in float64: a float32 sum of millions of rows
    drifts), with the squared norms ``knn`` ranks by."""
    if bank.shape[0] == 0:
        raise DataError("memory bank is empty: nothing to compare against")
    centre = bank.double().mean(0).float()
    rows = bank.float() - centre
    return CentredBank(centre, rows, (rows * rows).sum(1))


def knn_distances_chunked(
    query: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    bank_chunk: int,
    rank_query: torch.Tensor | None = None,
    rank_bank: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, k) distances of each (centred) query row to its k nearest (centred) bank rows, with at
    most n x ``bank_chunk`` ranking values at once: a loop over fixed bank chunks that traces into
    an exported graph whatever the batch size. ``rank_query``/``rank_bank``: the rows to rank in
    (a learned projection of both sides; default the rows themselves); the chosen neighbours'
    distances are always exact, in the full space."""
    rq = query if rank_query is None else rank_query
    rb = bank if rank_bank is None else rank_bank
    best_d, best_i = None, None
    for start in range(0, rb.shape[0], bank_chunk):
        part = rb[start : start + bank_chunk]
        ranked = torch.addmm((part * part).sum(1), rq, part.T, beta=1, alpha=-2)
        d, i = torch.topk(ranked, min(k, part.shape[0]), dim=1, largest=False)
        i = i + start
        if best_d is not None:
            d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
            order = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False).indices
            d, i = d.gather(1, order), i.gather(1, order)
        best_d, best_i = d, i
    dist = torch.linalg.vector_norm(query[:, None] - bank[best_i], dim=-1)
    return dist.sort(dim=1).values if k > 1 else dist


def knn(
    query: torch.Tensor,
    bank: torch.Tensor | CentredBank,
    k: int = 1,
    block: int = KNN_BLOCK,
    basis: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Euclidean k nearest bank rows for each query row: (distances, indices), each (n, k).

    Query and bank are both processed in chunks so that at most ``block`` distances exist at once
    (``chunk_plan``). Neighbours are chosen with |b|^2 - 2 q.b, one matrix product per block; in
    float32 that form cancels badly when the features have large norms, so both sides are first
    centred on the bank's mean (distances do not change) and the chosen neighbours' distances are
    then computed directly as ||q - b||. ``basis`` (D, p): rank in that projection of the centred
    rows instead (approximate: a neighbour may be missed), distances still exact. A float16 bank
    is searched in float32. ``bank`` may be given already centred (``centred``), as a fitted bank
    keeps it.
    """
    prepared = bank if isinstance(bank, CentredBank) else centred(bank)
    bank, bank_sq = prepared.rows, prepared.sq
    k = min(k, bank.shape[0])
    query = query.float() - prepared.centre
    rank_bank = bank if basis is None else bank @ basis
    if basis is not None:  # ranked in the projection: the projected rows' norms
        bank_sq = (rank_bank * rank_bank).sum(1)
    query_chunk, bank_chunk = chunk_plan(query.shape[0], bank.shape[0], block * 4)
    out_d, out_i = [], []
    for qs in range(0, query.shape[0], query_chunk):
        q = query[qs : qs + query_chunk]
        best_i = _ranked(q if basis is None else q @ basis, rank_bank, bank_sq, k, bank_chunk)
        out_d.append(_exact_distances(q, bank, best_i, block))
        out_i.append(best_i)
    dist, idx = torch.cat(out_d), torch.cat(out_i)
    if k > 1:  # the exact distances may reorder near-ties
        dist, order = dist.sort(dim=1)
        idx = idx.gather(1, order)
    return dist, idx


def _ranked(q, bank, bank_sq, k: int, bank_chunk: int) -> torch.Tensor:
    """(n, k) indices of the bank rows nearest each row of ``q``, bank chunk by bank chunk."""
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
    return best_i


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
