"""``dualpatch augment``: synthetic defect images for the defect bank (ddpm, sdxl, paste)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .cli_common import DatasetName, reporting
from .errors import ConfigError

app = typer.Typer(
    help="Make synthetic defect images (imgs/, masks/, manifest.csv) from the training split, "
    "or their defect crops (--as-crops).",
    no_args_is_help=True,
)


def _train_split(dataset: DatasetName, data: Path):
    from .data import load_dataset

    return load_dataset(dataset.value, data, "train")


def _done(out: Path, n: int, started: float, as_crops: bool = False) -> None:
    what = "defect crops" if as_crops else "images"
    typer.echo(f"wrote {n} {what} to {out} ({time.monotonic() - started:.0f} s)")


# --as-crops and its settings, shared by every method
AS_CROPS = typer.Option(
    False, "--as-crops", help="Write defect crops (crops.csv, NAME.png, NAME_GT.png) instead."
)
CROP_SIZE = typer.Option(
    (320, 128), "--crop-size", help="With --as-crops: scale H W to cut at (fit --size)."
)
PADDING = typer.Option(16, min=0, help="With --as-crops: pixels around each defect region.")
MIN_SIZE = typer.Option(32, min=1, help="With --as-crops: smallest box side.")
APPEND = typer.Option(False, help="With --as-crops: add to crops dualpatch wrote to OUT before.")
FORCE = typer.Option(False, help="With --as-crops: replace crops dualpatch wrote to OUT before.")


def _crop_spec(as_crops, crop_size, padding, min_size, append, force):
    from .data.crop_folder import CropSpec

    if not as_crops:
        if append or force:
            raise ConfigError("--append and --force go with --as-crops")
        return None
    if append and force:
        raise ConfigError("--append and --force: choose one")
    return CropSpec(tuple(crop_size), padding, min_size, force=force, append=append)


def _channels(spec: str) -> tuple[int, ...]:
    try:
        out = tuple(int(c) for c in spec.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise ConfigError(f"--channels: {spec!r} is not a list of widths like 32,64,128")
    return out


@app.command()
def ddpm(
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root; only its training split is used."),
    n: int = typer.Option(..., "--n", min=1, help="Images to generate."),
    out: Path = typer.Option(..., help="Output folder (imgs/, masks/, manifest.csv)."),
    minutes: float | None = typer.Option(
        None, min=0, help="Train for at most this long in this run (default 15 without --steps)."
    ),
    steps: int | None = typer.Option(None, min=0, help="Train up to this many steps in total."),
    seed: int = typer.Option(0, help="Seed of training and sampling (output i uses seed+i)."),
    patch: int = typer.Option(64, min=16, help="Training patch side (multiple of 8)."),
    model: Path | None = typer.Option(
        None, help="Model folder; an existing one resumes training (default OUT/model)."
    ),
    channels: str = typer.Option("32,64,128", help="U-Net block widths."),
    batch: int = typer.Option(16, min=1, help="Training batch size."),
    sample_steps: int = typer.Option(50, min=1, help="DDIM steps per image."),
    scale: float | None = typer.Option(
        None, min=0.05, max=4, help="Model pixels per image pixel (default: from defect sizes)."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda if available)."),
    bf16: bool | None = typer.Option(
        None, "--bf16/--no-bf16", help="bf16 autocast (default: on CUDA and bf16-capable CPUs)."
    ),
    as_crops: bool = AS_CROPS,
    crop_size: tuple[int, int] = CROP_SIZE,
    padding: int = PADDING,
    min_size: int = MIN_SIZE,
    append: bool = APPEND,
    force: bool = FORCE,
) -> None:
    """Train a small inpainting diffusion model on the training defects, then inpaint N masks.

    Each output is a normal training image with a real training defect mask (moved, flipped,
    scaled, thinned) filled by the model; pixels outside the mask are the source's.
    """
    from .augment.ddpm import DDPMConfig, generate_ddpm

    started = time.monotonic()
    with reporting(always=False):
        spec = _crop_spec(as_crops, crop_size, padding, min_size, append, force)
        if patch % 8:
            raise ConfigError(f"--patch: {patch} is not a multiple of 8")
        if steps is None and minutes is None:
            minutes = 15.0
        cfg = DDPMConfig(
            patch=patch, channels=_channels(channels), batch=batch, sample_steps=sample_steps,
            scale=scale, bf16=bf16,
        )  # fmt: skip
        rows = generate_ddpm(
            _train_split(dataset, data), n, out, model, steps, minutes, seed, cfg, device,
            log=typer.echo, as_crops=spec,
        )  # fmt: skip
    _done(out, len(rows), started, as_crops)


@app.command()
def sdxl(
    weights: Path = typer.Option(
        ..., help="SDXL inpainting weights: a diffusers folder or a single .safetensors file."
    ),
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root; only its training split is used."),
    n_per_prompt: int = typer.Option(..., "--n-per-prompt", min=1, help="Images per prompt."),
    out: Path = typer.Option(..., help="Output folder (imgs/, masks/, manifest.csv)."),
    prompt: list[str] | None = typer.Option(
        None, help="Prompt (repeatable); default: the two reference prompts."
    ),
    negative: str | None = typer.Option(None, help="Negative prompt (default: reference one)."),
    steps: int = typer.Option(30, min=1, help="Denoising steps."),
    guidance: float = typer.Option(20.0, help="Classifier-free guidance scale."),
    strength: float = typer.Option(0.99, min=0.0, max=1.0, help="Inpainting strength."),
    gen_size: tuple[int, int] = typer.Option(
        (1024, 1024), help="Generation size W H (multiples of 8)."
    ),
    size: tuple[int, int] = typer.Option((224, 632), help="Output size W H."),
    seed: int = typer.Option(0, help="Output i uses seed+i."),
    config: Path | None = typer.Option(
        None, help="Local diffusers config folder for a single-file checkpoint (no download)."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda if available)."),
    as_crops: bool = AS_CROPS,
    crop_size: tuple[int, int] = CROP_SIZE,
    padding: int = PADDING,
    min_size: int = MIN_SIZE,
    append: bool = APPEND,
    force: bool = FORCE,
) -> None:
    """Inpaint real defect masks on normal images with a Stable Diffusion XL inpainting model.

    The reference recipe: prompts 'white marks on the wall' and 'copper metal scratches', 30 steps,
    guidance 20, strength 0.99, generated at 1024x1024 and resized to 224x632.
    """
    from .augment.sdxl import NEGATIVE, PROMPTS, generate_sdxl

    started = time.monotonic()
    with reporting(always=False):
        spec = _crop_spec(as_crops, crop_size, padding, min_size, append, force)
        rows = generate_sdxl(
            weights, _train_split(dataset, data), n_per_prompt, out,
            prompts=tuple(prompt) if prompt else PROMPTS,
            negative=NEGATIVE if negative is None else negative,
            steps=steps, guidance=guidance, strength=strength,
            gen_size=(gen_size[1], gen_size[0]), out_size=(size[1], size[0]),
            seed=seed, config=config, device=device, log=typer.echo, as_crops=spec,
        )  # fmt: skip
    _done(out, len(rows), started, as_crops)


@app.command()
def paste(
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root; only its training split is used."),
    n: int = typer.Option(..., "--n", min=1, help="Images to generate."),
    out: Path = typer.Option(..., help="Output folder (imgs/, masks/, manifest.csv)."),
    seed: int = typer.Option(0, help="Output i uses seed+i."),
    as_crops: bool = AS_CROPS,
    crop_size: tuple[int, int] = CROP_SIZE,
    padding: int = PADDING,
    min_size: int = MIN_SIZE,
    append: bool = APPEND,
    force: bool = FORCE,
) -> None:
    """Copy-paste baseline: training defects Poisson-blended onto normal training images."""
    from .augment.paste import generate_paste

    started = time.monotonic()
    with reporting(always=False):
        spec = _crop_spec(as_crops, crop_size, padding, min_size, append, force)
        train = _train_split(dataset, data)
        rows = generate_paste(train, n, out, seed, log=typer.echo, as_crops=spec)
    _done(out, len(rows), started, as_crops)
