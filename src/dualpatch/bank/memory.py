"""Memory bank: greedy k-center coreset on a seeded random projection, and chunked k-NN.

The coreset is exact greedy k-center (``coreset="greedy"``) or, for large inputs, greedy that
narrows the rows it updates as its picks double (``coreset="approx"``, ``narrowed_kcenter``):
about a third of exact greedy's work; the same picks at a 1 % coreset on the generated 666-image
set, not in general (94.4-94.8 % of them at 10 %; docs/large-data.md), and linear in the number of
patches past a fixed row budget. k-NN search is exact (torch, or
faiss's flat index) or approximate (faiss IVF, for banks of millions of rows).
"""

from __future__ import annotations

import math

import torch

from dualpatch.bank import query_memo

# the k-NN search (neighbours.py) and a repeated query answered from memory (few-shot
# comparisons, query_memo.py) are their own modules; re-exported here for callers
from dualpatch.bank.neighbours import (  # noqa: F401
    KNN_BLOCK,
    KNN_BUDGET,
    CentredBank,
    centred,
    chunk_plan,
    faiss_index,
    faiss_knn,
    knn,
    knn_distances_chunked,
    knn_distances_one_block,
    pca_basis,
    require_faiss,
)
from dualpatch.bank.query_memo import remembered_queries  # noqa: F401
from dualpatch.defaults import BANK_DTYPES, CORESET_METHODS, KNN_METHODS, NORMAL_CORESET
from dualpatch.errors import ConfigError, DataError

#: Rows projected at a time. Fixed chunks aligned to row 0 make the projection of a row the same
#: whichever path computes it (in memory, or read back from an on-disk feature store).
PROJECT_CHUNK = 65536
#: the coreset methods by name, and KNN_METHODS: kept in defaults.py, where the config and the CLI
#: read them without loading torch; each is implemented below
CORESETS = CORESET_METHODS
#: Greedy k-center: candidates per pass, and rows per distance-update block (64 MiB at most).
GREEDY_CANDIDATES = 1024
GREEDY_CHUNK = 16384
#: ``coreset="approx"`` (``narrowed_kcenter``): the most rows kept after the first narrowing, the
#: least multiple of the picks still to make that is kept, the share of the picks made over all
#: rows (and its most), and the margin under the estimated final radius below which a row is
#: dropped. Chosen on the k-center radius against exact greedy over training patches
#: (benchmarks/coreset_scaling.py --tune), never on test labels.
APPROX_SAMPLE = 1048576
APPROX_OVERSAMPLE = 4
APPROX_FIRST = 0.0625
APPROX_FIRST_PICKS = 4096
APPROX_MARGIN = 0.97


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


def _greedy_start(x: torch.Tensor, seed: int):
    """(x as float32, squared norms, the seeded first pick, squared distances to it)."""
    n = x.shape[0]
    x = x.float().contiguous()
    # squared norms chunk by chunk: (x * x) whole would be a second copy of x at its peak
    sq = torch.empty(n)
    for start in range(0, n, GREEDY_CHUNK):
        part = x[start : start + GREEDY_CHUNK]
        sq[start : start + GREEDY_CHUNK] = (part * part).sum(1)
    gen = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    return x, sq, first, sq + sq[first] - 2 * (x @ x[first])


def _greedy_passes(x, sq, min_d, n_picks: int, progress=None) -> list[int]:
    """The next ``n_picks`` greedy picks among rows of ``x``, whose squared distances to the picks
    so far are ``min_d`` (updated in place), in passes (see ``greedy_kcenter``)."""
    n, selected = x.shape[0], []
    while len(selected) < n_picks:
        n_cand = min(n, GREEDY_CANDIDATES)
        cand_d, cand = torch.topk(min_d, n_cand)
        # no row outside the candidates is farther than this; a candidate below it may not be next
        outside = float(cand_d[-1]) if n_cand < n else float("-inf")
        xc, sqc = x[cand], sq[cand]
        picks: list[int] = []
        while len(selected) + len(picks) < n_picks:
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
    return selected


