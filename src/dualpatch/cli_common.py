"""What every command group shares: dataset names and how problems reach the user."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from enum import StrEnum

import typer

from .errors import DualpatchError


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
