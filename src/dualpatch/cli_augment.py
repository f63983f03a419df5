"""``dualpatch augment``: synthetic defect images for the defect bank (ddpm, sdxl, paste)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .cli_common import DatasetName, reporting
from .errors import ConfigError

app = typer.Typer(
    help="Make synthetic defect images (imgs/, masks/, manifest.csv) from the training split.",
    no_args_is_help=True,
)


def _train_split(dataset: DatasetName, data: Path):
    from .data import load_dataset

    return load_dataset(dataset.value, data, "train")


def _done(out: Path, n: int, started: float) -> None:
    typer.echo(f"wrote {n} images to {out} ({time.monotonic() - started:.0f} s)")


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
    sample_steps: int = typer.Option(10, min=1, help="DDIM steps per image."),
    scale: float | None = typer.Option(
        None, min=0.05, max=4, help="Model pixels per image pixel (default: from defect sizes)."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda if available)."),
    bf16: bool | None = typer.Option(
        None, "--bf16/--no-bf16", help="bf16 autocast (default: on CUDA and bf16-capable CPUs)."
    ),
) -> None:
    """Train a small inpainting diffusion model on the training defects, then inpaint N masks.

    Each output is a normal training image with a real training defect mask (moved, flipped,
    scaled, thinned) filled by the model; pixels outside the mask are the source's.
    """
    from .augment.ddpm import DDPMConfig, generate_ddpm

    started = time.monotonic()
    with reporting(always=False):
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
            log=typer.echo,
        )  # fmt: skip
    _done(out, len(rows), started)


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
) -> None:
    """Inpaint real defect masks on normal images with a Stable Diffusion XL inpainting model.

    The reference recipe: prompts 'white marks on the wall' and 'copper metal scratches', 30 steps,
    guidance 20, strength 0.99, generated at 1024x1024 and resized to 224x632.
    """
    from .augment.sdxl import NEGATIVE, PROMPTS, generate_sdxl

    started = time.monotonic()
    with reporting(always=False):
        rows = generate_sdxl(
            weights, _train_split(dataset, data), n_per_prompt, out,
            prompts=tuple(prompt) if prompt else PROMPTS,
            negative=NEGATIVE if negative is None else negative,
            steps=steps, guidance=guidance, strength=strength,
            gen_size=(gen_size[1], gen_size[0]), out_size=(size[1], size[0]),
            seed=seed, config=config, device=device, log=typer.echo,
        )  # fmt: skip
    _done(out, len(rows), started)


@app.command()
def paste(
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root; only its training split is used."),
    n: int = typer.Option(..., "--n", min=1, help="Images to generate."),
    out: Path = typer.Option(..., help="Output folder (imgs/, masks/, manifest.csv)."),
    seed: int = typer.Option(0, help="Output i uses seed+i."),
) -> None:
    """Copy-paste baseline: training defects Poisson-blended onto normal training images."""
    from .augment.paste import generate_paste

    started = time.monotonic()
    with reporting(always=False):
        rows = generate_paste(_train_split(dataset, data), n, out, seed, log=typer.echo)
    _done(out, len(rows), started)
