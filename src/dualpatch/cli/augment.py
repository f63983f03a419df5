"""``dualpatch augment``: synthetic defect images for the defect bank (ddpm, sdxl, paste)."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dualpatch.cli.common import FOLDER_SETTINGS, command_group, reporting
from dualpatch.cli.spec import size_hw, spec_options
from dualpatch.defaults import IMAGE_SIZE, MAX_SEED
from dualpatch.errors import ConfigError
from dualpatch.spec import ExperimentSpec

if TYPE_CHECKING:
    from dualpatch.data.crop_folder import CropSpec

app = command_group(
    help="Make synthetic defect images (imgs/, masks/, manifest.csv) from the training split, "
    "or their defect crops (--as-crops)."
)


#: the dataset options of every method (from the run spec, as in fit: dualpatch.spec)
training_split_options = spec_options(
    "dataset", "data", *FOLDER_SETTINGS, required=("dataset", "data"),
    more={"data": "Only its training split is used."},
)  # fmt: skip
N_IMAGES = typer.Option(..., "--n", min=1, help="Images to generate.")
OUT = typer.Option(..., help="Output folder (imgs/, masks/, manifest.csv).")
SEED = typer.Option(0, min=0, max=MAX_SEED, help="Output i uses seed+i.")


def _train_split(spec: ExperimentSpec):
    """The images fit learns from: a folder dataset's validation part is left out, so that no
    synthetic defect copies a validation image (fit scores them against its threshold)."""
    from dualpatch.data import layout_of, load_dataset, split_validation

    return split_validation(
        load_dataset(spec.dataset, Path(spec.data), "train", layout_of(vars(spec)))
    )[0]


def _done(out: Path, n: int, started: float, as_crops: bool = False) -> None:
    what = "defect crops" if as_crops else "images"
    typer.echo(f"wrote {n} {what} to {out} ({time.monotonic() - started:.0f} s)")


#: --as-crops and its settings, which every method takes (see ``_crop_options``)
CROP_OPTIONS = {
    "as_crops": (bool, typer.Option(
        False, "--as-crops", help="Write defect crops (crops.csv, NAME.png, NAME_GT.png) instead."
    )),
    "crop_size": (tuple[int, int], typer.Option(
        IMAGE_SIZE, "--crop-size", help="With --as-crops: scale H W to cut at (fit --image-size)."
    )),
    "padding": (int, typer.Option(
        16, min=0, help="With --as-crops: pixels around each defect region."
    )),
    "min_size": (int, typer.Option(32, min=1, help="With --as-crops: smallest box side.")),
    "append": (bool, typer.Option(
        False, help="With --as-crops: add to crops dualpatch wrote to OUT before."
    )),
    "force": (bool, typer.Option(
        False, help="Replace an OUT that holds files not written by 'augment' (with --as-crops: "
        "replace crops dualpatch wrote to OUT before)."
    )),
}  # fmt: skip


def _crop_options(command: Callable) -> Callable:
    """Give an augment command the ``CROP_OPTIONS``, declared once here rather than in each
    command; the command receives them as one ``crops`` argument (a CropSpec, or None)."""
    signature = inspect.signature(command)
    kept = [p for p in signature.parameters.values() if p.name not in ("crops", "force")]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in CROP_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_crops(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in CROP_OPTIONS}
        with reporting(always=False):
            crops = _crop_spec(*values.values())
        # --force also guards a plain output folder (see fileio.output_dir)
        return command(**kwargs, crops=crops, force=values["force"])

    with_crops.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
    with_crops.__annotations__ = {
        **{k: v for k, v in command.__annotations__.items() if k not in ("crops", "force")},
        **{name: kind for name, (kind, _) in CROP_OPTIONS.items()},
    }
    return with_crops


def _crop_spec(as_crops, crop_size, padding, min_size, append, force):
    from dualpatch.data.crop_folder import CropSpec

    if not as_crops:
        if append:
            raise ConfigError("--append goes with --as-crops")
        return None
    if append and force:
        raise ConfigError("--append and --force: choose one")
    return CropSpec(tuple(crop_size), padding, min_size, force=force, append=append)


def method_command(command: Callable) -> Callable:
    """An augment method: the dataset options, --as-crops and its settings, then the command's
    own options (declared once here for every method)."""
    return app.command()(_crop_options(training_split_options(command)))


def _channels(spec: str) -> tuple[int, ...]:
    try:
        out = tuple(int(c) for c in spec.split(","))
    except ValueError:
        out = ()
    if not out or min(out) < 1 or max(out) > 1024 or len(out) > 6:
        raise ConfigError(
            f"--channels: {spec!r} is not a list of 1 to 6 widths (at most 1024) like 32,64,128"
        )
    groups = min(32, out[0])  # the U-Net's group norm splits every block into this many groups
    if any(c % groups for c in out):
        raise ConfigError(
            f"--channels: {spec!r}: every width must be a multiple of {groups} "
            "(the group norm's group count: the first width, at most 32)"
        )
    return out


@method_command
def ddpm(
    spec: ExperimentSpec | None = None,
    n: int = N_IMAGES,
    out: Path = OUT,
    minutes: float | None = typer.Option(
        None, min=0, help="Train for at most this long in this run (default 15 without --steps)."
    ),
    steps: int | None = typer.Option(None, min=1, help="Train up to this many steps in total."),
    seed: int = typer.Option(
        0, min=0, max=MAX_SEED, help="Seed of training and sampling (output i uses seed+i)."
    ),
    patch: int = typer.Option(64, min=16, max=512, help="Training patch side (multiple of 8)."),
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
    crops: CropSpec | None = None,
    force: bool = False,
    flags: dict | None = None,
) -> None:
    """Train a small inpainting diffusion model on the training defects, then inpaint N masks.

    Each output is a normal training image with a real training defect mask (moved, flipped,
    scaled, thinned) filled by the model; pixels outside the mask are the source's.
    """
    from dualpatch.augment.ddpm import DDPMConfig, generate_ddpm

    assert spec is not None  # given by training_split_options
    started = time.monotonic()
    with reporting(always=False):
        if patch % 8:
            raise ConfigError(f"--patch: {patch} is not a multiple of 8")
        if steps is None and minutes is None:
            minutes = 15.0
        cfg = DDPMConfig(patch=patch, channels=_channels(channels), batch=batch,
                         sample_steps=sample_steps, scale=scale, bf16=bf16)  # fmt: skip
        rows = generate_ddpm(_train_split(spec), n, out, model, steps, minutes, seed, cfg, device,
                             log=typer.echo, force=force, as_crops=crops)  # fmt: skip
    _done(out, len(rows), started, crops is not None)


@method_command
def sdxl(
    weights: Path = typer.Option(
        ..., help="SDXL inpainting weights: a diffusers folder or a single .safetensors file."
    ),
    spec: ExperimentSpec | None = None,
    n_per_prompt: int = typer.Option(..., "--n-per-prompt", min=1, help="Images per prompt."),
    out: Path = OUT,
    prompt: list[str] | None = typer.Option(
        None, help="Prompt (repeatable); default: the two reference prompts."
    ),
    negative: str | None = typer.Option(None, help="Negative prompt (default: reference one)."),
    steps: int = typer.Option(30, min=1, help="Denoising steps."),
    guidance: float = typer.Option(20.0, help="Classifier-free guidance scale."),
    strength: float = typer.Option(0.99, min=0.0, max=1.0, help="Inpainting strength."),
    gen_image_size: tuple[int, int] = typer.Option(
        (1024, 1024), help="Generation size H W (multiples of 8)."
    ),
    image_size: tuple[int, int] = typer.Option((632, 224), help="Output size H W."),
    gen_size: tuple[int, int] | None = typer.Option(None, hidden=True),  # old: W H
    size: tuple[int, int] | None = typer.Option(None, hidden=True),  # old: W H
    seed: int = SEED,
    config: Path | None = typer.Option(
        None, help="Local diffusers config folder for a single-file checkpoint (no download)."
    ),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda if available)."),
    crops: CropSpec | None = None,
    force: bool = False,
    flags: dict | None = None,
) -> None:
    """Inpaint real defect masks on normal images with a Stable Diffusion XL inpainting model.

    The reference recipe: prompts 'white marks on the wall' and 'copper metal scratches', 30 steps,
    guidance 20, strength 0.99, generated at 1024x1024 and resized to H x W = 632 x 224.
    """
    from dualpatch.augment.sdxl import NEGATIVE, PROMPTS, generate_sdxl

    assert spec is not None  # given by training_split_options
    started = time.monotonic()
    with reporting(always=False):
        gen_image_size, image_size = _sdxl_sizes(gen_image_size, gen_size, image_size, size)
        rows = generate_sdxl(
            weights, _train_split(spec), n_per_prompt, out,
            prompts=tuple(prompt) if prompt else PROMPTS,
            negative=NEGATIVE if negative is None else negative,
            steps=steps, guidance=guidance, strength=strength,
            gen_size=gen_image_size, out_size=image_size,
            seed=seed, config=config, device=device, log=typer.echo, force=force, as_crops=crops,
        )  # fmt: skip
    _done(out, len(rows), started, crops is not None)


def _sdxl_sizes(gen_image_size, gen_size, image_size, size) -> tuple[tuple[int, int], ...]:
    """sdxl's generation and output sizes (H, W), from the options or their old W H forms."""
    gen = size_hw(gen_image_size, gen_size, "--gen-size", "--gen-image-size")
    return gen, size_hw(image_size, size, "--size")


@method_command
def paste(
    spec: ExperimentSpec | None = None,
    n: int = N_IMAGES,
    out: Path = OUT,
    seed: int = SEED,
    crops: CropSpec | None = None,
    force: bool = False,
    flags: dict | None = None,
) -> None:
    """Copy-paste baseline: training defects Poisson-blended onto normal training images."""
    from dualpatch.augment.paste import generate_paste

    assert spec is not None  # given by training_split_options
    started = time.monotonic()
    with reporting(always=False):
        train = _train_split(spec)
        rows = generate_paste(train, n, out, seed, log=typer.echo, force=force, as_crops=crops)
    _done(out, len(rows), started, crops is not None)
