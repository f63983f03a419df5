"""The reference recipe: Stable Diffusion XL inpainting of real defect masks on normal images.

Weights are never downloaded: pass a local diffusers folder (``model_index.json`` beside the
component folders) or a single ``.safetensors`` checkpoint (with ``config`` naming a local
diffusers config folder when the hub cache does not hold one).
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dualpatch.augment.device import resolve_device
from dualpatch.augment.manifest import ManifestRow, check_output, open_output
from dualpatch.augment.sources import (
    data_channels,
    defect_shapes,
    place,
    read_pixels,
    training_sources,
)
from dualpatch.data import Dataset
from dualpatch.data.crop_folder import CropSpec
from dualpatch.data.crop_reader import CropRow
from dualpatch.data.images import resize, resize_image, resize_mask
from dualpatch.errors import WeightsError
from dualpatch.events import track
from dualpatch.fileio import sha256_file

PROMPTS = ("white marks on the wall", "copper metal scratches")
NEGATIVE = "smooth, plain, black, dark, shadow"
GEN_SIZE = (1024, 1024)  # (H, W) SDXL's native resolution
OUT_SIZE = (632, 224)  # (H, W) KSDD2's frame


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Mute diffusers' per-image warning about casting the VAE (it upcasts it on purpose)."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def weights_sha256(weights: Path) -> str:
    """SHA-256 of a checkpoint file; for a folder, of its files' relative paths and SHA-256s."""
    if weights.is_file():
        return sha256_file(weights)
    h = hashlib.sha256()
    for f in sorted(p for p in weights.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(weights).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def load_pipeline(weights: str | Path, device: str | None = None, config: str | Path | None = None):
    """``StableDiffusionXLInpaintPipeline`` from local files only; WeightsError if unusable.

    fp16 on CUDA; fp32 on CPU (with a warning: 30 steps at 1024x1024 take many minutes per image).
    """
    from diffusers import StableDiffusionXLInpaintPipeline

    weights = Path(weights)
    hint = "a diffusers folder with model_index.json or a single .safetensors checkpoint"
    if not weights.exists():
        raise WeightsError(f"{weights}: SDXL inpainting weights not found (expected {hint})")
    if weights.is_dir() and not (weights / "model_index.json").is_file():
        raise WeightsError(f"{weights}: no model_index.json (expected {hint})")
    dev = resolve_device(device)
    if dev.type == "cpu":
        warnings.warn(
            "no CUDA device: SDXL inpainting runs on the CPU and takes many minutes per image",
            stacklevel=2,
        )
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    try:
        if weights.is_dir():
            pipe = StableDiffusionXLInpaintPipeline.from_pretrained(
                weights, local_files_only=True, torch_dtype=dtype
            )
        else:
            extra = {"config": str(config)} if config else {}
            pipe = StableDiffusionXLInpaintPipeline.from_single_file(
                str(weights), local_files_only=True, torch_dtype=dtype, **extra
            )
    except Exception as exc:  # diffusers raises OSError, ValueError, EnvironmentError, ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{weights}: cannot load an SDXL inpainting pipeline ({msg})") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


# the generators' common tail of parameters (seed, device, progress, log, force, as_crops), as
# generate_ddpm and generate_paste take it, so that augment.generate calls them alike
# The parameter tail (seed ... force, as_crops) is every generator's (ddpm, sdxl, paste) on
# purpose: ``augment.generate`` and the CLI call them alike; see the note above generate_ddpm.
def generate_sdxl(
    weights: str | Path, dataset: Dataset, n_per_prompt: int, out: str | Path,
    prompts: Sequence[str] = PROMPTS, negative: str = NEGATIVE, steps: int = 30,
    guidance: float = 20.0, strength: float = 0.99, padding_mask_crop: int | None = 2,
    gen_size: tuple[int, int] = GEN_SIZE, out_size: tuple[int, int] = OUT_SIZE, seed: int = 0,
    config: str | Path | None = None, device: str | None = None, progress: bool = True,
    log: Callable[[str], None] | None = None, force: bool = False,
    as_crops: CropSpec | None = None,
) -> list[ManifestRow] | list[CropRow]:  # fmt: skip
    """Write ``n_per_prompt`` images per prompt to ``out`` (imgs/, masks/, manifest.csv).

    Each takes a real training defect mask (moved, flipped, scaled) on a random normal training
    image, inpaints it at ``gen_size`` (H, W) and resizes to ``out_size`` (H, W). Outside the mask
    the output is the resized source; grayscale data gives grayscale output. Output ``i`` uses seed
    ``seed + i``. ``as_crops`` writes each image's defect crops instead (see ``open_output``).
    """
    weights = Path(weights)
    if as_crops is None:
        check_output(out, force, [dataset.root, weights])
    pipe = load_pipeline(weights, device, config)
    if log:
        log(f"sdxl: hashing {weights}")
    sha = weights_sha256(weights)
    normals, defects = training_sources(dataset)
    shapes = defect_shapes(defects)
    channels = data_channels(normals + defects)
    jobs = [(p, k) for p in prompts for k in range(n_per_prompt)]
    if log:
        log(f"sdxl: {len(jobs)} images, {steps} steps at {gen_size[1]}x{gen_size[0]} on "
            f"{pipe.device}")  # fmt: skip
    settings = dict(negative_prompt=negative, height=gen_size[0], width=gen_size[1],
                    num_inference_steps=steps, guidance_scale=guidance, strength=strength,
                    padding_mask_crop=padding_mask_crop)  # fmt: skip
    inputs = [dataset.root, weights]
    with open_output(out, as_crops, "sdxl", force, inputs) as writer, _quiet_diffusers():
        for i, (prompt, _) in enumerate(track(jobs, "sdxl", progress=progress)):
            rng = np.random.default_rng(seed + i)
            normal = normals[int(rng.integers(len(normals)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            image = read_pixels(normal, 3)
            mask = place(rng, shape, image.shape[:2]).on_canvas(shape.mask, image.shape[:2])
            result = pipe(
                prompt=prompt, image=Image.fromarray(resize_image(image, gen_size)),
                mask_image=Image.fromarray(resize_mask(mask, gen_size).astype(np.uint8) * 255),
                generator=torch.Generator().manual_seed(seed + i), **settings,
            ).images[0]  # fmt: skip
            final, small_mask = _in_frame(result, image, mask, out_size, channels)
            writer.add(final, small_mask, normal.image_path, shape.sample.mask_path, seed + i, sha)
    return writer.rows


def _in_frame(
    result: Image.Image,
    image: np.ndarray,
    mask: np.ndarray,
    out_size: tuple[int, int],
    channels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The generated pixels inside the mask over the source outside it, at ``out_size``, and the
    mask at that size; grayscale when the data is."""
    generated = resize(np.asarray(result.convert("RGB")), out_size, "bicubic")
    small_mask = resize_mask(mask, out_size)
    final = resize_image(image, out_size).copy()
    final[small_mask] = generated[small_mask]
    if channels == 1:
        final = np.asarray(Image.fromarray(final).convert("L"))
    return final, small_mask