def greedy_kcenter(x: torch.Tensor, n_select: int, seed: int = 0, progress=None) -> torch.Tensor:
    """Greedy k-center (farthest-point) on rows of ``x`` (already projected): indices, in order.

    Gonzalez's algorithm (radius at most twice the optimum), computed in passes: each pass takes
    the ``GREEDY_CANDIDATES`` rows farthest from the picks so far and keeps picking the farthest
    candidate while it is still farther than every row outside the candidates (whose distances
    can only shrink), so every pick is the one plain greedy makes; then all rows' distances are
    updated with one matrix product per chunk instead of one matrix-vector product per pick.
    """
    if n_select >= x.shape[0]:
        return torch.arange(x.shape[0])
    x, sq, first, min_d = _greedy_start(x, seed)
    return torch.tensor([first, *_greedy_passes(x, sq, min_d, n_select - 1, progress)])


def narrowed_kcenter(
    x: torch.Tensor,
    n_select: int,
    seed: int = 0,
    progress=None,
    max_rows: int | None = None,
    report: dict | None = None,
    overwrite: bool = False,
) -> torch.Tensor:
    """Approximate greedy k-center that updates fewer rows each time its picks double.

    The first picks (``APPROX_FIRST`` of them, at most ``APPROX_FIRST_PICKS``) are exact
    greedy's, over all rows. Then, at each doubling of the picks, the rows already closer to a
    pick than ``APPROX_MARGIN`` x the estimated final radius are dropped, and at most
    ``max_rows`` (the farthest; ``APPROX_SAMPLE`` unless given) are kept. Greedy's radius falls
    as a power of the picks (on the generated 666-image set, about p^-0.1), so its decay over the
    last doubling extrapolates to the final radius. A dropped row stays as close as it was, so
    the radius over all rows is at most max(the kept rows' final radius, the largest dropped
    distance): ``report`` gets it (``radius_bound``) and the row updates done, against exact
    greedy's rows x picks. The kept rows are moved to the front of ``x`` in place, so memory never
    holds a second copy: ``overwrite=False`` (the default) works on a copy of ``x``.
    """
    n = x.shape[0]
    if n_select >= n or n_select < 4:
        return greedy_kcenter(x, n_select, seed, progress)
    x, sq, first, min_d = _greedy_start(x if overwrite else x.clone(), seed)
    rows, chosen, max_rows = torch.arange(n), [first], max_rows or APPROX_SAMPLE
    done = min(n_select, max(2, min(math.ceil(APPROX_FIRST * n_select), APPROX_FIRST_PICKS)))
    chosen += _greedy_passes(x, sq, min_d, done // 2 - 1, progress)
    r_half, half = float(min_d.max()), done // 2
    chosen += _greedy_passes(x, sq, min_d, done - half, progress)
    updates, dropped = n * done, 0.0
    while done < n_select:
        r_done = float(min_d.max())
        alpha = math.log(max(r_half, 1e-12) / max(r_done, 1e-12)) / math.log(done / half) / 2
        estimate = r_done * (done / n_select) ** (2 * min(max(alpha, 0.0), 1.0))
        keep = _rows_to_keep(min_d, APPROX_MARGIN**2 * estimate, n_select - done, max_rows)
        if len(keep) < len(min_d):
            dropped = max(dropped, float(min_d[_complement(keep, len(min_d))].max()))
        x, sq, min_d, rows = (_compact(t, keep) for t in (x, sq, min_d, rows))
        target, half, r_half = min(2 * done, n_select), done, r_done
        chosen += rows[_greedy_passes(x, sq, min_d, target - done, progress)].tolist()
        updates += len(rows) * (target - done)
        done = target
    if report is not None:
        report["radius_bound"] = math.sqrt(max(dropped, float(min_d.max()), 0.0))
        report["row_updates"], report["exact_row_updates"] = updates, n * n_select
    return torch.tensor(chosen)


def _rows_to_keep(min_d: torch.Tensor, below: float, picks_left: int, max_rows: int):
    """Row numbers (ascending) farther than ``below`` (squared), at most ``max_rows`` but at least
    ``APPROX_OVERSAMPLE`` per pick still to make: the farthest when a bound applies."""
    far = int((min_d > below).sum())
    count = max(min(far, max_rows), min(len(min_d), APPROX_OVERSAMPLE * picks_left))
    if count == far:
        return (min_d > below).nonzero().squeeze(1)
    return torch.topk(min_d, count).indices.sort().values


def _compact(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``t[keep]`` written over the first rows of ``t``, chunk by chunk. ``keep`` ascends, so
    ``keep[j] >= j``: each chunk reads rows no earlier chunk has overwritten."""
    for start in range(0, len(keep), GREEDY_CHUNK):
        chunk = keep[start : start + GREEDY_CHUNK]
        t[start : start + len(chunk)] = t[chunk]
    return t[: len(keep)]


def _complement(keep: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[keep] = False
    return mask


def approx_settings() -> list:
    """The approximate coreset's settings: part of a shared normal bank's key, so every constant
    that shapes its picks is here (changing one then misses, never reuses, an older bank)."""
    constants = [APPROX_SAMPLE, APPROX_FIRST, APPROX_FIRST_PICKS, APPROX_MARGIN, APPROX_OVERSAMPLE]
    return ["narrowed", *constants]


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

    ``method="greedy"``: exact greedy over all rows, O(N^2 * ratio). ``method="approx"``:
    ``narrowed_kcenter``, keeping at most ``sample_budget`` rows (``APPROX_SAMPLE``) after its
    first ``APPROX_FIRST_PICKS`` picks at most, so O(N * (first picks + budget * ratio)).
    """
    if method not in CORESETS:
        raise ConfigError(f"unknown coreset {method!r} (choose from {', '.join(CORESETS)})")
    n = features.shape[0]
    if n_select >= n:
        return torch.arange(n)
    x = project(features, projection_for(features.shape[1], projection_dim, seed))
    if method == "approx":
        return narrowed_kcenter(x, n_select, seed, progress, sample_budget, overwrite=True)
    return greedy_kcenter(x, n_select, seed, progress)


def kcenter_radius(x: torch.Tensor, centres: torch.Tensor) -> float:
    """Max over rows of ``x`` of the distance to the nearest of rows ``centres``: the k-center
    objective (in whatever space ``x`` is, e.g. the coreset's projection)."""
    dist, _ = knn(x, x[centres], 1)
    return float(dist.max())


class MemoryBank:
    """Patch features kept for nearest-neighbour search, subsampled by k-center.

    ``coreset_ratio`` of the patches are kept, but never fewer than ``min_size`` (or all, if
    there are fewer) and never more than ``max_rows`` (a row budget; None: none). ``coreset`` is
    ``"greedy"`` (exact) or ``"approx"`` (``narrowed_kcenter``); ``knn`` is ``"torch"`` (exact),
    ``"faiss-flat"`` (exact) or ``"faiss-ivf"`` (approximate). ``bank_dtype`` ("float32" or
    "float16") is how the rows are stored (searched in float32). ``search_dim``: rank neighbours
    in the bank's ``search_dim`` leading principal axes (fitted on its rows, which are training
    patches) instead of all D, and measure the chosen neighbours' distances in full (None: rank
    in full). Learned state: ``bank_`` (M, D).
    """

    def __init__(
        self,
        coreset_ratio: float = NORMAL_CORESET,
        min_size: int = 1000,
        projection_dim: int | None = 128,
        seed: int = 0,
        coreset: str = "greedy",
        knn: str = "torch",
        max_rows: int | None = None,
        bank_dtype: str = "float32",
        search_dim: int | None = None,
    ):
        self.coreset_ratio = coreset_ratio
        self.min_size = min_size
        self.projection_dim = projection_dim
        self.seed = seed
        self.coreset = coreset
        self.knn = knn
        self.max_rows = max_rows
        self.bank_dtype = bank_dtype
        self.search_dim = search_dim

    @property
    def bank_(self) -> torch.Tensor:
        return self._bank

    @bank_.setter
    def bank_(self, rows: torch.Tensor) -> None:
        # every way a bank is set (fit, load, a shared bank, rows added on the line) stores it
        # in bank_dtype, so a float16 bank never grows float32 rows
        if self.bank_dtype not in BANK_DTYPES:
            raise ConfigError(
                f"unknown bank_dtype {self.bank_dtype!r} (choose from {', '.join(BANK_DTYPES)})"
            )
        self._bank = rows.to(getattr(torch, self.bank_dtype)).contiguous()

    def target_size(self, n: int) -> int:
        size = min(n, max(int(math.ceil(self.coreset_ratio * n)), self.min_size))
        return size if self.max_rows is None else min(size, self.max_rows)

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
        self.bank_ = features[idx].float()
        return self

    def search_basis(self) -> torch.Tensor | None:
        """(D, search_dim) principal axes of the bank's rows that ``knn`` ranks in, or None
        (rank in full). Computed once per bank, from its rows only: a saved model needs no more
        than its banks, and the exported graph holds the same axes."""
        dim = self.search_dim
        if not dim or dim >= self.bank_.shape[1]:
            return None
        cached = getattr(self, "_basis", None)
        if cached is None or cached[0] is not self.bank_:
            self._basis = cached = (self.bank_, pca_basis(self.bank_, dim))
        return cached[1]

    def query(self, features: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        memo = query_memo.active()
        if memo is None:
            return self._search(features, k)
        cached = getattr(self, "_digest", None)
        if cached is None or cached[0] is not self.bank_:  # a bank's digest: once per bank
            self._digest = cached = (self.bank_, query_memo.values_digest(self.bank_))
        digest = query_memo.values_digest(features)
        key = (cached[1], self.knn, self.search_dim, self.seed, k, tuple(features.shape), digest)
        return query_memo.answer(memo, key, lambda: self._search(features, k))  # type: ignore[return-value]

    def _search(self, features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.knn == "torch":
            return knn(features, self._centred(), k, basis=self.search_basis())
        if self.knn not in KNN_METHODS:
            raise ConfigError(f"unknown knn {self.knn!r} (choose from {', '.join(KNN_METHODS)})")
        if self.bank_.shape[0] == 0:
            raise DataError("memory bank is empty: nothing to compare against")
        cached = getattr(self, "_index", None)
        if cached is None or cached[0] is not self.bank_ or cached[1] != self.knn:
            self._index = (self.bank_, self.knn, faiss_index(self.bank_, self.knn, self.seed))
        return faiss_knn(self._index[2], features, k)

    def _centred(self) -> CentredBank:
        """The bank centred for ``knn``: once per bank (a new ``bank_`` gets its own)."""
        cached = getattr(self, "_centred_bank", None)
        if cached is None or cached[0] is not self.bank_:
            self._centred_bank = cached = (self.bank_, centred(self.bank_))
        return cached[1]


def continued_kcenter(
    bank: torch.Tensor,
    new: torch.Tensor,
    n_select: int,
    projection_dim: int | None = 128,
    seed: int = 0,
) -> torch.Tensor:
    """Indices of at most ``n_select`` rows of ``new`` chosen by greedy k-center continued from
    the rows of ``bank``: each pick is the new row farthest (in the coreset's seeded projection)
    from the bank and the picks so far, as if the greedy selection had kept going after the bank.
    No random start: the bank is the start. Rows already in the bank (distance 0) are never
    picked, so a repeated image adds nothing."""
    if n_select <= 0 or new.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    matrix = projection_for(new.shape[1], projection_dim, seed)
    x, xb = project(new, matrix), project(bank, matrix)
    min_d = knn(x, xb, 1)[0][:, 0].square()
    n_select = min(n_select, int((min_d > 0).sum()))
    if n_select == 0:
        return torch.zeros(0, dtype=torch.long)
    sq = (x * x).sum(1)
    return torch.tensor(_greedy_passes(x, sq, min_d, n_select), dtype=torch.long)
