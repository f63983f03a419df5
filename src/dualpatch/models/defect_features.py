"""Features for the defect bank: the patches under a defective image's mask (in whole-image
context) and those of defect crops (each run through the backbone at its own size).

A defective image without a mask gives a **pseudo-mask**: its patches whose distance to the normal
bank exceeds the bank's novelty level tau (``novelty_level_``, measured at fit before the defect
bank is built), i.e. patches farther from normal surface than any normal patch measured. Each such
image is recorded in ``pseudo_masks_`` (model.json's ``pseudo_masks``), and one warning counts the
images whose pseudo-mask is empty (they give no defect patch)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from dualpatch.bank.feature_cache import FeatureSource
from dualpatch.data.base import Sample
from dualpatch.data.crops import DefectCrop
from dualpatch.errors import DataError
from dualpatch.features.extractor import to_tensor
from dualpatch.scoring import patch_distances

STRIDE = 8  # both stage pairs put the feature grid at 1/8 of the input


def mask_cells(mask: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """(h, w) bool: the feature-grid cells that hold at least one defect pixel of ``mask``."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return torch.nn.functional.adaptive_max_pool2d(m, tuple(grid))[0, 0] > 0


def crop_file_records(crops: list[DefectCrop]) -> list[dict]:
    """What a saved model shows it was built from: the digests of the crops read from files
    (those ``crop_features`` keeps: at least one patch on each side)."""
    return [
        {"file": c.source, "sha256": c.sha256, "mask_sha256": c.mask_sha256}
        for c in crops
        if c.sha256 and min(c.mask.shape) >= STRIDE
    ]


def defect_image_features(
    source: FeatureSource,
    samples: list[Sample],
    normal_bank: Any = None,
    novelty_level: float | None = None,
    num_neighbors: int = 1,
) -> tuple[torch.Tensor, list[dict]]:
    """((M, D) features (from ``source``) of the patches that touch each image's defect mask or,
    for an image without a mask, its pseudo-mask: the patches farther than ``novelty_level`` from
    ``normal_bank`` (``pseudo_cells``); a record per pseudo-masked image)."""
    from dualpatch.fileio import sha256_file

    feats = source.features(samples, "defect features")
    rows, pseudo = [], []
    for s, f in zip(samples, feats, strict=True):
        if s.mask_path is None:
            cells = pseudo_cells(normal_bank, novelty_level, num_neighbors, f)
            record = {"file": s.image_path.name, "sha256": sha256_file(s.image_path)}
            pseudo.append({**record, "patches": int(cells.sum())})
        else:
            cells = mask_cells(s.mask(source.image_size), f.shape[:2])
        rows.append(f[cells])
    empty = [r["file"] for r in pseudo if not r["patches"]]
    if empty:
        warnings.warn(
            f"{len(empty)} of {len(pseudo)} defective images without a mask have no patch above "
            f"the normal bank's novelty level (e.g. {empty[0]}): no pseudo-mask, not in the "
            "defect bank",
            stacklevel=3,
        )
    return torch.cat(rows), pseudo


def pseudo_cells(
    normal_bank: Any, novelty_level: float | None, num_neighbors: int, feats: torch.Tensor
) -> torch.Tensor:
    """(h, w) bool: the patches of one image's (h, w, D) features whose distance to the normal
    bank (as scored: mean of ``num_neighbors`` nearest) is above the novelty level tau."""
    if normal_bank is None or novelty_level is None:
        raise DataError("a defective image without a mask needs a fitted normal bank and tau")
    h, w, d = feats.shape
    k = min(num_neighbors, normal_bank.bank_.shape[0])
    dist, _ = normal_bank.query(feats.reshape(-1, d).float(), k)
    return (patch_distances(dist) > novelty_level).reshape(h, w)


def crop_features(source: FeatureSource, crops: list[DefectCrop], patches: str) -> torch.Tensor:
    """(M, D) features of defect patches, each crop run through ``source``'s backbone at its own
    size; ``patches`` (``defect_patches``) says which patches of a crop count ("mask" or "all")."""
    kept = []
    for c in crops:
        h, w = c.mask.shape
        if h < STRIDE or w < STRIDE:
            warnings.warn(
                f"defect crop from {c.source} is {w}x{h}, smaller than one patch "
                f"({STRIDE}x{STRIDE}); skipped",
                stacklevel=3,
            )
            continue
        kept.append(c)
    bar = source.stage("defect features", len(kept))
    rows = []
    for c in kept:
        f = source.extractor()(to_tensor(c.image)).features[0]  # (D, h, w)
        if patches == "mask":
            cell = mask_cells(c.mask, f.shape[-2:])
        else:
            cell = torch.ones(f.shape[-2:], dtype=torch.bool)
        rows.append(f.permute(1, 2, 0)[cell])
        bar(1)
    if not rows or sum(len(r) for r in rows) == 0:
        raise DataError("defect bank is empty: no usable defects (check the masks)")
    return torch.cat(rows)


def defect_rows(model: Any, images: list[Sample], crops: list[DefectCrop]) -> torch.Tensor:
    """(M, D) rows of ``model``'s defect bank before its coreset: the mask (or pseudo-mask)
    patches of ``images``, the patches of ``crops`` and, with ``defect_feature_augment``,
    synthetic rows made from them."""
    model.pseudo_masks_ = []  # set again by defect_image_features: none from an earlier fit
    feats = [model.defect_image_features(images)] if images else []
    if crops or not images:
        feats.append(model.crop_features(crops))
    rows = torch.cat(feats)
    if rows.shape[0] == 0:
        marked = [s.mask_path or s.image_path for s in images]
        example = f" (e.g. {marked[0]})" if marked else ""
        raise DataError(
            f"defect bank is empty: no defect pixels under the masks or pseudo-masks{example}"
        )
    if not model.defect_feature_augment:
        return rows
    from dualpatch.features.augment import augment_defect_features

    def nearest_normal(found: torch.Tensor) -> torch.Tensor:
        return model.memory_.bank_[model.memory_.query(found)[1][:, 0]]

    extra = augment_defect_features(rows, model.defect_feature_augment, model.seed, nearest_normal)
    return torch.cat([rows, extra])
