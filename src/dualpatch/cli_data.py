"""``dualpatch data``: download and prepare datasets (KSDD2)."""

from __future__ import annotations

from pathlib import Path

import typer

from .cli_common import reporting

app = typer.Typer(help="Download and prepare datasets (KolektorSDD2).", no_args_is_help=True)

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
