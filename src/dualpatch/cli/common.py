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

from dualpatch.cli.spec import choice_enum
from dualpatch.errors import ConfigError, DualpatchError
from dualpatch.spec import ExperimentSpec

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


#: packages whose warnings are theirs, not ours: a user learns nothing from their raw text
LIBRARIES = frozenset({"sklearn", "numpy", "scipy", "torch", "torchvision", "PIL", "onnx",
                       "onnxruntime", "openvino", "faiss", "ray", "pandas", "pyarrow",
                       "matplotlib", "safetensors", "timm"})  # fmt: skip


class WarningDigest:
    """Warnings of a long command (``run``) as a person reads them.

    dualpatch's own: the first of a kind is shown at once, repeats are counted (a kind is the
    message less a leading file name: one line per bad mask file would be 9 lines) and summed up
    at the end. A library's (scikit-learn's "least populated class", numpy's "Mean of empty
    slice", torch's deprecations): never shown raw; counted, written to ``log`` when given, and
    summed up in one line at the end."""

    def __init__(self, log: Any = None) -> None:
        self.log = log
        self.kinds: dict[str, list[str]] = {}
        self.foreign: dict[tuple[str, str], int] = {}
        self.sources: dict[str, None] = {}
        self.pending: list[str] = []  # log lines: run.log appears with the results folder

    def show(self, message, category=None, filename=None, lineno=None, file=None, line=None):
        text, name = str(message), getattr(category, "__name__", "Warning")
        source = library_of(filename, category)
        if source is not None:
            self.sources[source] = None
            self.foreign[(name, text)] = self.foreign.get((name, text), 0) + 1
            self.pending.append(f"{name} from {source}: {text}")
            self._flush()
            return
        seen = self.kinds.setdefault(_kind(text), [])
        seen.append(text)
        if len(seen) == 1:
            show_warning(text)
        self.pending.append(text)
        self._flush()

    def _flush(self) -> None:
        """Write the pending lines to the log once its folder exists."""
        from dualpatch.cli.progress import log_ready

        if self.log is not None and self.pending and log_ready(self.log):
            for text in self.pending:
                self.log.warning("%s", text)
            self.pending.clear()

    def summary(self) -> None:
        self._flush()
        for texts in self.kinds.values():
            if len(texts) > 1:
                show_warning(f"{len(texts)} times in all (shown once): {_first_line(texts[0])}")
        if self.foreign:
            name, text = next(iter(self.foreign))
            total = sum(self.foreign.values())
            where = "; all in run.log" if self.log is not None else ""
            show_warning(f"{total} warning(s) from {', '.join(self.sources)} "
                         f"(e.g. {name}: {_first_line(text)}){where}")  # fmt: skip

    @contextlib.contextmanager
    def active(self) -> Iterator[WarningDigest]:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # every one reaches show(): it counts them
            warnings.showwarning = self.show
            try:
                yield self
            finally:
                self.summary()


def library_of(filename: str | None, category: Any) -> str | None:
    """The library a warning comes from (the package of its file; numpy for a RuntimeWarning
    that numpy raised in our code), or None for dualpatch's own."""
    parts = Path(filename or "").parts
    found = [p for p in parts if p in LIBRARIES]
    if found:
        return {"sklearn": "scikit-learn"}.get(found[-1], found[-1])
    if isinstance(category, type) and issubclass(
        category, RuntimeWarning | DeprecationWarning | PendingDeprecationWarning
    ):
        return "numpy" if issubclass(category, RuntimeWarning) else "a library"
    return None


def _kind(text: str) -> str:
    """A warning's text less a leading ``path: ``: the same complaint about another file."""
    head, sep, rest = text.partition(": ")
    return rest if sep and ("/" in head or "\\" in head) else text


def _first_line(text: str, width: int = 100) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def report_problem(exc: BaseException) -> int | None:
    """The one error path: print ``exc`` as one ``error:`` line (a usage error as click words
    it, with a pointer to --help) and return the exit status; None if ``exc`` is a bug."""
    if isinstance(exc, BrokenPipeError):
        return closed_pipe()
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


#: the exit status of a command whose reader went away (``run --help | head``): 128 + SIGPIPE,
#: as a shell reports a process that SIGPIPE ended
CLOSED_PIPE = 141


def closed_pipe() -> int:
    """A reader that closed our stdout (``| head``) ends the command quietly: no error line, and
    stdout pointed at /dev/null so that Python's last flush cannot complain either."""
    import os
    import sys

    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return CLOSED_PIPE


class Commands(TyperGroup):
    """Every command group: whatever goes wrong in a command ends in ``report_problem``, also
    when a group is invoked on its own (tests call the sub-apps directly)."""

    def format_commands(self, ctx, formatter) -> None:  # type: ignore[no-untyped-def]
        """The command list with each summary whole, wrapped to the width (click cuts it with
        "..." to fit one line)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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
    # rich_markup_mode None: click's plain help, which wraps long option names and help texts at
    # any width (rich's table cut "--threshold-holdout" to "--threshold-hol…" at 80 columns)
    defaults = {"no_args_is_help": True, "pretty_exceptions_enable": False,
                "rich_markup_mode": None}  # fmt: skip
    return typer.Typer(cls=Commands, add_completion=False, **{**defaults, **options})


@contextlib.contextmanager
def reporting(always: bool = True) -> Iterator[None]:
    """Warnings as one ``warning:`` line each, progress events as rich bars (errors take the one
    error path, ``Commands``).

    ``always`` repeats a warning each time it happens (one per bad file), not once per place.
    """
    from dualpatch.cli.progress import rendering

    with warnings.catch_warnings(), rendering():
        warnings.simplefilter("always" if always else "default")
        warnings.showwarning = show_warning
        yield


def fail(message: str) -> None:
    """Stop the command with ``message`` as its one ``error:`` line, exit status 1."""
    raise ConfigError(message)


#: a folder dataset's sub-folders and split (dualpatch.data.folder): every command that opens a
#: dataset takes them
FOLDER_SETTINGS = (
    "good", "defective", "masks", "test_fraction", "validation_fraction", "split_seed"
)  # fmt: skip
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
    settings: ExperimentSpec | None = None,
    near_duplicates: int | None = None,
):
    """One split of a dataset, after both splits were checked for duplicate images (``name`` and
    ``on_duplicates``: the option's text or enum member; ``settings``: the command's spec, whose
    folder-dataset keys shape a ``folder`` dataset; ``near_duplicates``: near copies too).
    ``fit`` needs no test split: an MVTec folder without ``test/`` gives its training split
    alone."""
    from dualpatch.data import MissingSplit, layout_of, load_dataset
    from dualpatch.experiment.protocol import make_splits
    from dualpatch.limits import parse_items

    items = parse_items(train_items) if name == "kolektorsdd" and train_items else None
    layout = layout_of(vars(settings) if settings is not None else {})
    try:
        (split_,) = make_splits(str(name), Path(data), None, items, str(on_duplicates),
                                layout=layout, near_bits=near_duplicates)  # fmt: skip
    except MissingSplit:
        if split != "train":
            raise
        return load_dataset(str(name), Path(data), "train", layout)
    return split_.train if split == "train" else split_.test


def say_threshold(cut: float | None, source: str) -> None:
    """Which threshold the verdicts use, or one warning that there are none."""
    if cut is None:
        warnings.warn(
            "the model has no stored threshold and no --threshold was given: verdicts are off "
            "(scores only); fit with --threshold-holdout or pass --threshold",
            stacklevel=2,
        )
    else:
        typer.echo(f"verdicts at threshold {cut:.6g} (from {source}): score above it = defect")


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
