"""Image-level novelty: does an image hold what normal images hold?

A patch score asks, patch by patch, whether each patch looks like some normal patch. A frame
whose every patch resembles *some* normal surface passes that test however wrong the frame is: a
blank frame on a product with a plain background, a strongly blurred frame of a smooth surface,
a part turned 90 degrees. The check here asks the other way round. Each training image is
summarised by ``SUMMARY_PATCHES`` of its patches picked by greedy k-center (its most different
patches: edges, texture, the part's outline). For a new image and one training image, the largest
distance from a summary patch to its nearest patch of the new image says what of the training
image the new image lacks (a directed Hausdorff distance); the image's *missing content* is the
smallest of these over the summarised training images. A normal image holds everything that some
training image holds; a blank, blurred or turned frame lacks something every training image has.

The models scale missing content by its level on held-out normal images and fold it into the image
score (``scoring.gated_scores``), so one score and one threshold carry both checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: patches summarising one training image (greedy k-center picks), and the most training images
#: summarised (evenly spaced over the fit's images): chosen on the training side of the safety
#: suite's folds (benchmarks/safety_suite.py), where 16 patches and the largest distance (rather
#: than the mean) missed the fewest foreign frames at the same held-out false-reject rate
SUMMARY_PATCHES = 16
SUMMARY_IMAGES = 256
#: training images whose missing content is measured leave-image-out at fit (as the patch novelty
#: level's ``models.banks.NOVELTY_IMAGES``): with the held-out images they set the check's level,
#: so that a few held-out images alone do not set it low; and images read at a time
LEAVE_OUT_IMAGES = 32
READ_BATCH = 64
#: summary rows compared with one image's patches at a time (bounds the distance block's bytes)
SUMMARY_BLOCK = 4096


def summarise_image(patches: torch.Tensor, count: int = SUMMARY_PATCHES) -> torch.Tensor:
    """(count, D) rows of one image's (P, D) patches by greedy k-center, starting from the patch
    farthest from the image's mean: deterministic, no seed. Fewer patches than ``count``: all."""
    patches = patches.float()
    if patches.shape[0] <= count:
        return patches.clone()
    first = int(torch.linalg.vector_norm(patches - patches.mean(0), dim=1).argmax())
    picks = [first]
    nearest = torch.linalg.vector_norm(patches - patches[first], dim=1)
    for _ in range(count - 1):
        pick = int(nearest.argmax())
        picks.append(pick)
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(patches - patches[pick], dim=1))
    return patches[picks]


def evenly_spaced(n: int, count: int) -> list[int]:
    """Indices of ``count`` evenly spaced items of ``n``, the first and last included (all ``n``
    when there are no more than ``count``)."""
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(int)).tolist()


def summary_images(n: int) -> list[int]:
    """Indices of the training images that get a summary: all, or ``SUMMARY_IMAGES`` evenly
    spaced ones."""
    return evenly_spaced(n, SUMMARY_IMAGES)


def summarise(feats: Any, picked: list[int] | None = None) -> torch.Tensor:
    """(M, R, D) summaries of images ``picked`` (default ``summary_images``) of (N, h, w, D)
    features: a tensor, or a feature view that reads images on demand (``feature_cache``), read
    ``READ_BATCH`` images at a time."""
    picked = summary_images(feats.shape[0]) if picked is None else picked
    out = []
    for start in range(0, len(picked), READ_BATCH):
        batch = feats[picked[start : start + READ_BATCH]]
        out += [summarise_image(f.reshape(-1, f.shape[-1])) for f in batch]
    return torch.stack(out)


def missing_content(
    feats: torch.Tensor, summaries: torch.Tensor, block: int = SUMMARY_BLOCK
) -> torch.Tensor:
    """(B,) missing content of (B, h, w, D) image features against (M, R, D) summaries: the
    smallest over the M training images of the largest distance from one of its R summary
    patches to the image's nearest patch, ``block`` summary rows at a time. Plain tensor
    operations, so the exported graph computes it the same way (``serving.export``, which plans
    ``block`` by bytes)."""
    b, d = feats.shape[0], feats.shape[-1]
    m, r, _ = summaries.shape
    flat = feats.reshape(b, -1, d).float()
    rows = summaries.reshape(m * r, d).float()
    # centred on the summaries' mean before the dot products (float32 cancellation)
    centre = rows.mean(0)
    flat, rows = flat - centre, rows - centre
    nearest = torch.cat(
        [_nearest_patch(flat, rows[i : i + block]) for i in range(0, m * r, block)],
        dim=1,
    )
    return nearest.reshape(b, m, r).amax(2).amin(1)


def _nearest_patch(flat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, S) distance from each of S summary rows to its nearest patch of each image:
    |r|^2 + |p|^2 - 2 r.p, the smallest over the patches."""
    rows_sq, flat_sq = (rows * rows).sum(1), (flat * flat).sum(2)
    if torch.jit.is_tracing():  # the exported graph: one expression for any batch size
        # one (B*P, D+1) x (D+1, S) product, [p, |p|^2] . [-2r, 1] = |p|^2 - 2 r.p, which the
        # runtimes run as one matrix product (a batched einsum and the sums around it were their
        # slowest nodes: about 11 of 19 ms per image at batch 16 in onnxruntime, default model,
        # benchmarks/results/profile_exported_default.json); |r|^2, the same for every patch, is
        # added after the smallest over the patches: one pass over (B, P, S)
        b, p, d = flat.shape
        query = torch.cat([flat, flat_sq[:, :, None]], dim=2).reshape(b * p, d + 1)
        keys = torch.cat([rows * -2, torch.ones_like(rows[:, :1])], dim=1)
        products = (query @ keys.T).reshape(b, p, -1)
        return products.amin(1).add(rows_sq).clamp_min(0).sqrt()
    # the (B, S, P) matrix built once and updated in place, image by image: the plain expression
    # |r|^2 + |p|^2 - 2 r.p held four such matrices at once (80 MiB each at batch 8: evaluate's
    # peak RSS). The same float operations in the same order as that expression (x - 2y is
    # x + (-2y) exactly), so the same bits (tests/unit/memory/test_coverage.py)
    sq = torch.einsum("sd,bpd->bsp", rows, flat).mul_(-2)
    for i in range(sq.shape[0]):  # one (S, P) temporary at a time
        sq[i].add_(rows_sq[:, None] + flat_sq[i][None, :])
    return sq.clamp_min_(0).amin(2).sqrt()


def leave_image_out(feats: Any, summaries: torch.Tensor) -> np.ndarray:
    """Missing content of up to ``LEAVE_OUT_IMAGES`` evenly spaced summarised training images,
    each against the other images' summaries (its own dropped): what an unseen normal image would
    get. Empty when only one image is summarised."""
    picked = summary_images(feats.shape[0])
    if len(picked) < 2:
        return np.zeros(0)
    probe = evenly_spaced(len(picked), LEAVE_OUT_IMAGES)
    images = feats[[picked[j] for j in probe]]  # one read
    values = []
    for k, j in enumerate(probe):
        others = torch.cat([summaries[:j], summaries[j + 1 :]])
        values.append(float(missing_content(images[[k]], others)[0]))
    return np.asarray(values)
