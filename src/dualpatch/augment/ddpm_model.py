"""The inpainting DDPM itself: its config, the UNet and schedulers, bf16 autocast, and the
checkpoint files (EMA weights + training state) that training writes and sampling reads.

The recipe is described in ``dualpatch.augment.ddpm``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dualpatch.augment.sources import DefectShape
from dualpatch.errors import ModelFileError
from dualpatch.fileio import atomic_path, sha256_file, write_json

FORMAT = "dualpatch-ddpm-inpaint"
VERSION = 1
WEIGHTS = "unet.safetensors"  # EMA weights: what sampling uses
STATE = "train_state.safetensors"  # raw weights, optimizer moments, noise generator state
CONFIG = "config.json"  # written last: names the step and the hashes of the two files above


@dataclass
class DDPMConfig:
    """Model and training settings; the defaults are the recipe above."""

    patch: int = 64
    channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    batch: int = 16
    lr: float = 3e-4
    ema_decay: float = 0.999
    #: share of each batch cut around real defects; the rest is normal surface under random masks
    defect_fraction: float = 0.625
    #: model pixels per image pixel; None: chosen from the defects' sizes (see ``auto_scale``)
    scale: float | None = None
    #: DDIM steps when sampling. 10 met the 1 s/defect target on one CPU core and came out as near
    #: to real defects as 20 (benchmarks/results/augment_fidelity.json); the first sampler took 50.
    sample_steps: int = 10
    #: bf16 autocast; None: on CUDA and on CPUs with bf16 instructions (AMX/AVX512-BF16)
    bf16: bool | None = None
    save_every: int = 200
    #: normal images held in memory for training (a random subset of larger sets)
    max_normals: int = 256
    train_timesteps: int = 1000
    #: flip training patches (and sampled masks' placements) at random. Off: flipping a
    #: KolektorSDD defect changes which side of it is lit. Chosen on training data only (one half
    #: of the training items against the other, benchmarks/results/fidelity_levers.json): 300
    #: steps without flips came out nearer to the other half's real defects on every metric
    #: (precision 0.091 -> 0.139, coverage 0.100 -> 0.132). Models saved with flips keep them.
    flip: bool = False
    #: background-normalised inpainting: each window is shifted and scaled by the mean and
    #: standard deviation of its pixels outside the mask (``normalise_window``) before the model
    #: sees it, and back after sampling, so the model learns defects relative to their surface
    normalise: bool = False

    @classmethod
    def from_json(cls, d: dict) -> DDPMConfig:
        # a model saved before ``flip`` existed was trained with flips, whatever the default now
        d = {"flip": True} | d
        return cls(**{k: tuple(v) if k == "channels" else v for k, v in d.items()})

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: settings a resumed model keeps whatever is asked; the others may change between runs
KEPT_ON_RESUME = ("patch", "channels", "layers_per_block", "batch", "lr", "ema_decay",
                  "defect_fraction", "scale", "max_normals", "train_timesteps", "flip",
                  "normalise")  # fmt: skip

#: background normalisation: a background standard deviation s (in [-1, 1] units) spans
#: (s + NORM_FLOOR) / NORM_UNIT of the model's range, so +-1 holds about +-6 of them on a
#: textured surface and a flat one is not blown up
NORM_UNIT, NORM_FLOOR = 0.15, 0.05


def normalise_window(x: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``x`` (H, W, C in [-1, 1]) shifted and scaled by the statistics of its ``known`` (H, W)
    pixels, clipped to [-1, 1]; returns (normalised, mean, spread) for ``denormalise``."""
    vals = x[known] if known.any() else x.reshape(-1, x.shape[-1])
    mean = float(vals.mean())
    spread = (float(vals.std()) + NORM_FLOOR) / NORM_UNIT
    return np.clip((x - mean) / spread, -1.0, 1.0).astype(np.float32), mean, spread


def denormalise(z, mean: float, spread: float):
    """Undo ``normalise_window`` (numpy array or tensor), clipped to [-1, 1]."""
    return (z * spread + mean).clip(-1.0, 1.0)


