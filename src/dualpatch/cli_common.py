"""What every command group shares: option choices, dataset opening, the metrics table and how
problems reach the user."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import typer

from .errors import DualpatchError
from .scoring import DUAL_RULES


class DatasetName(StrEnum):
    kolektorsdd = "kolektorsdd"
    ksdd2 = "ksdd2"
    folder = "folder"
    demo = "demo"


@contextlib.contextmanager
def reporting(always: bool = True) -> Iterator[None]:
    """Warnings as one ``warning:`` line each; dualpatch errors as one ``error:`` line, exit 1.

    ``always`` repeats a warning each time it happens (one per bad file), not once per place.
    """

    def show(message, category, filename, lineno, file=None, line=None):
        typer.secho(f"warning: {message}", fg="yellow", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always" if always else "default")
        warnings.showwarning = show
        try:
            yield
        except DualpatchError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None


class Bank(StrEnum):
    single = "single"
    dual = "dual"


class Backbone(StrEnum):
    efficientnet_lite0 = "efficientnet_lite0"
    efficientnet_lite2 = "efficientnet_lite2"
    resnet50 = "resnet50"
    wide_resnet50_2 = "wide_resnet50_2"


class DefectSource(StrEnum):
    image = "image"
    crop = "crop"


Rule = StrEnum("Rule", {name: name for name in DUAL_RULES})


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


FORCE = typer.Option(False, "--force", help="Replace an --out that holds files not written here.")


class OnDuplicates(StrEnum):
    warn = "warn"
    drop = "drop"
    error = "error"


ON_DUPLICATES_HELP = "A test image that copies a training image: warn, drop it, or error."


def open_dataset(
    name: DatasetName,
    data: Path,
    split: str,
    train_items: str | None = None,
    on_duplicates: OnDuplicates = OnDuplicates.warn,
):
    """One split of a dataset, after both splits were checked for duplicate images."""
    from .limits import parse_items
    from .protocol import make_splits

    items = parse_items(train_items) if name == DatasetName.kolektorsdd and train_items else None
    (split_,) = make_splits(name.value, data, None, items, on_duplicates.value)
    return split_.train if split == "train" else split_.test


def print_metrics(results: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="results")
    keys = ["image_auroc", "pixel_auroc", "image_ap", "pixel_aupro", "f1_max", "f1_at_threshold"]
    keys = [k for k in keys if any(k in m for m in results.values())]
    heads = {"f1_max": "oracle f1_max", "f1_at_threshold": "f1 (val. threshold)"}
    table.add_column("run", no_wrap=True, min_width=max(len(n) for n in results))
    for k in keys:
        table.add_column(heads.get(k, k), justify="right")

    def cell(m: dict, k: str) -> str:
        value = m.get(k)
        if value is None or value != value:  # undefined (e.g. one class only): null in JSON
            return "n/a"
        text = f"{value:.3f}"
        if m.get("n_evaluations", 1) > 1 and f"{k}_std" in m:
            text += f" ± {m[f'{k}_std']:.3f}"
        return text

    for name, m in results.items():
        table.add_row(name, *[cell(m, k) for k in keys])
    if any(m.get("n_evaluations", 1) > 1 for m in results.values()):
        table.caption = "mean ± std over folds x seeds; 95% intervals in metrics.json / report.html"
    # at least 120 columns: a piped or narrow terminal would otherwise cut the metric names
    console = Console()
    Console(width=max(console.width, 120)).print(table)
