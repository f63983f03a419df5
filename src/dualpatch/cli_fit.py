"""``dualpatch fit``, ``evaluate`` and ``predict``: one model, fitted, scored on a dataset's test
split, or run over image files."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import typer

from .cli_common import (
    FORCE,
    ON_DUPLICATES_HELP,
    DatasetName,
    OnDuplicates,
    command_group,
    fail,
    open_dataset,
    print_metrics,
)
from .cli_progress import rendering
from .cli_spec import spec_options
from .defaults import default_cache
from .spec import MODEL_KEYS, model_params

# no name: the commands join the top level (registered in cli.py)
app = command_group()


#: the run spec's settings that ``fit`` takes as options (dualpatch.spec; docs/options.md)
FIT_SETTINGS = (*MODEL_KEYS, "bank", "defects", "augmented", "crops", "cache_dir")


@app.command()
@spec_options(*FIT_SETTINGS)
def fit(
    dataset: DatasetName = typer.Option(..., help="Dataset family of --data."),
    data: Path = typer.Option(..., help="Dataset root folder."),
    out: Path = typer.Option(..., help="Model folder to write (model.safetensors + model.json)."),
    train_items: str | None = typer.Option(None, help="KolektorSDD training items, e.g. 1-33."),
    on_duplicates: OnDuplicates = typer.Option(OnDuplicates.warn, help=ON_DUPLICATES_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Use no feature cache at all."),
    force: bool = FORCE,
    threshold_holdout: float = typer.Option(
        0.0, help="Hold this fraction of normal images out of the bank to set a verdict threshold."
    ),
    spec: dict | None = None,
    flags: dict | None = None,
) -> None:
    """Fit a single- or dual-bank model on a dataset's training split."""
    from . import DualPatchCore, PatchCore
    from .fileio import check_output_dir, output_dir
    from .limits import check_size

    assert spec is not None and flags is not None  # given by spec_options
    height, width = spec["image_size"]
    check_size(height, width, f"{flags['image_size']} {height} {width}")
    augmented, crops = [Path(p) for p in spec["augmented"]], [Path(p) for p in spec["crops"]]
    weights = Path(spec["weights"]) if spec["weights"] else None
    inputs = [data, weights, *augmented, *crops]
    check_output_dir(out, "fit", force, inputs, legacy=("model.json",))
    train = open_dataset(dataset, data, "train", train_items, on_duplicates)
    cache = None if no_cache else str(spec["cache_dir"] or default_cache() or "") or None
    normal, held_out = train.normal(), []
    if threshold_holdout:
        from .threshold import holdout_split

        normal, held_out = holdout_split(normal, threshold_holdout, spec["seed"])
    with rendering():
        if spec["bank"] == "single":
            if augmented or crops:
                which = "--augmented" if augmented else "--crops"
                fail(f"{which} feeds the defect bank: use it with --bank dual")
            model = PatchCore(**model_params(spec, "single"), cache_dir=cache).fit(normal)
        else:
            model = DualPatchCore(**model_params(spec), cache_dir=cache)
            model.check_params()  # before the defect inputs are read: --reweight is refused here
            model = _fit_dual(model, train, normal, spec, data)
        if held_out:
            from .threshold import calibrate

            typer.echo(f"threshold {calibrate(model, held_out):.6g} ({model.threshold_rule_})")
    with output_dir(out, "fit", force, inputs, legacy=("model.json",)) as tmp:
        model.save(tmp)
    typer.echo(f"saved {model.kind} model to {out}")


def _fit_dual(model, train, normal, spec: dict, data: Path):
    """Fit a dual model's banks on ``normal`` and the defect inputs ``spec`` names."""
    from .experiment import defect_inputs

    size = tuple(spec["image_size"])
    augmented, crops = [Path(p) for p in spec["augmented"]], [Path(p) for p in spec["crops"]]
    defects = defect_inputs(train, spec["defects"], size, augmented, crops)
    if not defects:
        fail(
            f"{data}: no defective training images with masks for the defect bank; "
            "use --bank single or add --crops DIR or --augmented DIR"
        )
    model.fit(normal, defects)
    if spec["defects"] == "crop":  # crops carry no file: record their source images
        model.record_training_images(s.image_path for s in train.defective())
    return model


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
    runtime: str = typer.Option(
        "torch", help="torch (the library), onnx or openvino (the exported scorer, no torch)."
    ),
) -> None:
    """Score the test split; write metrics.json (fractions), scores.csv and the anomaly maps."""
    from .evaluation import evaluate as compute
    from .fileio import check_output_dir, output_dir, write_json, write_text
    from .metrics_io import json_metrics
    from .predict_io import provenance
    from .runtime import load_for_scoring

    inputs = [model, data, weights]
    check_output_dir(out, "evaluate", force, inputs, legacy=("metrics.json",))
    m = load_for_scoring(model, runtime, weights)
    test = open_dataset(dataset, data, "test", train_items, on_duplicates)
    overlap = m.training_overlap(test)
    if overlap:  # the model was fit on some of these very images: its figures flatter it
        warnings.warn(
            f"{data}: {len(overlap)} of {len(test)} test images were in the model's training "
            f"set (e.g. {overlap[0].image_path}); the metrics are optimistic "
            "(check --train-items)",
            stacklevel=1,
        )
    with rendering():
        pred = m.predict(test)
    masks = np.stack([s.mask(tuple(m.image_size)) for s in test])
    metrics = compute(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
    metrics["train_overlap_images"] = len(overlap)
    record = provenance(model, command="evaluate", dataset=dataset.value, data=data.resolve(),
                        train_items=train_items, weights=m.weights, images=len(test),
                        test_sha256=test.fingerprint(), runtime=runtime)  # fmt: skip
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
    from .runtime import load_for_scoring

    # onnx/openvino: the exported graph, without torch (same scores: tests/unit/export/)
    m = load_for_scoring(model, runtime, weights)
    record = provenance(model, command="predict", weights=m.weights)
    with rendering():
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