# ----------------------------------------------------------------------------- model


def build_unet(cfg: DDPMConfig, channels: int):
    """``in = 2C+1`` (noisy patch, mask, masked patch), ``out = C``, two classes (normal/defect)."""
    from diffusers import UNet2DModel

    n = len(cfg.channels)
    return UNet2DModel(
        sample_size=cfg.patch,
        in_channels=2 * channels + 1,
        out_channels=channels,
        block_out_channels=tuple(cfg.channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        add_attention=False,
        norm_num_groups=min(32, cfg.channels[0]),
        num_class_embeds=2,
    )


def build_schedulers(cfg: DDPMConfig):
    """DDPM schedule for training, DDIM (same betas, trailing steps) for sampling."""
    from diffusers import DDIMScheduler, DDPMScheduler

    train = DDPMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
    )
    sample = DDIMScheduler.from_config(train.config, timestep_spacing="trailing", clip_sample=True)
    return train, sample


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def cpu_has_bf16() -> bool:
    """True where the CPU runs bf16 matrix maths natively (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(cfg: DDPMConfig, device: torch.device) -> bool:
    if cfg.bf16 is not None:
        return cfg.bf16
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def auto_scale(shapes: Sequence[DefectShape], patch: int) -> float:
    """Scale at which a typical defect's short side takes half a patch (at most 1, at least 1/4).

    Thick defects are seen whole with some surface around them; thin ones keep full resolution.
    """
    short = float(np.median([min(s.mask.shape) for s in shapes]))
    return float(np.clip(patch / (2.0 * short), 0.25, 1.0))


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A model folder's content, in memory."""

    config: dict
    ema: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor] | None = None


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """The optimizer's moments as a flat name -> tensor map, its hyperparameters as JSON.

    Written by hand on purpose: torch.save / accelerate's save_state pickle the optimizer, which a
    saved model must not contain, and safetensors only stores a flat map of tensors."""
    sd = opt.state_dict()
    tensors = {
        f"opt.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
        for i, st in sd["state"].items()
        for k, v in st.items()
    }
    return tensors, sd["param_groups"]


def unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list, params: list) -> dict:
    """Rebuild an optimizer state dict; moments take their parameter's shape back."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            shape = params[int(i)].shape
            fits = k != "step" and v.numel() == shape.numel()
            state.setdefault(int(i), {})[k] = v.reshape(shape) if fits else v
    return {"state": state, "param_groups": groups}


def save_checkpoint(folder: Path, config: dict, ema: dict, state: dict) -> dict:
    """Write weights, training state, then the config naming both files' SHA-256 (all atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, tensors in ((WEIGHTS, ema), (STATE, state)):
        with atomic_path(folder / name) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        hashes[name] = sha256_file(folder / name)
    config = config | {"files": hashes}
    write_json(folder / CONFIG, config)
    return config


def load_checkpoint(folder: str | Path, with_state: bool = False) -> Checkpoint:
    """Read a model folder, checking its format and the files' hashes; ModelFileError otherwise."""
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise ModelFileError(f"{path}: not found (train a model with 'dualpatch augment ddpm')")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from exc
    if config.get("format") != FORMAT or config.get("version") != VERSION:
        raise ModelFileError(f"{path}: not a {FORMAT} v{VERSION} model")
    loaded = {}
    for name in (WEIGHTS, STATE) if with_state else (WEIGHTS,):
        file = folder / name
        if not file.is_file():
            raise ModelFileError(f"{file}: missing")
        if sha256_file(file) != config.get("files", {}).get(name):
            raise ModelFileError(f"{file}: SHA-256 differs from {CONFIG} (truncated or altered)")
        try:
            loaded[name] = load_file(str(file))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelFileError(f"{file}: unreadable ({str(exc).splitlines()[0]})") from exc
    return Checkpoint(config, loaded[WEIGHTS], loaded.get(STATE))
