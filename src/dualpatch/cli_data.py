"""``dualpatch data``: download and prepare datasets (KSDD2)."""

from __future__ import annotations

from pathlib import Path

import typer

from .cli_common import DatasetName, reporting

app = typer.Typer(
    help="Download and prepare datasets (KolektorSDD2); cut defect crops.", no_args_is_help=True
)

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
    from .data.download import KSDD2_URL, download_ksdd2

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
    size: tuple[int, int] = typer.Option((224, 632), "--size", help="Output width and height."),
    workers: int | None = typer.Option(None, "--workers", help="Threads (default: up to 4)."),
    force: bool = typer.Option(
        False, "--force", help="Replace an OUT that holds files not written by 'data prepare'."
    ),
) -> None:
    """Resize KSDD2 to one size, drop the stray '(copy)' pair and write train.csv/test.csv."""
    _check_dataset(dataset)
    from .data.prepare import prepare_ksdd2
    from .limits import check_size

    with reporting():
        check_size(size[1], size[0], f"--size {size[0]} {size[1]}")
        prepare_ksdd2(src, out, size=size, workers=workers, log=typer.echo, force=force)


@app.command()
def crops(
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root; only its training split is used."),
    out: Path = typer.Option(..., help="New or empty folder for the crops and crops.csv."),
    size: tuple[int, int] = typer.Option(
        (320, 128), help="Scale H W to cut at: the model's input size (fit --size)."
    ),
    padding: int = typer.Option(16, min=0, help="Pixels of surface around each defect region."),
    min_size: int = typer.Option(32, min=1, help="Smallest box side; smaller boxes grow to it."),
    train_items: str | None = typer.Option(None, help="KolektorSDD training items, e.g. 1-33."),
    force: bool = typer.Option(False, help="Replace crops that dualpatch wrote to OUT before."),
) -> None:
    """Write one crop per connected defect region of the training split, its mask, and crops.csv.

    The crops are those of 'fit --defects crop' at the same --size: 'fit --crops OUT' gives the
    same model. Edit them, add your own, or add generated ones with 'augment ... --as-crops'.
    """
    from .cli_common import open_dataset
    from .data.crop_folder import CropSpec, write_training_crops
    from .defaults import MIN_SIDE
    from .errors import ConfigError
    from .limits import check_size

    with reporting():
        if min(size) < MIN_SIDE:
            raise ConfigError(f"--size {size[0]} {size[1]}: each side needs at least {MIN_SIDE}")
        check_size(size[0], size[1], f"--size {size[0]} {size[1]}")
        train = open_dataset(dataset, data, "train", train_items)
        info = {"command": "data crops", "dataset": dataset.value, "data": str(data)}
        if train_items:
            info["train_items"] = train_items
        spec = CropSpec(tuple(size), padding, min_size, force=force)
        rows = write_training_crops(train, out, spec, info)
    regions = len({r.source_image for r in rows})
    typer.echo(f"wrote {len(rows)} crops of {regions} defective images to {out}")
