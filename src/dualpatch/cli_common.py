"""What every command group shares: option choices, dataset opening, the metrics table and how
problems reach the user."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from .cli_spec import choice_enum
from .errors import ConfigError, DualpatchError

# Option choices, from the registries through the run spec (dualpatch.spec): one edit in a
# registry adds a choice here.
DatasetName = choice_enum("dataset")
Bank = choice_enum("bank")
Backbone = choice_enum("backbone")
DefectSource = choice_enum("defects")
Rule = choice_enum("rule")
OnDuplicates = choice_enum("on_duplicates")


# ------------------------------------------------------------------------------ problems
def show_warning(message, category=None, filename=None, lineno=None, file=None, line=None):
    """Warnings are user-facing messages here: one ``warning:`` line, no source location."""
    typer.secho(f"warning: {message}", fg="yellow", err=True)


def report_problem(exc: BaseException) -> int | None:
    """The one error path: print ``exc`` as one ``error:`` line (a usage error as click words
    it, with a pointer to --help) and return the exit status; None if ``exc`` is a bug."""
    if isinstance(exc, DualpatchError):
        typer.echo(f"error: {exc}", err=True)
        return 1
    if isinstance(exc, OSError):  # an output that cannot be written, a folder that is a file
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        return 1
    code: Any = getattr(exc, "exit_code", None)
    if not hasattr(exc, "show") or not isinstance(code, int):  # not a usage error either
        return None
    if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
        exc.show()  # type: ignore[attr-defined]
    else:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        typer.echo(f"error: {message}{hint}", err=True)
    return code


class Commands(TyperGroup):
    """Every command group: whatever goes wrong in a command ends in ``report_problem``, also
    when a group is invoked on its own (tests call the sub-apps directly)."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            code = report_problem(exc)
            if code is None:
                raise
            raise typer.Exit(code) from None


def command_group(**options: Any) -> typer.Typer:
    """A typer app whose problems take the one error path (``Commands``)."""
    defaults = {"no_args_is_help": True, "pretty_exceptions_enable": False}
    return typer.Typer(cls=Commands, add_completion=False, **{**defaults, **options})


@contextlib.contextmanager
def reporting(always: bool = True) -> Iterator[None]:
    """Warnings as one ``warning:`` line each, progress events as rich bars (errors take the one
    error path, ``Commands``).

    ``always`` repeats a warning each time it happens (one per bad file), not once per place.
    """
    from .cli_progress import rendering

    with warnings.catch_warnings(), rendering():
        warnings.simplefilter("always" if always else "default")
        warnings.showwarning = show_warning
        yield


def fail(message: str) -> None:
    """Stop the command with ``message`` as its one ``error:`` line, exit status 1."""
    raise ConfigError(message)


FORCE = typer.Option(False, "--force", help="Replace an --out that holds files not written here.")
MODEL = typer.Option(..., help="Model folder written by fit.")
#: what the run spec's ``--weights`` means to a command that loads a fitted model
WEIGHTS_MORE = "Give the fit's, if it used one."


def open_dataset(
    name: str,
    data: Path,
    split: str,
    train_items: str | None = None,
    on_duplicates: str = "warn",
    near_duplicates: int | None = None,
):
    """One split of a dataset, after both splits were checked for duplicate images (``name`` and
    ``on_duplicates``: the option's text or enum member; ``near_duplicates``: near copies too)."""
    from .limits import parse_items
    from .protocol import make_splits

    items = parse_items(train_items) if name == "kolektorsdd" and train_items else None
    (split_,) = make_splits(str(name), Path(data), None, items, str(on_duplicates), 0,
                            near_duplicates)  # fmt: skip
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
