"""Building the memory banks of a fit, below the estimators: the normal bank (a shared bank from
the feature cache, a bank spilled to disk under ``max_memory``, or one built in memory), a coreset
bank as a progress stage, and the anomaly-map scale measured on the training images.

Each function takes the estimator (``model``: a ``PatchCore`` or ``DualPatchCore``) whose
parameters it reads and returns what it built (``normal_bank``: a ``NormalBank``); the estimator
sets its own learned state. Features come from the estimator's ``FeatureSource``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualpatch.bank import feature_cache
from dualpatch.bank.coverage import evenly_spaced
from dualpatch.bank.memory import MemoryBank
from dualpatch.data.base import Sample
from dualpatch.errors import DataError
from dualpatch.models.params import check_large_data
from dualpatch.scoring import patch_distances

#: The map scale is measured on at most this many training images, evenly spaced: scoring every
#: training patch against the bank grows as N^2 (hours at 20k images) for a display scale.
MAP_SCALE_IMAGES = 200


@dataclass(frozen=True)
class NormalBank:
    """A fitted normal bank: the ``MemoryBank``, the feature grid (h, w), the spill report
    (None unless fitted under ``max_memory``) and the training images' (N, h, w, D) features: a
    tensor, or (bounded memory, shared bank) a view that reads batches on demand."""

    memory: MemoryBank
    grid: tuple[int, int]
    spill: dict | None
    features: Any


def shared_bank_path(model: Any, normal: list[Sample]) -> Path | None:
    """Where the feature cache keeps the normal bank of ``normal`` under ``model``'s settings."""
    settings = feature_cache.bank_settings(
        model.coreset_ratio, model.coreset_min, model.projection_dim, model.seed,
        model.coreset_method, model.max_memory, model.coreset_rows, model.bank_dtype,
    )  # fmt: skip
    return feature_cache.shared_bank_path(model.feature_source(), normal, settings)


def normal_bank(model: Any, normal: list[Sample]) -> NormalBank:
    """The normal bank of ``model``'s settings fitted on ``normal``: read from the feature
    cache's shared banks, spilled to disk under ``max_memory``, or built in memory."""
    check_large_data(model)
    if not normal:
        raise DataError("no normal images to fit on")
    source = model.feature_source()
    shared = shared_bank_path(model, normal)
    cached = feature_cache.load_shared_bank(shared) if shared else None
    if cached is not None:  # the same images and coreset settings: computed before
        memory = model._memory(model.coreset_ratio)
        memory.bank_, grid = cached
        return NormalBank(memory, grid, None, feature_cache.CachedImageFeatures(source, normal))
    spill = None
    if model.max_memory is not None:
        from dualpatch.bank.spill import spilled_bank

        empty = model._memory(model.coreset_ratio)
        grid, memory, spill, feats = spilled_bank(model, source, empty, normal)
    else:
        feats = source.features(normal, "normal features")
        grid = tuple(feats.shape[1:3])
        flat = feats.reshape(-1, feats.shape[-1])
        memory = coreset_bank(model, model.coreset_ratio, flat, "normal coreset")
    if shared:
        feature_cache.save_shared_bank(shared, memory.bank_, grid)
    return NormalBank(memory, grid, spill, feats)


def coreset_bank(model: Any, ratio: float, flat: torch.Tensor, desc: str) -> MemoryBank:
    """A ``MemoryBank`` of ``model``'s settings keeping ``ratio`` of the rows of ``flat``; the
    coreset selection is progress stage ``desc``."""
    bank = model._memory(ratio)
    n = bank.target_size(flat.shape[0])
    picks = n - 1 if n < flat.shape[0] else 0  # a bank that keeps everything picks nothing
    bar = model._bar(desc, picks)
    bank.fit(flat, progress=bar)
    if picks == 0:
        bar(0)  # lets a display close the (empty) stage
    return bank


def map_scale(model: Any, feats: Any) -> float:
    """The largest anomaly-map value over the training images: a fixed scale for map images,
    so that an image's map PNG does not depend on which other images were scored with it.
    Past ``MAP_SCALE_IMAGES`` images, the largest over that many evenly spaced ones."""
    n, size = feats.shape[0], model.batch_size
    if n <= MAP_SCALE_IMAGES:
        batches = (feats[start : start + size] for start in range(0, n, size))
    else:
        picked = np.linspace(0, n - 1, MAP_SCALE_IMAGES).round().astype(int).tolist()
        batches = (feats[picked[start : start + size]] for start in range(0, len(picked), size))
    # a stage of its own: on a large bank this took minutes with nothing shown after the coreset
    bar = model._bar("map scale", min(n, MAP_SCALE_IMAGES))
    top = 0.0
    for batch in batches:
        amap, _ = model._score_features(batch)
        top = max(top, float(amap.max()))
        bar(len(batch))
    return top


#: The label-free novelty level is measured on at most this many training images, evenly spaced:
#: each costs one search of its patches against the bank, so the cost stays that of a few dozen
#: test images however large the training set.
NOVELTY_IMAGES = 32
#: tau is this quantile of the per-image largest distances (1.0: the largest, so that no normal
#: image it was measured on reaches it)
NOVELTY_QUANTILE = 1.0


def leave_image_out_level(model: Any, feats: Any) -> tuple[float, int]:
    """(tau, images measured): the normal bank's novelty level without held-out images.

    Each of up to ``NOVELTY_IMAGES`` evenly spaced training images is scored against the bank
    rows that did not come from it (a coreset row is a copy of one training patch; a patch's own
    row is found as its nearest entry and dropped when equal), so its largest patch distance is
    what an unseen normal image of the same kind would get. tau is the ``NOVELTY_QUANTILE`` of
    those largest distances. With one training image only (every row its own), the bank's own
    spread stands in: the largest distance of a bank entry to its nearest other entry.
    """
    n = feats.shape[0]
    bank = model.memory_.bank_
    levels = []
    for i in evenly_spaced(n, NOVELTY_IMAGES):
        rows = feats[[i]].reshape(-1, bank.shape[1]).float()
        _, idx = model.memory_.query(rows, 1)
        # a float16 bank holds its rows rounded: compare in its precision
        own = idx[:, 0][(bank[idx[:, 0]] == rows.to(bank.dtype)).all(1)]
        keep = torch.ones(bank.shape[0], dtype=torch.bool)
        keep[own] = False
        if not keep.any():
            continue
        others = model._memory(model.coreset_ratio)
        others.bank_ = bank[keep]
        k = min(model.num_neighbors, int(keep.sum()))
        dist, _ = others.query(rows, k)
        levels.append(float(patch_distances(dist).max()))
    if not levels:  # one image made the whole bank
        dist, _ = model.memory_.query(bank, min(2, bank.shape[0]))
        return float(dist[:, -1].max()), 0
    return float(np.quantile(levels, NOVELTY_QUANTILE)), len(levels)
