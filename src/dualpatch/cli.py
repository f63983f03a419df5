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
from .defaults import (  # noqa: F401  (MIN_SIDE kept here for callers of cli.MIN_SIDE)
    DEFECT_CORESET,
    DEFECT_SOURCE,
    DUAL_RULE,
    MAX_SEED,
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
        if code == 130:  # typer's answer to Ctrl-C inside a command
            typer.echo("aborted: nothing was replaced", err=True)
        if isinstance(code, int) and code:
            sys.exit(code)
    except DualpatchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted: nothing was replaced", err=True)
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


@app.command()
def fit(
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root folder."),
    out: Path = typer.Option(..., help="Model folder to write (model.safetensors + model.json)."),
    backbone: Backbone = typer.Option(Backbone.efficientnet_lite0, help="Feature backbone."),
    bank: Bank = typer.Option(Bank.dual, help="single: normal bank only; dual: normal + defect."),
    size: tuple[int, int] = typer.Option((320, 128), help="Input size H W (keep the aspect)."),
    seed: int = typer.Option(
        0, min=0, max=MAX_SEED, help="Seed of the coreset's projection and start point."
    ),
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
    crops: list[Path] = typer.Option(
        [],
        help="Crop folder(s) for the defect bank, in place of the training defects "
        "(from 'data crops', 'augment --as-crops' or your own cut-outs; repeatable).",
    ),
    train_items: str | None = typer.Option(None, help="KolektorSDD training items, e.g. 1-33."),
    on_duplicates: OnDuplicates = typer.Option(OnDuplicates.warn, help=ON_DUPLICATES_HELP),
    cache: Path | None = typer.Option(
        None, help="Feature cache folder [default: $DUALPATCH_CACHE or ~/.cache/dualpatch]."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Use no feature cache at all."),
    force: bool = FORCE,
    threshold_holdout: float = typer.Option(
        0.0, help="Hold this fraction of normal images out of the bank to set a verdict threshold."
    ),
    coreset_method: str = typer.Option(
        "greedy", help="greedy (exact k-center) or approx (pre-sample, then greedy; large data)."
    ),
    knn: str = typer.Option("torch", help="torch or faiss-flat (exact), faiss-ivf (approximate)."),
    max_memory: str | None = typer.Option(
        None, help="Cap on fit memory, e.g. 2GiB: features spill to disk (docs/large-data.md)."
    ),
) -> None:
    """Fit a single- or dual-bank model on a dataset's training split."""
    from . import DualPatchCore, PatchCore
    from .fileio import check_output_dir, output_dir
    from .limits import check_size

    check_size(size[0], size[1], f"--size {size[0]} {size[1]}")
    inputs = [data, weights, *augmented, *crops]
    check_output_dir(out, "fit", force, inputs, legacy=("model.json",))
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
        cache_dir=None if no_cache else str(cache or default_cache() or "") or None,
        coreset_method=coreset_method,
        knn=knn,
        max_memory=max_memory,
    )
    normal, held_out = train.normal(), []
    if threshold_holdout:
        from .threshold import holdout_split

        normal, held_out = holdout_split(normal, threshold_holdout, seed)
    if bank == Bank.single:
        if augmented or crops:
            which = "--augmented" if augmented else "--crops"
            fail(f"{which} feeds the defect bank: use it with --bank dual")
        model = PatchCore(**common).fit(normal)
    else:
        model = DualPatchCore(**common, defect_coreset=defect_coreset, rule=rule.value)
        model.check_params()  # before the defect inputs are read: --reweight is refused here
        from .experiment import defect_inputs

        defect_inputs_ = defect_inputs(train, defects.value, tuple(size), augmented, crops)
        if not defect_inputs_:
            fail(
                f"{data}: no defective training images with masks for the defect bank; "
                "use --bank single or add --crops DIR or --augmented DIR"
            )
        model.fit(normal, defect_inputs_)
        if defects == DefectSource.crop:  # crops carry no file: record their source images
            model.record_training_images(s.image_path for s in train.defective())
    if held_out:
        from .threshold import calibrate

        typer.echo(f"threshold {calibrate(model, held_out):.6g} ({model.threshold_rule_})")
    with output_dir(out, "fit", force, inputs, legacy=("model.json",)) as tmp:
        model.save(tmp)
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
    force: bool = FORCE,
    on_duplicates: OnDuplicates = typer.Option(OnDuplicates.warn, help=ON_DUPLICATES_HELP),
) -> None:
    """Score the test split; write metrics.json (fractions), scores.csv and the anomaly maps."""
    from . import PatchCore
    from .evaluation import evaluate as compute
    from .fileio import check_output_dir, output_dir, write_json, write_text
    from .metrics_io import json_metrics
    from .predict_io import provenance

    inputs = [model, data, weights]
    check_output_dir(out, "evaluate", force, inputs, legacy=("metrics.json",))
    m = PatchCore.load(model, str(weights) if weights else None)
    test = open_dataset(dataset, data, "test", train_items, on_duplicates)
    overlap = m.training_overlap(test)
    if overlap:  # the model was fit on some of these very images: its figures flatter it
        warnings.warn(
            f"{data}: {len(overlap)} of {len(test)} test images were in the model's training "
            f"set (e.g. {overlap[0].image_path}); the metrics are optimistic "
            "(check --train-items)",
            stacklevel=1,
        )
    pred = m.predict(test)
    masks = np.stack([s.mask(tuple(m.image_size)) for s in test])
    metrics = compute(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
    metrics["train_overlap_images"] = len(overlap)
    record = provenance(model, command="evaluate", dataset=dataset.value, data=data.resolve(),
                        train_items=train_items, weights=m.weights, images=len(test),
                        test_sha256=test.fingerprint())  # fmt: skip
    with output_dir(out, "evaluate", force, inputs, legacy=("metrics.json",)) as tmp:
        write_json(tmp / "provenance.json", record)
        write_json(tmp / "metrics.json", json_metrics(metrics))
        write_text(tmp / "scores.csv", scores_csv(pred.ids, pred.image_scores, pred.labels))
        write_maps(tmp / "predictions.safetensors", pred.ids, pred.anomaly_maps)
    print_metrics({m.kind: metrics})
    typer.echo(f"wrote {out / 'metrics.json'}")


@app.command()
def predict(
    paths: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: Path = typer.Option(..., help="Model folder written by fit."),
    out: Path = typer.Option(..., help="Folder for scores.csv and anomaly-map PNGs."),
    weights: Path | None = typer.Option(None, help="Backbone weights file, if fit used one."),
    force: bool = FORCE,
    runtime: str = typer.Option(
        "torch", help="torch (the library), onnx or openvino (the exported scorer, no torch)."
    ),
    ray: str | None = typer.Option(
        None, help="Score on Ray Data: local (start Ray here), auto or a cluster ADDRESS."
    ),
    ray_actors: int = typer.Option(1, min=1, help="Ray actors, each holding the model once."),
) -> None:
    """Score images: scores.csv (image, map, score) plus one anomaly-map PNG per image."""
    if ray is not None:  # folders, globs and list files, on Ray (docs/large-data.md)
        from .cli_ray import predict_ray

        return predict_ray(paths, model, out, weights, ray, ray_actors, force)
    from .data.images import IMAGE_SUFFIXES, list_images
    from .fileio import check_output_dir
    from .predict_io import COMMAND, provenance, write_predictions

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
    check_output_dir(out, COMMAND, force, files, legacy=("scores.csv",))
    if runtime == "torch":
        from . import PatchCore

        m = PatchCore.load(model, str(weights) if weights else None)
    else:  # the exported graph, without torch (same scores: tests/test_export.py)
        from .runtime import ScorerModel, open_scorer

        weights_arg = str(weights) if weights else None
        m = ScorerModel(open_scorer(model, runtime, weights=weights_arg), model)
    record = provenance(model, command="predict", weights=m.weights)
    n = write_predictions(m, files, out, force, record)
    typer.echo(f"scored {n} images: {out / 'scores.csv'}, maps in {out / 'maps'}")


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


@app.command()
def run(
    config: Path | None = typer.Option(None, help="Experiment YAML (see configs/)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: key=value (repeatable)."
    ),
    out: Path | None = typer.Option(None, help="Results folder (same as --set out=DIR)."),
    force: bool = FORCE,
    check: bool = typer.Option(
        False, "--check", help="Validate the config and the results folder, then stop."
    ),
    folds: int | None = typer.Option(None, help="K-fold cross-validation (--set folds=K)."),
    seeds: str | None = typer.Option(None, help="Seeds to repeat every run with, e.g. 0,1,2."),
    on_duplicates: OnDuplicates | None = typer.Option(None, help=ON_DUPLICATES_HELP),
    defect_shots: str | None = typer.Option(
        None, help="Few real defects: n per dual run, e.g. 1,2,5,10,all (--set defect_shots=[..])."
    ),
    defect_draws: int | None = typer.Option(None, help="Random draws per n (default 3)."),
) -> None:
    """Run an experiment matrix (single / dual / dual + augmentation) into one results folder."""
    from .experiment import Experiment, load_config
    from .fileio import MARKER

    overrides = list(set_) + ([f"out={out}"] if out else [])
    overrides += [f"folds={folds}"] if folds is not None else []
    overrides += [f"seeds=[{seeds}]"] if seeds else []
    overrides += [f"on_duplicates={on_duplicates.value}"] if on_duplicates else []
    overrides += [f"defect_shots=[{defect_shots}]"] if defect_shots else []
    overrides += [f"defect_draws={defect_draws}"] if defect_draws is not None else []
    cfg = load_config(config, overrides)
    results = Path(cfg["out"])
    if config is not None and Path(config).resolve() == (results / "config.yaml").resolve():
        if not (results / MARKER).is_file():  # the user's own config, not one a run wrote
            fail(f"{config}: the results folder would overwrite this config; choose another --out")
    Experiment(cfg, force=force).check_output()
    if check:
        typer.echo(f"config ok: {len(cfg['runs'])} run(s) into {results}")
        return
    run_config(cfg, force)


def run_config(cfg: dict, force: bool = False) -> Path:
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
            report = Experiment(cfg, progress=stage, log=log, force=force).run()
        finally:  # the logger is global: leave no handler behind for a later run in this process
            for h in list(log.handlers):
                log.removeHandler(h)
                h.close()
    metrics = json.loads((out_dir / "metrics.json").read_text())  # null: undefined, n/a
    metrics.pop("fewshot", None)  # defect_shots: the advice per n, shown in report.html
    names = [r["name"] for r in cfg["runs"]]
    print_metrics(metrics if cfg["defect_shots"] else {n: metrics[n] for n in names})
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

    # cli_serve (name None): export and serve join the top-level commands
    for module, name in (("cli_data", "data"), ("cli_augment", "augment"), ("cli_serve", None)):
        app.add_typer(importlib.import_module(f"dualpatch.{module}").app, name=name)


_register_subcommands()

if __name__ == "__main__":
    main()
