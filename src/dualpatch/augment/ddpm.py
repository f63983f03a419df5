"""A small conditional inpainting diffusion model trained on the data's own defects.

Recipe (known good on a 2-core CPU): a ``UNet2DModel`` without attention on 64x64 patches taking
(noisy patch, mask, masked patch), v-prediction with the ``squaredcos_cap_v2`` schedule, AdamW 3e-4,
batch 16, bf16 autocast, EMA weights for sampling, DDIM sampling. Training patches are cut around
the training split's defects (class 1) and from normal images under random masks (class 0, so the
model also knows the plain surface); sampling asks for class 1 inside a real defect mask moved onto
a normal image and keeps every pixel outside the mask.

The model is convolutional, so it samples a window of any size around the mask at the scale it was
trained at: long cracks come out in one pass, with neither tiling nor distortion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from dualpatch import events
from dualpatch.augment.ddpm_model import (
    WEIGHTS,
    DDPMConfig,
    autocast,
    build_schedulers,
    build_unet,
    denormalise,
    load_checkpoint,
    normalise_window,
    use_bf16,
)
from dualpatch.augment.ddpm_train import train_ddpm
from dualpatch.augment.device import resolve_device
from dualpatch.augment.manifest import ManifestRow, check_output, open_output
from dualpatch.augment.sources import (
    PlacementPrior,
    defect_shapes,
    place,
    read_pixels,
    thin,
    training_sources,
)
from dualpatch.data import Dataset
from dualpatch.data.crop_folder import CropSpec
from dualpatch.data.crop_reader import CropRow
from dualpatch.data.images import resize
from dualpatch.errors import ConfigError

__all__ = [
    "DDPMConfig",
    "Inpainter",
    "feather_weights",
    "generate_ddpm",
    "load_checkpoint",
    "mask_contrast",
    "sample_ddpm",
    "train_ddpm",
]

# ----------------------------------------------------------------------------- sampling


#: model pixels of surface around the mask's box that sampling sees. A tight crop: the first
#: sampler took half a patch (32) each side, 2-4x the pixels of a defect's own box, for context
#: the model barely uses once the known pixels are reset at every step.
CONTEXT = 8
#: image pixels over which the generated defect fades into the original at the mask's edge
FEATHER = 1.0


class Inpainter:
    """A trained model ready to fill masks: EMA weights, DDIM, RePaint-style known-region reset.

    ``context`` (model pixels around the mask's box; None: half a patch, the first sampler's
    window) bounds the crop that is denoised; ``feather`` (image pixels) blends the generated
    pixels into the original just inside the mask's edge. Pixels outside the mask never change.
    """

    def __init__(self, model_dir: str | Path, device: str | None = None, steps: int | None = None,
                 bf16: bool | None = None, context: int | None = CONTEXT,
                 feather: float = FEATHER):  # fmt: skip
        ck = load_checkpoint(model_dir)
        self.config = ck.config
        self.sha256 = ck.config["files"][WEIGHTS]
        self.cfg = DDPMConfig.from_json(ck.config["train"])
        if steps:
            self.cfg.sample_steps = steps
        if bf16 is not None:
            self.cfg.bf16 = bf16
        self.context = self.cfg.patch // 2 if context is None else int(context)
        self.feather = float(feather)
        self.channels = ck.config["channels"]
        self.device = resolve_device(device)
        self.unet = build_unet(self.cfg, self.channels)
        self.unet.load_state_dict(ck.ema)
        self.unet.to(self.device).eval()
        _, self.scheduler = build_schedulers(self.cfg)
        self.bf16 = use_bf16(self.cfg, self.device)

    def window(self, mask: np.ndarray) -> tuple[int, int, int, int]:
        """Image box around the mask with ``context`` model pixels of surface each side."""
        ys, xs = np.nonzero(mask)
        margin = int(math.ceil(self.context / self.cfg.scale))
        h, w = mask.shape
        return (max(ys.min() - margin, 0), max(xs.min() - margin, 0),
                min(ys.max() + 1 + margin, h), min(xs.max() + 1 + margin, w))  # fmt: skip

    @torch.no_grad()
    def inpaint(self, image: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        """Fill ``mask`` of ``image`` (HxWxC uint8) with a defect; pixels outside stay identical."""
        y0, x0, y1, x1 = self.window(mask)
        crop, cmask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        # Model-scale size, a multiple of 8 so the U-Net's down/up-sampling lines up.
        h = max(8, int(round((y1 - y0) * self.cfg.scale / 8)) * 8)
        w = max(8, int(round((x1 - x0) * self.cfg.scale / 8)) * 8)
        small = resize(crop, (h, w), "area").reshape(h, w, -1)
        # Area-resized and thresholded at > 0: every pixel touched by the mask is regenerated.
        msmall = resize(cmask.astype(np.float32), (h, w), "area") > 0
        dev = self.device
        small = small.astype(np.float32) / 127.5 - 1
        if self.cfg.normalise:
            small, mean, spread = normalise_window(small, ~msmall)
        x_known = torch.from_numpy(small.transpose(2, 0, 1).copy())[None]
        m = torch.from_numpy(msmall.astype(np.float32))[None, None]
        gen = torch.Generator().manual_seed(int(seed))
        x_known, m = x_known.to(dev), m.to(dev)
        sched = self.scheduler
        sched.set_timesteps(self.cfg.sample_steps)
        alphas = sched.alphas_cumprod.to(dev)
        x = torch.randn(x_known.shape, generator=gen).to(dev)
        cond = torch.cat([m, x_known * (1 - m)], 1)
        cls = torch.ones(1, dtype=torch.long, device=dev)
        stride = sched.config.num_train_timesteps // sched.num_inference_steps
        for t in sched.timesteps:
            with autocast(dev, self.bf16):
                v = self.unet(torch.cat([x, cond], 1), t.to(dev), class_labels=cls).sample
            x = sched.step(v.float(), t, x).prev_sample
            # RePaint: outside the mask, reset the sample to the original noised to this level.
            prev = int(t) - stride
            if prev >= 0:
                noise = torch.randn(x.shape, generator=gen).to(dev)
                known = alphas[prev].sqrt() * x_known + (1 - alphas[prev]).sqrt() * noise
            else:
                known = x_known
            x = m * x + (1 - m) * known
        if self.cfg.normalise:
            x = denormalise(x.clamp(-1, 1), mean, spread)
        gen_small = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        up = resize(gen_small, (y1 - y0, x1 - x0), "bicubic")
        up = up.reshape(y1 - y0, x1 - x0, -1).astype(np.float32)
        # Feather: weight 1 deep inside the mask, falling towards its edge, 0 outside.
        alpha = feather_weights(cmask, self.feather)[..., None]
        blended = alpha * up + (1 - alpha) * crop.astype(np.float32)
        out = image.copy()
        out[y0:y1, x0:x1][cmask] = np.clip(np.round(blended[cmask]), 0, 255).astype(np.uint8)
        return out


def feather_weights(mask: np.ndarray, width: float) -> np.ndarray:
    """Per mask pixel: min(1, distance to the nearest pixel outside / (width + 1)); 0 outside.

    With width 0 every mask pixel weighs 1 (a hard paste)."""
    if width <= 0:
        return mask.astype(np.float32)
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return np.clip(inside / (width + 1.0), 0.0, 1.0).astype(np.float32)


def mask_contrast(image: np.ndarray, mask: np.ndarray, rim: int = 3) -> float:
    """How far the masked pixels' mean lies from a ``rim``-pixel ring around them, in the ring's
    standard deviations: near 0, the region looks like the background it sits on."""
    gray = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    ring = ndimage.binary_dilation(mask, iterations=rim) & ~mask
    if not mask.any() or not ring.any():
        return 0.0
    return float(abs(gray[mask].mean() - gray[ring].mean()) / (gray[ring].std() + 1.0))


# (generate_ddpm repeats this tail of parameters, and generate_sdxl/generate_paste share it: see
# the note above generate_ddpm)
def sample_ddpm(
    model_dir: str | Path, dataset: Dataset, n: int, out: str | Path, seed: int = 0,
    device: str | None = None, sample_steps: int | None = None, progress: bool = True,
    log: Callable[[str], None] | None = None, force: bool = False,
    as_crops: CropSpec | None = None, context: int | None = CONTEXT, feather: float = FEATHER,
    placement: str = "learned", min_contrast: float = 0.0, tries: int = 3,
) -> list[ManifestRow] | list[CropRow]:  # fmt: skip
    """Write ``n`` synthetic defect images to ``out`` (imgs/, masks/, manifest.csv), or their
    defect crops with ``as_crops`` (see ``open_output``).

    Output ``i`` (seed ``seed + i``) puts a real training defect mask, scaled, randomly thinned
    and, if the model was trained with flips (``DDPMConfig.flip``), flipped, on a random normal
    training image and inpaints inside it only. ``placement`` "learned"
    puts it near a training defect's centre and on the part (``PlacementPrior``); "source" near its
    own source position, as the first sampler did. The manifest's placement column says which and
    why. A sample whose mask region differs from its surroundings by less than ``min_contrast``
    (``mask_contrast``) is drawn again, up to ``tries`` times in all; the most distinct is kept.
    ``context``/``feather``: see ``Inpainter`` (None/0 with 50 steps: the first sampler).
    Progress goes to the event channel (``dualpatch.events``, stage ``sample``).
    """
    if placement not in ("learned", "source"):
        raise ConfigError(f"unknown placement {placement!r} (learned or source)")
    model = Inpainter(model_dir, device, sample_steps, context=context, feather=feather)
    normals, defects = training_sources(dataset)
    shapes = defect_shapes(defects)
    prior = PlacementPrior.learn(shapes) if placement == "learned" else None
    if log:
        log(f"ddpm: sampling {n} images with {model.cfg.sample_steps} DDIM steps on {model.device}")
    # OUT/model is the default model folder: carried over, not an input that would be replaced
    own_model = Path(model_dir).resolve() == (Path(out) / "model").resolve()
    inputs = [dataset.root] + ([] if own_model else [model_dir])
    with open_output(out, as_crops, "ddpm", force, inputs) as writer:
        for i in events.track(range(n), "sample", progress=progress):
            rng = np.random.default_rng(seed + i)
            normal = normals[int(rng.integers(len(normals)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            image = read_pixels(normal, model.channels)
            mask, why = _place_mask(rng, shape, image, prior, model.cfg.flip)
            result, kept = _most_distinct(model, image, mask, seed + i, min_contrast, tries)
            writer.add(result, mask, normal.image_path, shape.sample.mask_path, seed + i,
                       model.sha256, why + kept)  # fmt: skip
    return writer.rows


def _place_mask(rng, shape, image: np.ndarray, prior: PlacementPrior | None, flip: bool):
    """The defect mask on ``image`` (learned placement, or near the source's own position), and
    why it went there; flipped at random only with ``flip`` (the model's ``DDPMConfig.flip``)."""
    if prior is not None:
        where, why = prior.place(rng, shape, image, flip=flip)
    else:
        where = place(rng, shape, image.shape[:2], flip=flip)
        why = "source defect's own position (+-0.25 of the image)"
    return where.put(thin(rng, where.apply(shape.mask)), image.shape[:2]), why


def _most_distinct(model: Inpainter, image: np.ndarray, mask: np.ndarray, seed: int,
                   min_contrast: float, tries: int) -> tuple[np.ndarray, str]:  # fmt: skip
    """Inpaint until the mask region stands out from its ring by ``min_contrast`` (at most
    ``tries`` samples); the most distinct sample and, with rejection on, a note for the manifest."""
    best = None
    for attempt in range(max(1, tries)):
        # the first try keeps the seed, so min_contrast 0 reproduces unrejected sampling
        result = model.inpaint(image, mask, seed + attempt * 1_000_003)
        contrast = mask_contrast(result, mask)
        if best is None or contrast > best[1]:
            best = (result, contrast, attempt + 1)
        if contrast >= min_contrast:
            break
    result, contrast, kept = best
    if min_contrast <= 0:
        return result, ""
    return result, f"; contrast {contrast:.2f} (min {min_contrast:.2f}, sample {kept})"


# train_ddpm's and sample_ddpm's parameters, repeated on purpose (the duplicate finder pairs these
# lines with train_ddpm's): generate_ddpm is the two in one call, and every generator (ddpm, sdxl,
# paste) takes the same tail (seed ... force, as_crops). Plain keyword parameters keep each public
# function's signature, help() and type checks complete; a shared options object would hide them.
def generate_ddpm(
    dataset: Dataset,
    n: int,
    out: str | Path,
    model_dir: str | Path | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    cfg: DDPMConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    force: bool = False,
    as_crops: CropSpec | None = None,
) -> list[ManifestRow] | list[CropRow]:
    """Train (or resume) the model in ``model_dir``, then sample ``n``.

    ``model_dir`` defaults to ``out/model``, or ``OUT-ddpm-model`` beside a crops folder
    (``as_crops``), which holds crops only."""
    own_model = model_dir is None
    if model_dir is None:
        out = Path(out)
        model_dir = out.with_name(f"{out.name}-ddpm-model") if as_crops else out / "model"
    resolve_device(device)
    if as_crops is None:  # before training: an OUT of the user's files is refused, not overwritten
        check_output(out, force, [dataset.root] + ([] if own_model else [model_dir]))
    train_ddpm(dataset, Path(model_dir), steps, minutes, seed, cfg, device, progress, log)
    sample_steps = cfg.sample_steps if cfg else None
    return sample_ddpm(
        model_dir, dataset, n, out, seed, device, sample_steps, progress, log, force, as_crops
    )
