"""Command line: a thin shell over the library API (``dualpatch --help``)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import warnings
from enum import StrEnum
from pathlib import Path

import numpy as np
import typer

from .cli_common import DatasetName
from .defaults import (
    DEFECT_CORESET,
    DEFECT_SOURCE,
    DUAL_RULE,
    MIN_SIDE,
    NORMAL_CORESET,
    NORMALIZATION,
    default_cache,
)
from .errors import DualpatchError
from .scoring import DEFAULT_NUM_NEIGHBORS, DEFAULT_REWEIGHT_NEIGHBORS, DUAL_RULES

app = typer.Typer(
    help="PatchCore-style surface-defect detection with single and dual memory banks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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


def _warning_line(message, category, filename, lineno, file=None, line=None):
    # Warnings are user-facing messages here: one line, no source location.
    (file or sys.stderr).write(f"warning: {message}\n")


def main() -> None:
    """Entry point: dualpatch errors become one line on stderr and exit status 1."""
    warnings.showwarning = _warning_line
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except DualpatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except OSError as exc:  # an output that cannot be written, a folder that is a file, ...
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        # usage errors (typer vendors its own click) carry their own message and exit code
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "format_message"):
                exc.show()
            else:  # one line, like every other error
                ctx = getattr(exc, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                message = " ".join(exc.format_message().split())
                typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        raise


def _parse_items(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            fail(f"--train-items: {spec!r} is not a list of item numbers like 1-33 or 1,2,5-9")
    return out


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
    from .protocol import make_splits

    items = _parse_items(train_items) if name == DatasetName.kolektorsdd and train_items else None
    (split_,) = make_splits(name.value, data, None, items, on_duplicates.value)
    return split_.train if split == "train" else split_.test


@app.command()
def fit(
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root folder."),
    out: Path = typer.Option(..., help="Model folder to write (model.safetensors + model.json)."),
    backbone: Backbone = typer.Option(Backbone.efficientnet_lite0, help="Feature backbone."),
    bank: Bank = typer.Option(Bank.dual, help="single: normal bank only; dual: normal + defect."),
    size: tuple[int, int] = typer.Option((320, 128), help="Input size H W (keep the aspect)."),
    seed: int = typer.Option(0, help="Seed of the coreset's projection and start point."),
    coreset: float = typer.Option(
        NORMAL_CORESET, min=0.0, max=1.0, help="Fraction of normal patches kept."
    ),
    defect_coreset: float = typer.Option(
        DEFECT_CORESET, min=0.0, max=1.0, help="Fraction of defect patches kept (dual)."
    ),
    coreset_min: int = typer.Option(1000, min=1, help="Floor on each bank's size."),
    rule: Rule = typer.Option(DUAL_RULE, help="Dual scoring rule."),
    defects: DefectSource = typer.Option(
        DEFECT_SOURCE, help="Defect bank from mask patches of whole images, or from crops."
    ),
    reweight: bool = typer.Option(
        False, help="PatchCore paper's image-score re-weighting (--bank single only)."
    ),
    num_neighbors: int = typer.Option(
        DEFAULT_NUM_NEIGHBORS, min=1, help="k: a patch's distance is the mean over its k nearest."
    ),
    reweight_neighbors: int = typer.Option(
        DEFAULT_REWEIGHT_NEIGHBORS, min=1, help="Neighbourhood size of --reweight."
    ),
    weights: Path | None = typer.Option(None, help="Backbone state_dict file (.pth/.safetensors)."),
    normalization: str = typer.Option(
        NORMALIZATION, help="auto (the weights' own), imagenet or tf."
    ),
    augmented: list[Path] = typer.Option(
        [], help="Synthetic-defect folder(s) for the defect bank."
    ),
    train_items: str | None = typer.Option(None, help="KolektorSDD training items, e.g. 1-33."),
    on_duplicates: OnDuplicates = typer.Option(OnDuplicates.warn, help=ON_DUPLICATES_HELP),
    cache: Path | None = typer.Option(
        None, help="Feature cache folder [default: ~/.cache/dualpatch]."
    ),
) -> None:
    """Fit a single- or dual-bank model on a dataset's training split."""
    from . import DualPatchCore, PatchCore

    if min(size) < MIN_SIDE:
        fail(f"--size {size[0]} {size[1]}: each side needs at least {MIN_SIDE} pixels")
    train = open_dataset(dataset, data, "train", train_items, on_duplicates)
    common = dict(
        backbone=backbone.value,
        image_size=tuple(size),
        coreset_ratio=coreset,
        coreset_min=coreset_min,
        reweight=reweight,
        num_neighbors=num_neighbors,
        reweight_neighbors=reweight_neighbors,
        weights=str(weights) if weights else None,
        normalization=normalization,
        seed=seed,
        cache_dir=str(cache or default_cache()),
    )
    if bank == Bank.single:
        if augmented:
            fail("--augmented feeds the defect bank: use it with --bank dual")
        model = PatchCore(**common).fit(train.normal())
    else:
        model = DualPatchCore(**common, defect_coreset=defect_coreset, rule=rule.value)
        model.check_params()  # before the defect inputs are read: --reweight is refused here
        from .experiment import defect_inputs

        inputs = defect_inputs(train, defects.value, tuple(size), augmented)
        if not inputs:
            fail(
                f"{data}: no defective training images with masks for the defect bank; "
                "use --bank single or add --augmented DIR"
            )
        model.fit(train.normal(), inputs)
    model.save(out)
    typer.echo(f"saved {model.kind} model to {out}")


