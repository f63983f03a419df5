"""A reference for the coreset tests (tests/unit/memory/): textbook greedy k-center selection."""

from __future__ import annotations

import torch

from dualpatch.memory import random_projection


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
