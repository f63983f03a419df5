"""Nearest-neighbour search over a memory bank: exact chunked k-NN in torch (bounded memory
whatever the sizes), and faiss's exact flat or approximate IVF index for banks of millions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dualpatch.defaults import KNN_METHODS
from dualpatch.errors import ConfigError, DataError

#: Elements in one distance block: bounds k-NN memory (64 MiB of float32) whatever the sizes.
KNN_BLOCK = 16 * 1024 * 1024
#: ``knn="faiss-ivf"``: inverted lists probed per query.
IVF_NPROBE = 8
IVF_MAX_LISTS = 1024


def knn_distances_one_block(query: torch.Tensor, bank: torch.Tensor, k: int = 1) -> torch.Tensor:
    """(n, k) distances of each query row to its k nearest bank rows, without chunking loops.

    ``knn``'s arithmetic in one block, so that it traces into an exported graph whatever the batch
    size: rank by |b|^2 - 2 q.b, then compute the chosen neighbours' distances directly. As in
    ``knn``, callers centre both sides on the bank's mean first (float32 cancellation).
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


def knn(
    query: torch.Tensor, bank: torch.Tensor | CentredBank, k: int = 1, block: int = KNN_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Euclidean k nearest bank rows for each query row: (distances, indices), each (n, k).

    Query and bank are both processed in chunks so that at most ``block`` distances exist at once.
    Neighbours are chosen with |b|^2 - 2 q.b, one matrix product per block; in float32 that form
    cancels badly when the features have large norms, so both sides are first centred on the bank's
    mean (distances do not change) and the chosen neighbours' distances are then computed directly
    as ||q - b||. ``bank`` may be given already centred (``centred``), as a fitted bank keeps it.
    """
    prepared = bank if isinstance(bank, CentredBank) else centred(bank)
    bank, bank_sq = prepared.rows, prepared.sq
    k = min(k, bank.shape[0])
    query = query.float() - prepared.centre
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
