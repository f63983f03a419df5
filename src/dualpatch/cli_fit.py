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
    Backbone,
    Bank,
    DatasetName,
    DefectSource,
    OnDuplicates,
    Rule,
    fail,
    open_dataset,
    print_metrics,
)
from .defaults import (
    DEFECT_CORESET,
    DEFECT_SOURCE,
    DUAL_RULE,
    MAX_SEED,
    NORMAL_CORESET,
    NORMALIZATION,
    default_cache,
)
from .scoring import DEFAULT_NUM_NEIGHBORS, DEFAULT_REWEIGHT_NEIGHBORS

# no name: the commands join the top level (registered in cli.py)
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


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
