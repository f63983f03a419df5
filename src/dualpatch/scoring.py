"""From per-patch distances to anomaly maps and image scores, for one bank or two."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DUAL_RULES = ("patch", "seed", "weighted")


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian of torchvision's ``gaussian_blur`` (its 2-D kernel is the outer
    product of two of these)."""
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float, size: int) -> torch.Tensor:
    """(B, 1, H, W) -> same, blurred with a ``size``-tap Gaussian and reflect padding.

    Equal to torchvision's ``gaussian_blur`` (same kernel, same padding) but separable: two 1-D
    passes of ``size`` taps instead of one ``size``x``size`` 2-D pass (33x33 at sigma 4), which was
    the slowest stage of scoring after the backbone.
    """
    kernel = gaussian_kernel1d(size, sigma).to(maps.dtype)
    pad = size // 2
    maps = F.pad(maps, [pad, pad, pad, pad], mode="reflect")
    maps = F.conv2d(maps, kernel.view(1, 1, size, 1))
    return F.conv2d(maps, kernel.view(1, 1, 1, size))


def anomaly_map(
    patch_scores: torch.Tensor, size: tuple[int, int], sigma: float = 4.0
) -> torch.Tensor:
    """(B, h, w) patch scores -> (B, H, W): bilinear upsampling, then a Gaussian blur."""
    maps = F.interpolate(
        patch_scores[:, None].float(), size=size, mode="bilinear", align_corners=False
    )
    if sigma > 0:
        # reflect padding needs the kernel narrower than twice the image's shorter side
        kernel = min(2 * int(4 * sigma + 0.5) + 1, 2 * min(size) - 1)
        maps = gaussian_blur(maps, sigma, kernel)
    return maps[:, 0]


def max_score(patch_scores: torch.Tensor) -> torch.Tensor:
    """Image score: the largest patch score of each image, (B, h, w) -> (B,)."""
    return patch_scores.flatten(1).amax(1)


def reweighted_score(
    patch_scores: torch.Tensor,
    patch_features: torch.Tensor,
    nearest_index: torch.Tensor,
    bank: torch.Tensor,
    num_neighbors: int = 9,
) -> torch.Tensor:
    """The PatchCore paper's image score: s* scaled by how isolated its nearest bank entry is.

    For each image, take the most anomalous patch and its nearest bank entry m*; with N_b(m*) the
    ``num_neighbors`` bank entries nearest m*, the weight is 1 - softmax(||f* - m||)_{m*}.
    The weight shrinks the score when m* sits in a dense region (the test patch is simply far
    from a well-covered mode) and keeps it when m* is itself an outlier of the bank.

    ``patch_features`` is (B, h*w, D), ``nearest_index`` (B, h*w).
    """
    from .memory import knn

    flat = patch_scores.flatten(1)
    best = flat.argmax(1)
    rows = torch.arange(flat.shape[0])
    f_star = patch_features[rows, best]
    m_star = bank[nearest_index[rows, best]]
    _, support = knn(m_star, bank, k=num_neighbors)
    dists = torch.linalg.vector_norm(bank[support] - f_star[:, None], dim=-1)
    weights = 1 - torch.softmax(dists, dim=1)[:, 0]
    return weights * flat[rows, best]


def dual_patch_ratio(normal_dist: torch.Tensor, defect_dist: torch.Tensor, eps: float = 1e-6):
    """Per-patch distance ratio: > 1 where a patch is nearer the defect bank than normal surface."""
    return normal_dist / (defect_dist + eps)


def dual_scores(
    normal_dist: torch.Tensor, defect_dist: torch.Tensor, rule: str = "patch", eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual-bank scoring of (B, h, w) nearest distances -> (patch map, image score).

    ``patch``: ratio per patch, image score = max of the ratio map.
    ``seed``: the reference implementation: image score = max normal distance / (max defect
    distance + eps); the map is still the per-patch ratio (normal map / defect map).
    ``weighted``: the normal distance scaled by the patch's relative nearness to defects,
    d_n * d_n / (d_n + d_d): it stays an anomaly distance (so maps localise like the single
    bank's) while patches that resemble known defects are lifted and normal-looking outliers damped.
    """
    if rule not in DUAL_RULES:
        from .errors import ConfigError

        raise ConfigError(f"unknown dual rule {rule!r} (choose from {', '.join(DUAL_RULES)})")
    if rule == "weighted":
        weighted = normal_dist * normal_dist / (normal_dist + defect_dist + eps)
        return weighted, max_score(weighted)
    ratio = dual_patch_ratio(normal_dist, defect_dist, eps)
    if rule == "patch":
        return ratio, max_score(ratio)
    return ratio, max_score(normal_dist) / (max_score(defect_dist) + eps)


def score_patches(
    normal_dist: torch.Tensor,
    defect_dist: torch.Tensor | None,
    size: tuple[int, int],
    rule: str = "weighted",
    sigma: float = 4.0,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, h, w) nearest distances of each patch -> (anomaly maps (B, H, W), image scores (B,)).

    The whole rule in one place, for the library and for exported graphs alike: one bank
    (``defect_dist`` None) gives the distance map and its max; two banks apply ``rule`` (see
    ``dual_scores``); ``seed`` divides the blurred normal map by the blurred defect map.
    """
    if defect_dist is None:
        return anomaly_map(normal_dist, size, sigma), max_score(normal_dist)
    patch_map, score = dual_scores(normal_dist, defect_dist, rule, eps)
    if rule == "seed":
        # the reference divides the two blurred maps, not the raw patch distances
        return anomaly_map(normal_dist, size, sigma) / (
            anomaly_map(defect_dist, size, sigma) + eps
        ), score
    return anomaly_map(patch_map, size, sigma), score
