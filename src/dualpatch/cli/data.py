"""``dualpatch data``: download and prepare datasets (KSDD2)."""

from __future__ import annotations

from pathlib import Path

import typer

from dualpatch.cli.common import FOLDER_SETTINGS, command_group, reporting
from dualpatch.cli.spec import spec_options
from dualpatch.spec import ExperimentSpec

app = command_group(help="Download and prepare datasets (KolektorSDD2); cut defect crops.")

DATASETS = ("ksdd2",)


def _check_dataset(name: str) -> None:
    if name not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")


@app.command()
def download(
    dataset: str = typer.Argument(..., help="Dataset to fetch: ksdd2."),
    out: Path = typer.Option(..., "--out", help="Folder to unpack into (gets train/ and test/)."),
    archive: Path | None = typer.Option(
        None, "--archive", help="Use this already downloaded zip instead of the network."
    ),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected SHA-256 of the zip."),
    url: str | None = typer.Option(None, "--url", help="Download from here instead."),
    force: bool = typer.Option(
        False, "--force", help="Unpack again even if OUT looks done, replacing what it holds."
    ),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for the server."),
) -> None:
    """Download KSDD2 (resumable), verify it and unpack it safely into OUT.

    Without network, fetch the zip by hand and pass it with --archive PATH.
    """
    _check_dataset(dataset)
    from dualpatch.data.download import KSDD2_URL, download_ksdd2

    with reporting():
        download_ksdd2(
            out, archive=archive, url=url or KSDD2_URL, sha256=sha256, force=force,
            connect_timeout=timeout, log=typer.echo,
        )  # fmt: skip


@app.command()
def prepare(
    dataset: str = typer.Argument(..., help="Dataset to prepare: ksdd2."),
    src: Path = typer.Option(..., "--src", help="Unpacked KSDD2 folder or its zip."),
    out: Path = typer.Option(..., "--out", help="Folder for the prepared set."),
    image_size: tuple[int, int] = typer.Option(
        (632, 224), "--image-size", help="Output size H W (height first, as everywhere)."
    ),
    size: tuple[int, int] | None = typer.Option(None, "--size", hidden=True),  # old: W H
    workers: int | None = typer.Option(None, "--workers", help="Threads (default: up to 4)."),
    force: bool = typer.Option(
        False, "--force", help="Replace an OUT that holds files not written by 'data prepare'."
    ),
) -> None:
    """Resize KSDD2 to one size, drop the stray '(copy)' pair and write train.csv/test.csv."""
    _check_dataset(dataset)
    from dualpatch.cli.spec import size_hw
    from dualpatch.data.prepare import prepare_ksdd2
    from dualpatch.limits import check_size

    with reporting():
        h, w = size_hw(image_size, size, "--size")
        check_size(h, w, f"--size {w} {h}" if size else f"--image-size {h} {w}")
        prepare_ksdd2(src, out, image_size=(h, w), workers=workers, log=typer.echo, force=force)


@app.command()
@spec_options(
    "dataset", "data", "image_size", "train_items", *FOLDER_SETTINGS, required=("dataset", "data"),
    more={"data": "Only its training split is used.",
          "image_size": "The crops are cut at this scale: give fit's --image-size."},
)  # fmt: skip
def crops(
    spec: ExperimentSpec | None = None,
    out: Path = typer.Option(..., help="New or empty folder for the crops and crops.csv."),
    padding: int = typer.Option(16, min=0, help="Pixels of surface around each defect region."),
    min_size: int = typer.Option(32, min=1, help="Smallest box side; smaller boxes grow to it."),
    force: bool = typer.Option(False, help="Replace crops that dualpatch wrote to OUT before."),
    flags: dict | None = None,
) -> None:
    """Write one crop per connected defect region of the training split, its mask, and crops.csv.

    The crops are those of 'fit --defects crop' at the same --image-size: 'fit --crops OUT' gives
    the same model. Edit them, add your own, or add generated ones with 'augment ... --as-crops'.
    """
    from dualpatch.cli.common import open_dataset
    from dualpatch.data import split_validation
    from dualpatch.data.crop_folder import CropSpec, write_training_crops
    from dualpatch.defaults import MIN_SIDE
    from dualpatch.errors import ConfigError
    from dualpatch.limits import check_size

    assert spec is not None and flags is not None  # given by spec_options
    size, train_items = spec.image_size, spec.train_items
    with reporting():
        where = f"{flags['image_size']} {size[0]} {size[1]}"
        if min(size) < MIN_SIDE:
            raise ConfigError(f"{where}: each side needs at least {MIN_SIDE}")
        check_size(size[0], size[1], where)
        train = open_dataset(spec.dataset, spec.data, "train", train_items, settings=spec)
        train = split_validation(train)[0]  # fit's defects: a validation part is not among them
        info = {"command": "data crops", "dataset": spec.dataset, "data": spec.data}
        if train_items:
            info["train_items"] = train_items
        crop_spec = CropSpec(size, padding, min_size, force=force)
        rows = write_training_crops(train, out, crop_spec, info)
    regions = len({r.source_image for r in rows})
    typer.echo(f"wrote {len(rows)} crops of {regions} defective images to {out}")
