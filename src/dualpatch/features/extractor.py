"""Patch features: two backbone stages, 3x3 local averaging, deeper map on the shallower grid."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dualpatch.errors import ConfigError
from dualpatch.features.backbones import (
    NORMALIZATION_CHOICES,
    NORMALIZATIONS,
    get_spec,
    load_backbone,
)

#: Bump whenever the computation of patch features changes: cached features of an older
#: version must never be mixed with new ones.
FEATURE_VERSION = 2


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
        if normalization not in NORMALIZATION_CHOICES:
            raise ConfigError(f"unknown normalization {normalization!r} (auto, imagenet or tf)")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @property
    def dim(self) -> int:
        return sum(self.spec.channels)

    def stage_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalise (B, 3, H, W) float images in [0, 1] and run the backbone up to its deepest
        feature stage; returns the stage outputs, shallow first.

        The layers are walked explicitly (no hooks, no early exit by exception), so that the same
        code traces into an exported graph.
        """
        x = (images - self.mean) / self.std
        wanted = self.spec.stages
        outputs: dict[str, torch.Tensor] = {}
        if hasattr(self.model, "_blocks"):  # EfficientNet(-Lite): stem, then the block list
            m = self.model
            x = m._swish(m._bn0(m._conv_stem(x)))
            layers = [(f"_blocks.{i}", block) for i, block in enumerate(m._blocks)]
        else:  # torchvision ResNets: children in order (conv1 ... layer4, avgpool, fc)
            layers = list(self.model.named_children())
        for name, layer in layers:
            x = layer(x)
            if name in wanted:
                outputs[name] = x
                if len(outputs) == len(wanted):  # later layers would be wasted compute
                    break
        return [outputs[s] for s in wanted]

    @staticmethod
    def combine(maps: list[torch.Tensor]) -> PatchFeatures:
        """3x3 zero-padded local averaging of each stage, deeper maps resized to the first
        (stride-8) grid, concatenated along channels."""
        maps = [F.avg_pool2d(m, kernel_size=3, stride=1, padding=1) for m in maps]
        grid = maps[0].shape[-2:]
        maps = [maps[0]] + [
            F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in maps[1:]
        ]
        return PatchFeatures(torch.cat(maps, dim=1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> PatchFeatures:
        """``images``: (B, 3, H, W) float in [0, 1]."""
        return self.combine(self.stage_maps(images))


def to_tensor(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 arrays (same size) -> (B, 3, H, W) float32 in [0, 1]."""
    arr = np.stack(images) if isinstance(images, list) else images
    if arr.ndim == 3:
        arr = arr[None]
    # torch warns on a read-only array (a decoded image can be one) that writes through the tensor
    # would be undefined; none happen here, but a copy of the uint8 pixels keeps the warning out
    arr = np.require(arr, requirements=("C", "W"))
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
