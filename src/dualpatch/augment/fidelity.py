"""How near are generated defect patches to real ones? Metrics on (N, D) feature sets.

All metrics compare a *fake* set (generated, or any candidate source) with a *real* reference set
(real test defect patches, never seen in training or sampling), both as rows of patch features:

- ``mean_nearest_distance``: the mean distance from each fake row to its nearest real row;
- ``precision_recall`` (Kynkäänniemi et al. 2019): each set's manifold is the union of balls around
  its rows with radius the distance to the row's k-th nearest neighbour in the same set; precision
  is the share of fake rows inside the real manifold, recall the share of real rows inside the fake
  manifold;
- ``density_coverage`` (Naeem et al. 2020): density counts, per fake row, how many real balls hold
  it (divided by k, so about 1 when the two sets come from one distribution); coverage is the share
  of real rows whose ball holds at least one fake row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: neighbourhood size of the radii; both papers use k = 5
K = 5


def _as_array(x) -> np.ndarray:
    """A float64 (N, D) array from a numpy array or torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, D) feature set, got shape {x.shape}")
    return x


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact Euclidean distances (difference form, not the dot-product shortcut): a point's
    distance to itself is exactly 0 and d(a, b) == d(b, a), so ball tests agree across sets."""
    from scipy.spatial.distance import cdist

    return cdist(a, b)


def _radii(x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest other row of ``x``."""
    if x.shape[0] <= k:
        raise ValueError(f"need more than k={k} rows to set k-NN radii, got {x.shape[0]}")
    out = np.empty(x.shape[0])
    for start in range(0, x.shape[0], chunk):
        d = _pairwise(x[start : start + chunk], x)
        # index k: index 0 is the row itself at distance 0
        out[start : start + chunk] = np.partition(d, k, axis=1)[:, k]
    return out


def mean_nearest_distance(fake, real) -> float:
    """Mean distance from each ``fake`` row to its nearest ``real`` row (lower is nearer)."""
    fake, real = _as_array(fake), _as_array(real)
    return float(_pairwise(fake, real).min(axis=1).mean())


def precision_recall(fake, real, k: int = K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN radii."""
    fake, real = _as_array(fake), _as_array(real)
    d = _pairwise(fake, real)  # (n_fake, n_real)
    precision = float((d <= _radii(real, k)[None, :]).any(axis=1).mean())
    recall = float((d <= _radii(fake, k)[:, None]).any(axis=0).mean())
    return precision, recall


def density_coverage(fake, real, k: int = K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) with the real set's k-NN radii."""
    fake, real = _as_array(fake), _as_array(real)
    inside = _pairwise(fake, real) <= _radii(real, k)[None, :]  # fake i in real ball j
    density = float(inside.sum() / (k * fake.shape[0]))
    coverage = float(inside.any(axis=0).mean())
    return density, coverage


@dataclass(frozen=True)
class Fidelity:
    n: int
    mean_nn_distance: float
    precision: float
    recall: float
    density: float
    coverage: float

    def to_json(self) -> dict:
        return asdict(self)


def fidelity(fake, real, k: int = K) -> Fidelity:
    """All metrics of ``fake`` against ``real`` in one record (``n`` = number of fake rows)."""
    fake, real = _as_array(fake), _as_array(real)
    precision, recall = precision_recall(fake, real, k)
    density, coverage = density_coverage(fake, real, k)
    return Fidelity(
        fake.shape[0], mean_nearest_distance(fake, real), precision, recall, density, coverage
    )
