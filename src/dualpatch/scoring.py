"""From per-patch distances to anomaly maps and image scores, for one bank or two.

``score_patches`` is the one scoring path: the estimators only look up the distances and hand
them here. torch is imported inside the functions, so that the registry ``DUAL_RULES`` (which the
config and the CLI read their choices from) costs nothing to import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from dualpatch.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Mean over the k nearest bank entries (patchcore-inspection's scorer); k = 1 is the plain
#: nearest distance that PatchCore, anomalib and the dual reference code use.
DEFAULT_NUM_NEIGHBORS = 1
#: Size of the neighbourhood N_b(m*) of the paper's re-weighting (anomalib's ``num_neighbors``).
DEFAULT_REWEIGHT_NEIGHBORS = 9


def check_rule(rule: str) -> str:
    """``rule`` if it names a dual rule, else a ConfigError listing the choices."""
    if rule not in DUAL_RULES:
        raise ConfigError(f"unknown dual rule {rule!r} (choose from {', '.join(DUAL_RULES)})")
    return rule


def check_scoring(
    rule: str | None, reweight: bool, num_neighbors: int, reweight_neighbors: int
) -> None:
    """ConfigError unless these scoring settings make sense together (``rule`` None: one bank)."""
    counts = {"num_neighbors": num_neighbors, "reweight_neighbors": reweight_neighbors}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} is {value!r}; expected a whole number of at least 1")
    if rule is None:
        return
    check_rule(rule)
    if reweight:
        raise ConfigError(
            "reweight applies to the single-bank model (--bank single) only: the dual rules "
            "combine the raw nearest distances of both banks, as the reference does"
        )


@dataclass(frozen=True)
class Reweighting:
    """What the PatchCore paper's re-weighted image score needs besides the distances.

    ``features`` (B, h*w, D) test patch features, ``nearest_index`` (B, h*w) the index of each
    patch's nearest entry of ``bank`` (M, D), ``support`` the size of N_b(m*).
    """

    features: torch.Tensor
    nearest_index: torch.Tensor
    bank: torch.Tensor
    support: int = DEFAULT_REWEIGHT_NEIGHBORS


def patch_distances(neighbor_distances: torch.Tensor) -> torch.Tensor:
    """(..., k) distances to k nearest bank entries -> (...) their mean: the patch's distance."""
    return neighbor_distances.mean(-1)


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian of torchvision's ``gaussian_blur`` (its 2-D kernel is the outer
    product of two of these)."""
    import torch

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
    import torch.nn.functional as F

    kernel = gaussian_kernel1d(size, sigma).to(maps.dtype)
    pad = size // 2
    maps = F.pad(maps, [pad, pad, pad, pad], mode="reflect")
    maps = F.conv2d(maps, kernel.view(1, 1, size, 1))
    return F.conv2d(maps, kernel.view(1, 1, 1, size))


def blur_kernel_size(sigma: float, size: tuple[int, int]) -> int:
    """Taps of the map blur: 2 * round(4 sigma) + 1, narrower than twice the image's shorter side
    (reflect padding needs that)."""
    return min(2 * int(4 * sigma + 0.5) + 1, 2 * min(size) - 1)


@functools.lru_cache(maxsize=16)
def upsample_blur_matrix(n_in: int, n_out: int, sigma: float, taps: int) -> torch.Tensor:
    """(n_out, n_in) float32: 1-D linear upsampling (align_corners=False), then a ``taps``-tap
    Gaussian with reflect padding (no blur if ``sigma`` <= 0), as one matrix.

    Both steps are linear and separable, so ``A @ patches @ B.T`` with ``A``/``B`` the matrices of
    the two axes is bilinear upsampling + Gaussian blur in two small matrix products. Built once
    per shape (in float64) by sending the identity through the same operations.
    """
    import torch
    import torch.nn.functional as F

    eye = torch.eye(n_in, dtype=torch.float64)[:, None]
    up = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T
    if sigma > 0:
        pad = taps // 2
        kernel = gaussian_kernel1d(taps, sigma).double().view(1, 1, taps)
        padded = F.pad(torch.eye(n_out, dtype=torch.float64)[:, None], [pad, pad], mode="reflect")
        up = F.conv1d(padded, kernel)[:, 0].T @ up
    return up.float().contiguous()


def anomaly_map(
    patch_scores: torch.Tensor, size: tuple[int, int], sigma: float = 4.0
) -> torch.Tensor:
    """(B, h, w) patch scores -> (B, H, W): bilinear upsampling, then a Gaussian blur.

    Computed as ``A @ patches @ B.T`` (``upsample_blur_matrix`` per axis): the same linear map as
    ``F.interpolate`` + ``gaussian_blur`` (equal within float32 rounding), 5-10x faster at
    320x128, where the 33-tap 1-channel convolutions were a tenth of the exported scorer's time.
    """
    h, w = patch_scores.shape[-2:]
    taps = blur_kernel_size(sigma, size) if sigma > 0 else 0
    rows = upsample_blur_matrix(int(h), int(size[0]), float(sigma), taps)
    cols = upsample_blur_matrix(int(w), int(size[1]), float(sigma), taps)
    return rows @ patch_scores.float() @ cols.T


def max_score(patch_scores: torch.Tensor) -> torch.Tensor:
    """Image score: the largest patch score of each image, (B, h, w) -> (B,)."""
    return patch_scores.flatten(1).amax(1)


def reweighted_score(
    patch_scores: torch.Tensor,
    patch_features: torch.Tensor,
    nearest_index: torch.Tensor,
    bank: torch.Tensor,
    reweight_neighbors: int = DEFAULT_REWEIGHT_NEIGHBORS,
) -> torch.Tensor:
    """The PatchCore paper's image score: s* scaled by how isolated its nearest bank entry is.

    For each image, take the most anomalous patch and its nearest bank entry m*; with N_b(m*) the
    ``reweight_neighbors`` bank entries nearest m* (m* included), the weight is
    1 - softmax(||f* - m||)_{m*}.
    The weight shrinks the score when m* sits in a dense region (the test patch is simply far
    from a well-covered mode) and keeps it when m* is itself an outlier of the bank.

    ``patch_features`` is (B, h*w, D), ``nearest_index`` (B, h*w).
    """
    import torch

    from dualpatch.bank.neighbours import knn

    flat = patch_scores.flatten(1)
    best = flat.argmax(1)
    rows = torch.arange(flat.shape[0])
    f_star = patch_features[rows, best]
    m_star = bank[nearest_index[rows, best]]
    _, support = knn(m_star, bank, k=reweight_neighbors)
    dists = torch.linalg.vector_norm(bank[support] - f_star[:, None], dim=-1)
    weights = 1 - torch.softmax(dists, dim=1)[:, 0]
    return weights * flat[rows, best]


def dual_patch_ratio(normal_dist: torch.Tensor, defect_dist: torch.Tensor, eps: float = 1e-6):
    """Per-patch distance ratio: > 1 where a patch is nearer the defect bank than normal surface."""
    return normal_dist / (defect_dist + eps)


#: Floor on d_n + d_d in the guarded rule: only a patch that sits on an entry of both banks
#: (d_n = d_d = 0) reaches it, and its score is then 0 either way; no real distance is divided by it
GUARD_FLOOR = 1e-20


def guarded_patch_scores(
    normal_dist: torch.Tensor, defect_dist: torch.Tensor, level: float | None
) -> torch.Tensor:
    """The guarded rule's patch scores s = d_n * max(w, min(1, d_n / tau)), w = 2 d_n / (d_n + d_d).

    ``level`` is tau, the normal bank's novelty level (in d_n units). w lies in [0, 2] (2 only on
    a defect bank entry, d_d = 0), above 1 where a patch is nearer a known defect than normal
    surface. Its denominator is at least d_n, so no small distance is divided by a tiny one (the
    ratio rules' d_d + eps was; the exported runtimes then disagreed); s is computed as
    max(2 d_n (d_n / (d_n + d_d)), d_n min(1, d_n / tau)).
    """
    import torch

    if level is None or not level > 0:
        raise ConfigError(
            f"the guarded rule needs a positive novelty level (got {level!r}): fit the model, "
            "which measures it on normal images"
        )
    # d_n / (d_n + d_d) lies in [0, 1]: computed first, no square of a distance can underflow
    share = normal_dist / (normal_dist + defect_dist).clamp_min(GUARD_FLOOR)
    near_defect = 2 * normal_dist * share
    novelty = normal_dist * (normal_dist / float(level)).clamp(max=1.0)
    return torch.maximum(near_defect, novelty)


def _guarded(normal_dist, defect_dist, eps, level):
    scores = guarded_patch_scores(normal_dist, defect_dist, level)
    return scores, max_score(scores)


def _weighted(normal_dist, defect_dist, eps, level=None):
    weighted = normal_dist * normal_dist / (normal_dist + defect_dist + eps)
    return weighted, max_score(weighted)


def _patch(normal_dist, defect_dist, eps, level=None):
    ratio = dual_patch_ratio(normal_dist, defect_dist, eps)
    return ratio, max_score(ratio)


def _seed(normal_dist, defect_dist, eps, level=None):
    # The reference code divides the per-patch distance maps, then upsamples and blurs the ratio;
    # its image score divides the two banks' largest distances.
    ratio = dual_patch_ratio(normal_dist, defect_dist, eps)
    return ratio, max_score(normal_dist) / (max_score(defect_dist) + eps)


class DualRule(NamedTuple):
    """A dual-bank rule: (B, h, w) d_n, d_d, eps and the novelty level tau -> (patch map, image
    score). ``safe``: the rule keeps the scoring contract (see ``DUAL_RULES``)."""

    function: Callable
    description: str
    safe: bool = False


#: Said of every rule that can pass a novelty (its description, the docs, ``fit``'s warning).
UNSAFE = (
    "UNSAFE for novelties: a patch far from both banks (black frame, noise, a rotated or unknown "
    "part) can score like ordinary surface and pass as good"
)

#: The dual-bank rules by name, with d_n and d_d a patch's distances to the normal and the defect
#: bank: the one list that the models, the config and the CLI take the rule names from.
#:
#: The scoring contract, which ``safe`` rules keep (tests/unit/scoring/test_contract.py checks it
#: on random distance maps): with tau > 0 the normal bank's novelty level (``novelty_level_``),
#:   (a) a patch with d_n >= tau scores at least d_n, its single-bank score; so an image whose
#:       single-bank score (max d_n) is >= tau scores at least that much under the dual rule:
#:       the defect bank can never hide a patch that is far from normal surface;
#:   (b) below tau the score lies in [d_n^2 / tau, 2 d_n]: damped where a patch is nearer normal
#:       surface than any known defect, raised up to twice d_n where it is nearer a known defect
#:       (2 d_n only for a patch that sits on a defect bank entry, d_d = 0);
#:   (c) the score is non-decreasing in d_n and non-increasing in d_d.
DUAL_RULES: dict[str, DualRule] = {
    "guarded": DualRule(
        _guarded,
        "map d_n * max(2 d_n / (d_n + d_d), min(1, d_n / tau)), image score its max, tau the "
        "normal bank's novelty level: raised near known defects, damped near normal surface, "
        "never below d_n once d_n >= tau",
        safe=True,
    ),
    "weighted": DualRule(
        _weighted,
        "map d_n * d_n / (d_n + d_d), image score its max: an anomaly distance, damped where "
        f"a patch is closer to normal surface than to any known defect; {UNSAFE}",
    ),
    "patch": DualRule(_patch, f"map d_n / (d_d + eps), image score its max; {UNSAFE}"),
    "seed": DualRule(
        _seed,
        "the reference rule: map d_n / (d_d + eps) (blurred after upsampling), image score "
        f"max d_n / (max d_d + eps); {UNSAFE}",
    ),
}


def dual_scores(
    normal_dist: torch.Tensor,
    defect_dist: torch.Tensor,
    rule: str = "guarded",
    eps: float = 1e-6,
    novelty_level: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual-bank scoring of (B, h, w) patch distances -> (patch map, image score); see
    ``DUAL_RULES`` for what each rule computes (``novelty_level``: tau, for ``guarded``)."""
    return DUAL_RULES[check_rule(rule)].function(normal_dist, defect_dist, eps, novelty_level)


def score_patches(
    normal_dist: torch.Tensor,
    size: tuple[int, int],
    sigma: float,
    defect_dist: torch.Tensor | None = None,
    rule: str | None = None,
    eps: float = 1e-6,
    reweighting: Reweighting | None = None,
    novelty_level: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, h, w) patch distances of one bank, or of two with a ``rule`` -> (anomaly maps (B, H, W)
    at ``size``, image scores (B,)).

    One bank: the map is the distance map and the score its maximum, or the paper's re-weighted
    score when ``reweighting`` is given. Two banks: the rule's patch map and score; re-weighting
    is refused (``check_scoring``), never ignored. ``novelty_level``: the normal bank's tau, which
    the ``guarded`` rule needs (the other rules ignore it).
    """
    if defect_dist is None:
        if reweighting is None:
            score = max_score(normal_dist)
        else:
            score = reweighted_score(
                normal_dist,
                reweighting.features,
                reweighting.nearest_index,
                reweighting.bank,
                reweighting.support,
            )
        return anomaly_map(normal_dist, size, sigma), score
    if rule is None:
        raise ConfigError("two banks' distances need a dual rule")
    if reweighting is not None:
        check_scoring(rule, True, DEFAULT_NUM_NEIGHBORS, reweighting.support)
    patch_map, score = dual_scores(normal_dist, defect_dist, rule, eps, novelty_level)
    return anomaly_map(patch_map, size, sigma), score


def gated_scores(
    scores: torch.Tensor, missing: torch.Tensor, level: float, scale: float
) -> torch.Tensor:
    """Image scores with the image-level check folded in (``bank.coverage``): where an image's
    missing content is above ``level`` (that of normal images: held out, or left out of the
    summaries), the larger of the patch score and ``scale`` x missing content / ``level``;
    elsewhere the patch score unchanged. ``scale`` is the score at which an image is flagged (the
    stored threshold at quantile 1, or the normal bank's novelty level), so an image that lacks
    more than normal images do scores above it, whatever its patches score; at or below the
    level the check could flag nothing, and it leaves the patch scores' ranking alone."""
    beyond = (missing > level).to(scores.dtype)
    return scores.maximum(beyond * missing * (scale / level))
