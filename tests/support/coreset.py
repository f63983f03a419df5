"""A reference for the coreset tests (tests/unit/memory/): textbook greedy k-center selection."""

from __future__ import annotations

import torch

from dualpatch.bank.memory import random_projection


def brute_force_k_center(
    features: torch.Tensor, n_select: int, projection_dim: int | None, seed: int
) -> list[int]:
    """Textbook farthest-point selection on a full pairwise distance matrix (float64)."""
    x = features.float()
    if projection_dim and x.shape[1] > projection_dim:
        x = x @ random_projection(x.shape[1], projection_dim, seed)
    x = x.double()
    dist = torch.cdist(x, x)
    gen = torch.Generator().manual_seed(seed)
    selected = [int(torch.randint(x.shape[0], (1,), generator=gen))]
    while len(selected) < n_select:
        nearest_center = dist[:, selected].min(dim=1).values
        selected.append(int(nearest_center.argmax()))
    return selected


# -- generators for the approximate coreset's claims (tests and benchmarks/approx_claims.py) ----
def clustered(n: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    """Gaussian blobs of unequal spread: k-center has real structure to find."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=gen) * 6
    which = torch.randint(clusters, (n,), generator=gen)
    spread = torch.rand(clusters, generator=gen)[which, None] + 0.2
    return centres[which] + torch.randn(n, dim, generator=gen) * spread


def curve(n: int, dim: int, seed: int) -> torch.Tensor:
    """A smooth closed 1-D curve in ``dim`` dimensions (three random harmonics), light noise."""
    import math

    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=gen)[:, None] * 2 * math.pi
    k = torch.arange(1, 4, dtype=torch.float32)
    a, b = torch.randn(3, dim, generator=gen), torch.randn(3, dim, generator=gen)
    x = torch.sin(t * k) @ a + torch.cos(t * k) @ b
    return x * 4 + 0.01 * torch.randn(n, dim, generator=gen)


def uniform(n: int, dim: int, seed: int) -> torch.Tensor:
    """A uniform cube: no structure at all."""
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) * 10


#: name -> (n, dim, seed) -> rows, as benchmarks/approx_claims.py measures them
GENERATORS = {
    "blobs12": lambda n, dim, seed: clustered(n, dim, 12, seed),
    "blobs30": lambda n, dim, seed: clustered(n, dim, 30, seed),
    "curve": curve,
    "uniform": uniform,
}
