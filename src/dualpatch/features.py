"""Patch features: two backbone stages, 3x3 local averaging, deeper map on the shallower grid."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import IMAGENET, TF_STYLE, get_spec, load_backbone
from .errors import ConfigError

#: "auto" uses the normalisation the backbone's weights were trained with.
NORMALIZATIONS = {"imagenet": IMAGENET, "tf": TF_STYLE}


#: Bump whenever the computation of patch features changes: cached features of an older
#: version must never be mixed with new ones.
FEATURE_VERSION = 2


class _StopForward(Exception):
    """Raised from the deepest hook: layers after it would be wasted compute."""


@dataclass
class PatchFeatures:
    """Patch embeddings of a batch: ``features`` is (B, D, h, w), one D-vector per patch."""

    features: torch.Tensor

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.features.shape[-2:])  # type: ignore[return-value]

    def flat(self) -> torch.Tensor:
        """(B * h * w, D), row-major over batch, then rows, then columns."""
        b, d, h, w = self.features.shape
        return self.features.permute(0, 2, 3, 1).reshape(b * h * w, d)


class FeatureExtractor(nn.Module):
    """Frozen backbone -> locally aware patch features at stride 8.

    Any input height and width work (tall, narrow images are never squared): the deeper map is
    bilinearly upsampled to the shallower map's grid before concatenation.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: str | os.PathLike[str] | None = None,
        normalization: str = "auto",
    ):
        super().__init__()
        self.spec = get_spec(backbone)
        self.model = load_backbone(backbone, weights)
        mean, std = NORMALIZATIONS.get(normalization, self.spec.normalization)
        if normalization not in ("auto", *NORMALIZATIONS):
            raise ConfigError(f"unknown normalization {normalization!r} (auto, imagenet or tf)")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self._outputs: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        for stage in self.spec.stages:
            modules[stage].register_forward_hook(self._hook(stage))

    def _hook(self, stage: str):
        def hook(_module, _inp, out):
            self._outputs[stage] = out
            if stage == self.spec.stages[-1]:
                raise _StopForward

        return hook

    @property
    def dim(self) -> int:
        return sum(self.spec.channels)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> PatchFeatures:
        """``images``: (B, 3, H, W) float in [0, 1]."""
        x = (images - self.mean) / self.std
        self._outputs.clear()
        try:
            if hasattr(self.model, "extract_features"):
                self.model.extract_features(x)
            else:
                self.model(x)
        except _StopForward:
            pass
        maps = [self._outputs[s] for s in self.spec.stages]
        maps = [F.avg_pool2d(m, kernel_size=3, stride=1, padding=1) for m in maps]
        grid = maps[0].shape[-2:]
        maps = [maps[0]] + [
            F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in maps[1:]
        ]
        return PatchFeatures(torch.cat(maps, dim=1))


def to_tensor(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 arrays (same size) -> (B, 3, H, W) float32 in [0, 1]."""
    arr = np.stack(images) if isinstance(images, list) else images
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