@app.command()
def evaluate(
    model: Path = typer.Option(..., help="Model folder written by fit."),
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root folder."),
    out: Path = typer.Option(
        ..., help="Results folder (metrics.json, scores.csv, predictions.safetensors)."
    ),
    train_items: str | None = typer.Option(None, help="KolektorSDD training items, e.g. 1-33."),
    weights: Path | None = typer.Option(None, help="Backbone weights file, if fit used one."),
    on_duplicates: OnDuplicates = typer.Option(OnDuplicates.warn, help=ON_DUPLICATES_HELP),
) -> None:
    """Score the test split; write metrics.json (fractions), scores.csv and the anomaly maps."""
    from . import PatchCore
    from .evaluation import evaluate as compute
    from .fileio import write_json, write_text

    m = PatchCore.load(model, str(weights) if weights else None)
    test = open_dataset(dataset, data, "test", train_items, on_duplicates)
    pred = m.predict(test)
    masks = np.stack([s.mask(tuple(m.image_size)) for s in test])
    metrics = compute(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
    write_json(out / "metrics.json", metrics)
    write_text(out / "scores.csv", scores_csv(pred.ids, pred.image_scores, pred.labels))
    write_maps(out / "predictions.safetensors", pred.ids, pred.anomaly_maps)
    print_metrics({m.kind: metrics})
    typer.echo(f"wrote {out / 'metrics.json'}")


@app.command()
def predict(
    paths: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: Path = typer.Option(..., help="Model folder written by fit."),
    out: Path = typer.Option(..., help="Folder for scores.csv and anomaly-map PNGs."),
    weights: Path | None = typer.Option(None, help="Backbone weights file, if fit used one."),
) -> None:
    """Score images: scores.csv plus one anomaly-map PNG per image."""
    from . import PatchCore
    from .data import Sample
    from .data.images import IMAGE_SUFFIXES, list_images
    from .fileio import write_image, write_text

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = list_images(p)
            if not found:
                fail(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.exists():
            files.append(p)
        else:
            fail(f"{p}: file not found")
    m = PatchCore.load(model, str(weights) if weights else None)
    samples = [Sample(str(f), f, None, -1) for f in files]
    pred = m.predict(samples)
    names = _unique_names(files)
    for name, amap in zip(names, pred.anomaly_maps, strict=True):
        write_image(out / "maps" / f"{name}.png", to_uint8(amap, pred.anomaly_maps))
    write_text(out / "scores.csv", scores_csv([str(f) for f in files], pred.image_scores, None))
    typer.echo(f"scored {len(files)} images: {out / 'scores.csv'}, maps in {out / 'maps'}")


def _unique_names(files: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        names.append(f.stem if n == 0 else f"{f.stem}_{n}")
    return names


def to_uint8(amap: np.ndarray, all_maps: np.ndarray) -> np.ndarray:
    lo, hi = float(all_maps.min()), float(all_maps.max())
    return np.clip((amap - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)


def scores_csv(ids: list[str], scores: np.ndarray, labels: np.ndarray | None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", "label", "score"] if labels is not None else ["image", "score"])
    for i, s in enumerate(scores):
        row = [ids[i], int(labels[i])] if labels is not None else [ids[i]]
        w.writerow([*row, f"{float(s):.8g}"])
    return buf.getvalue()


def write_maps(path: Path, ids: list[str], maps: np.ndarray) -> None:
    """The anomaly maps behind the pixel metrics, (N, H, W) float32 in the order of scores.csv,
    so that metrics.json can be recomputed (safetensors: no pickle)."""
    from safetensors.numpy import save_file

    from .fileio import atomic_path

    with atomic_path(path) as tmp:
        maps = np.ascontiguousarray(maps, dtype=np.float32)
        save_file({"anomaly_maps": maps}, str(tmp), metadata={"ids": json.dumps(ids)})


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
        text = f"{m.get(k, float('nan')):.3f}"
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


@app.command()
def run(
    config: Path | None = typer.Option(None, help="Experiment YAML (see configs/)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: key=value (repeatable)."
    ),
    out: Path | None = typer.Option(None, help="Results folder (same as --set out=DIR)."),
    folds: int | None = typer.Option(None, help="K-fold cross-validation (--set folds=K)."),
    seeds: str | None = typer.Option(None, help="Seeds to repeat every run with, e.g. 0,1,2."),
    on_duplicates: OnDuplicates | None = typer.Option(None, help=ON_DUPLICATES_HELP),
) -> None:
    """Run an experiment matrix (single / dual / dual + augmentation) into one results folder."""
    from .experiment import load_config

    overrides = list(set_) + ([f"out={out}"] if out else [])
    overrides += [f"folds={folds}"] if folds is not None else []
    overrides += [f"seeds=[{seeds}]"] if seeds else []
    overrides += [f"on_duplicates={on_duplicates.value}"] if on_duplicates else []
    run_config(load_config(config, overrides))


def run_config(cfg: dict) -> Path:
    """Run ``cfg`` with a rich progress display and a plain log file in its folder."""
    import logging

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .experiment import Experiment

    out_dir = Path(cfg["out"])
    log = logging.getLogger("dualpatch.experiment")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    # delay: the log (and its folder, made by Experiment.run once the data opened) appears with
    # its first line, so a run refused up front leaves nothing behind
    handler = logging.FileHandler(out_dir / "run.log", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        runs_task = progress.add_task("runs", total=len(cfg["runs"]))

        def stage(desc: str, total: int):
            task = progress.add_task(f"  {desc}", total=total)
            done = [0]

            def update(n: int) -> None:
                if done[0] > total:  # already closed
                    return
                done[0] += n
                progress.update(task, completed=done[0])
                if done[0] >= total:
                    progress.remove_task(task)
                    done[0] = total + 1

            return update

        class RunCounter(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                msg = record.getMessage()
                if msg.startswith("run "):
                    progress.update(runs_task, description=f"runs ({msg.split(': ', 1)[1]})")
                elif msg.endswith(("skipped",)) or ": {" in msg:
                    progress.advance(runs_task)

        log.addHandler(RunCounter())
        try:
            report = Experiment(cfg, progress=stage, log=log).run()
        finally:  # the logger is global: leave no handler behind for a later run in this process
            for h in list(log.handlers):
                log.removeHandler(h)
                h.close()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    print_metrics({r["name"]: metrics[r["name"]] for r in cfg["runs"]})
    typer.echo(f"results: {out_dir}/  (metrics.json, metrics.csv, runs/, run.log)")
    typer.echo(f"report:  {report}")
    return report


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Results folder."),
) -> None:
    """Single vs dual on the built-in synthetic set, or on KolektorSDD if DUALPATCH_DATA is set."""
    from .experiment import load_config

    data = os.environ.get("DUALPATCH_DATA")
    runs = [
        {"name": "single", "bank": "single"},
        {"name": "dual", "bank": "dual"},  # the default rule (defaults.DUAL_RULE: patch)
        {"name": "dual-weighted-rule", "bank": "dual", "rule": "weighted"},
        {"name": "dual-seed-rule", "bank": "dual", "rule": "seed"},
    ]
    try:
        from .augment import generate  # noqa: F401

        runs.append({"name": "dual+paste", "bank": "dual", "augment": {"method": "paste", "n": 40}})
    except ImportError:
        pass
    if data:
        typer.echo(f"demo data: KolektorSDD at {data} (DUALPATCH_DATA), default split, 320x128")
        overrides = ["dataset=kolektorsdd", f"data={data}", "name=demo-kolektorsdd"]
    else:
        typer.echo(
            "demo data: built-in synthetic striped surfaces in KSDD2 layout (runs/demo-data)"
        )
        overrides = ["dataset=demo", "data=runs/demo-data", "name=demo-synthetic"]
    cfg = load_config(None, overrides + [f"out={out}"])
    cfg["runs"] = runs
    run_config(cfg)


def _register_subcommands() -> None:
    # An ImportError here is a bug in dualpatch itself: let it surface rather than hide a command.
    import importlib

    for module, name in (("cli_data", "data"), ("cli_augment", "augment")):
        app.add_typer(importlib.import_module(f"dualpatch.{module}").app, name=name)


_register_subcommands()

if __name__ == "__main__":
    main()
