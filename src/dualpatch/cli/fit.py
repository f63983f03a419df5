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

from dualpatch.cli.common import (
    FOLDER_SETTINGS,
    FORCE,
    MODEL,
    WEIGHTS_MORE,
    command_group,
    fail,
    open_dataset,
    print_metrics,
    say_threshold,
)
from dualpatch.cli.progress import rendering
from dualpatch.cli.ray import RAY_ACTORS, ray_option
from dualpatch.cli.spec import spec_options
from dualpatch.defaults import default_cache
from dualpatch.spec import MODEL_KEYS, ExperimentSpec

# no name: the commands join the top level (registered in cli.py)
app = command_group()

#: the run spec's settings that say which split of which dataset a command reads, and where to
#: write (dualpatch.spec; docs/options.md)
DATA_SETTINGS = (
    "dataset", "data", "out", "train_items", "on_duplicates", "near_duplicates", *FOLDER_SETTINGS
)  # fmt: skip
#: the run spec's settings that ``fit`` takes as options
FIT_SETTINGS = (*DATA_SETTINGS, *MODEL_KEYS, "bank", "defects", "augmented", "crops", "cache_dir")
RUNTIME = typer.Option(
    "torch", help="torch (the library), onnx or openvino (the exported scorer, no torch)."
)


#: --dataset and --data may be left out when --good names the good images (``own_folders``)
OWN_FOLDERS = {"dataset": None, "data": None}
OWN_FOLDERS_MORE = {
    "dataset": "Default: folder.",
    "data": "Default: the working folder, when --good names the good images.",
}


@app.command()
@spec_options(
    *FIT_SETTINGS,
    required=("out",),
    defaults=OWN_FOLDERS,
    more={"out": "fit writes the model there (model.safetensors + model.json).",
          **OWN_FOLDERS_MORE},
)  # fmt: skip
def fit(
    spec: ExperimentSpec | None = None,
    no_cache: bool = typer.Option(False, "--no-cache", help="Use no feature cache at all."),
    force: bool = FORCE,
    threshold_holdout: float | None = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="Hold this fraction of normal images out of the bank to set the verdict threshold "
        "(default: a folder dataset's validation part, else 0.2; 0: store no threshold).",
    ),
    ray: str | None = ray_option("Extract the training images' features"),
    ray_actors: int = RAY_ACTORS,
    verify_cache: int = typer.Option(
        0, min=0, help="Re-extract N cached images first; refuse a cache whose entry differs."
    ),
    flags: dict | None = None,
) -> None:
    """Fit a single- or dual-bank model on a dataset's training split."""
    from dualpatch.fileio import output_lock

    assert spec is not None and flags is not None  # given by spec_options
    own_folders(spec)
    out, inputs = Path(spec.out), _fit_inputs(spec, flags)
    cache = None if no_cache else str(spec.cache_dir or default_cache() or "") or None
    options = {"force": force, "threshold_holdout": threshold_holdout, "ray": ray,
               "ray_actors": ray_actors, "verify_cache": verify_cache}  # fmt: skip
    # the cache is kept between runs and --out is replaced whole: the cache may not lie inside
    with output_lock(out):  # two fits into one --out: the second is refused, not lost
        _fit_command(spec, out, [*inputs, cache], cache, options)


def _fit_command(
    spec: ExperimentSpec, out: Path, inputs: list, cache: str | None, options: dict
) -> None:
    """``fit`` once its options are read and ``out`` is locked."""
    from dualpatch.bank.spill import scratch_folder
    from dualpatch.experiment.build import build_model
    from dualpatch.fileio import check_output_dir, output_dir

    force, threshold_holdout = options["force"], options["threshold_holdout"]
    ray, ray_actors = options["ray"], options["ray_actors"]
    check_output_dir(out, "fit", force, inputs, legacy=("model.json",))
    train = open_dataset(spec.dataset, spec.data, "train", spec.train_items,
                         spec.on_duplicates, spec, spec.near_duplicates)  # fmt: skip
    _warn_unsafe_rule(spec)
    if options["verify_cache"] and cache:
        _verify_cache(spec, cache, train, options["verify_cache"])
    if spec.bank == "single" and (spec.augmented or spec.crops):
        which = "--augmented" if spec.augmented else "--crops"
        fail(f"{which} feeds the defect bank: use it with --bank dual")
    train, validation = _validation_part(train, threshold_holdout)
    if validation is None:
        holdout, held_out = (
            DEFAULT_HOLDOUT if threshold_holdout is None else threshold_holdout,
            None,
        )
    else:
        holdout, held_out = 0.0, _validation_normals(validation)
    # --ray: features extracted on Ray into the cache (a temporary one beside --out without one)
    on_ray = None if ray is None else {"address": ray, "actors": ray_actors, "scratch": out.parent}
    # a spill store without a cache lives beside --out, where the next fit finds it
    with rendering(), scratch_folder(out):
        model = build_model(spec, train, cache_dir=cache, threshold_holdout=holdout,
                            held_out=held_out, on_ray=on_ray, on_defects=_say_defects)  # fmt: skip
        # after the work, as predict does: a refused option or image stays the only line
        _warn_aspect([s.image_path for s in train], spec.image_size)
        if model.threshold_ is not None:
            typer.echo(f"threshold {model.threshold_:.6g} ({model.threshold_rule_})")
            if validation is not None:
                _validate(model, validation)
        else:
            typer.echo("no threshold stored (--threshold-holdout 0): verdicts need --threshold")
    with output_dir(out, "fit", force, inputs, legacy=("model.json",)) as tmp:
        model.save(tmp)
    typer.echo(f"saved {model.kind} model to {out}")


def own_folders(spec: ExperimentSpec) -> None:
    """Fill in a command's ``dataset`` and ``data`` when not given: ``folder``, and (with --good)
    the working folder, so that ``fit --good DIR --defective DIR --masks DIR`` reads those paths
    as typed; without --good, --data is needed."""
    if spec.dataset is None:
        spec.dataset = "folder"
    if spec.data is None:
        if spec.dataset != "folder" or spec.good is None:
            fail("--data is needed: the dataset's folder (or --good DIR for your own images)")
        spec.data = "."


def _warn_unsafe_rule(spec: ExperimentSpec) -> None:
    """One warning line when a dual model is fitted with a rule that can pass a novelty."""
    from dualpatch.scoring import DUAL_RULES

    rule = spec.rule
    if spec.bank == "dual" and rule in DUAL_RULES and not DUAL_RULES[rule].safe:
        warnings.warn(
            f"rule {rule!r} is unsafe for novelties: a frame far from both banks (black, noise, "
            "a rotated or unknown part) can pass as good; the default 'guarded' cannot",
            stacklevel=1,
        )


#: the share of normal training images held out for the threshold without a validation part
DEFAULT_HOLDOUT = 0.2


def _validation_part(train, threshold_holdout: float | None):
    """(what to fit on, the validation part or None): a folder dataset's own validation part
    sets the threshold unless ``--threshold-holdout`` is 0 (then it joins the training images)."""
    from dualpatch.data import split_validation

    fit_on, validation = split_validation(train)
    if validation is None or threshold_holdout == 0:
        return train, None
    if threshold_holdout is not None:
        warnings.warn(
            f"--threshold-holdout {threshold_holdout:g} is ignored: the folder dataset's "
            "validation part sets the threshold (--validation-fraction)",
            stacklevel=2,
        )
    return fit_on, validation


def _validation_normals(validation) -> list:
    """The validation part's good images (the threshold's held-out normals); none: a warning."""
    normal = validation.normal()
    if not normal:
        warnings.warn(
            "the validation part holds no good image (too few good images): no threshold stored",
            stacklevel=2,
        )
    return normal


def _validate(model, validation) -> None:
    """Score the validation part at the stored threshold: one line, and the figures in
    model.json's ``threshold_record.validation`` (image AUROC only with both classes)."""
    from sklearn.metrics import roc_auc_score

    from dualpatch.threshold import verdict_metrics

    pred = model.predict(list(validation))
    labels, found = pred.labels, {"images": len(pred.labels), "defective": int(pred.labels.sum())}
    both = 0 < found["defective"] < found["images"]
    found["image_auroc"] = float(roc_auc_score(labels, pred.image_scores)) if both else None
    verdicts = verdict_metrics(labels, pred.image_scores, model.threshold_)
    for key in ("recall_at_threshold", "false_reject_rate_at_threshold"):
        found[key] = verdicts[key] if verdicts[key] == verdicts[key] else None  # NaN: none
    model.threshold_record_["validation"] = found
    flagged = int(np.sum(pred.image_scores[labels == 1] > model.threshold_))
    auroc = f"image AUROC {found['image_auroc']:.3f}; " if both else ""
    typer.echo(f"validation: {found['images'] - found['defective']} good, {found['defective']} "
               f"defective images; {auroc}{flagged} of {found['defective']} defective flagged, "
               f"{int(np.sum(pred.image_scores[labels == 0] > model.threshold_))} good "
               "flagged")  # fmt: skip


def _say_defects(model, defects: list) -> None:
    """One line: what the defect bank took: defective images by mask or by pseudo-mask, crops."""
    from dualpatch.data.base import Sample

    images = [d for d in defects if isinstance(d, Sample)]
    pseudo = getattr(model, "pseudo_masks_", [])
    used = sum(1 for r in pseudo if r["patches"])
    typer.echo(f"defect bank: {len(images) - len(pseudo)} masked and {used} of {len(pseudo)} "
               f"pseudo-masked defective images, {len(defects) - len(images)} crops")  # fmt: skip


def _verify_cache(spec: ExperimentSpec, cache: str, train, n: int) -> None:
    """Re-extract ``n`` of the cache's entries for the training images (``--verify-cache``)."""
    from dualpatch import PatchCore
    from dualpatch.bank.feature_cache import verify_entries

    model = PatchCore(**spec.estimator_kwargs("single"), cache_dir=cache)
    images = list(train.normal()) + list(train.defective())
    checked = verify_entries(model.feature_source(), images, n, model.seed)
    typer.echo(f"verified {checked} feature cache entr{'y' if checked == 1 else 'ies'} "
               "against a re-extraction")  # fmt: skip


def _warn_aspect(files: list[Path], size) -> None:
    """One warning line when images are squashed into the model's aspect ratio."""
    from dualpatch.serving.predict_io import aspect_warning

    if (line := aspect_warning(files, size)) is not None:
        warnings.warn(line, stacklevel=2)


def _paths(values: list[str]) -> list[Path]:
    return [Path(p) for p in values]


def _fit_inputs(spec: ExperimentSpec, flags: dict) -> list[Path | None]:
    """The files and folders ``fit`` reads (an --out must not hold them), once the size is
    known to be usable."""
    from dualpatch.limits import check_size

    height, width = spec.image_size
    check_size(height, width, f"{flags['image_size']} {height} {width}")
    weights = Path(spec.weights) if spec.weights else None
    own = [
        Path(spec.data, getattr(spec, k))
        for k in ("good", "defective", "masks")
        if getattr(spec, k)
    ]
    return [Path(spec.data), *own, weights, *_paths(spec.augmented), *_paths(spec.crops)]


@app.command()
@spec_options(
    "dataset", "data", "out", "train_items", "weights", "on_duplicates", "near_duplicates",
    *FOLDER_SETTINGS,
    required=("out",),
    defaults=OWN_FOLDERS,
    more={"out": "evaluate writes metrics.json, scores.csv and predictions.safetensors there.",
          "weights": WEIGHTS_MORE, **OWN_FOLDERS_MORE},
)  # fmt: skip
def evaluate(
    model: Path = MODEL,
    spec: ExperimentSpec | None = None,
    force: bool = FORCE,
    runtime: str = RUNTIME,
    flags: dict | None = None,
) -> None:
    """Score the test split; write metrics.json (fractions), scores.csv and the anomaly maps."""
    from dualpatch.environment import release_free_memory
    from dualpatch.fileio import check_output_dir
    from dualpatch.metrics.evaluation import evaluate as compute
    from dualpatch.serving.runtime import load_for_scoring

    assert spec is not None  # given by spec_options
    own_folders(spec)
    out, data = Path(spec.out), Path(spec.data)
    weights = Path(spec.weights) if spec.weights else None
    check_output_dir(out, "evaluate", force, [model, data, weights], legacy=("metrics.json",))
    m = load_for_scoring(model, runtime, weights)
    test = open_dataset(spec.dataset, data, "test", spec.train_items, spec.on_duplicates,
                        spec, spec.near_duplicates)  # fmt: skip
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
    release_free_memory()  # the batches' freed temporaries: before the metrics allocate theirs
    masks = np.stack([s.mask(tuple(m.image_size)) for s in test])
    known = np.array([s.mask_known for s in test])
    metrics = compute(pred.labels, pred.image_scores, masks, pred.anomaly_maps, known)
    metrics["train_overlap_images"] = len(overlap)
    record = _evaluation_record(model, spec, m, test, runtime)
    verdicts, record["threshold"] = _stored_threshold_metrics(model, pred)
    metrics.update(verdicts)
    _write_evaluation(out, force, [model, data, weights], record, metrics, pred)
    print_metrics({m.kind: metrics})
    typer.echo(f"wrote {out / 'metrics.json'}")


def _stored_threshold_metrics(model: Path, pred) -> tuple[dict, dict | None]:
    """(metrics of the verdicts at the threshold model.json stores, where it came from), said in
    one line; ({}, None) without one."""
    from dualpatch.card import ModelCard
    from dualpatch.threshold import verdict_metrics

    card = ModelCard.read(model)
    if card.threshold is None:
        typer.echo(
            "no stored threshold in the model: threshold-free metrics only "
            "(fit with --threshold-holdout to store one)"
        )
        return {}, None
    found = verdict_metrics(pred.labels, pred.image_scores, card.threshold)
    typer.echo(
        f"threshold {card.threshold:.6g} from {card.path} "
        f"({card.threshold_rule or 'no record of how it was set'}): "
        f"F1 {found['f1_at_threshold']:.3f}, recall {found['recall_at_threshold']:.3f}, "
        f"false-reject rate {found['false_reject_rate_at_threshold']:.3f}"
    )
    source = {"value": card.threshold, "file": str(card.path), "rule": card.threshold_rule}
    source["record"] = card.data.get("threshold_record")
    return {"threshold": card.threshold, **found}, source


def _evaluation_record(model: Path, spec: ExperimentSpec, scorer, test, runtime: str) -> dict:
    """What produced an evaluation's figures (provenance.json)."""
    from dualpatch.serving.predict_io import provenance

    return provenance(model, command="evaluate", dataset=str(spec.dataset),
                      data=Path(spec.data).resolve(), train_items=spec.train_items,
                      weights=scorer.weights, images=len(test), test_sha256=test.fingerprint(),
                      runtime=runtime)  # fmt: skip


def _write_evaluation(out: Path, force: bool, inputs: list, record: dict, metrics: dict, pred):
    from dualpatch.fileio import output_dir, write_json, write_text
    from dualpatch.metrics.io import json_metrics

    with output_dir(out, "evaluate", force, inputs, legacy=("metrics.json",)) as tmp:
        write_json(tmp / "provenance.json", record)
        write_json(tmp / "metrics.json", json_metrics(metrics))
        write_text(tmp / "scores.csv", scores_csv(pred.ids, pred.image_scores, pred.labels))
        write_maps(tmp / "predictions.safetensors", pred.ids, pred.anomaly_maps)


@app.command()
@spec_options(
    "out", "weights", required=("out",),
    more={"out": "predict writes scores.csv, maps, overlays and index.html there.",
          "weights": WEIGHTS_MORE},
)  # fmt: skip
def predict(
    paths: list[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: Path = MODEL,
    spec: ExperimentSpec | None = None,
    threshold: float | None = typer.Option(
        None, help="Verdict threshold (default: the model's stored one; none: no verdicts)."
    ),
    maps: str = typer.Option(
        "both", help="grey: maps at model size; overlay: on each photo at its size; or both."
    ),
    force: bool = FORCE,
    runtime: str = RUNTIME,
    ray: str | None = ray_option("Score the images"),
    ray_actors: int = RAY_ACTORS,
    flags: dict | None = None,
) -> None:
    """Score images: scores.csv (score, verdict), maps, overlays and a review page index.html."""
    from dualpatch.serving.predict_io import MAPS, verdict_threshold

    assert spec is not None  # given by spec_options
    out = Path(spec.out)
    weights = Path(spec.weights) if spec.weights else None
    if maps not in MAPS:
        fail(f"--maps {maps}: expected one of {', '.join(MAPS)}")
    cut, source = verdict_threshold(model, threshold)
    if ray is not None:  # folders, globs and list files, on Ray (docs/large-data.md)
        from dualpatch.cli.ray import predict_ray

        return predict_ray(paths, model, out, weights, ray, ray_actors, force, (cut, source), maps)
    from dualpatch.fileio import check_output_dir
    from dualpatch.serving.predict_io import COMMAND, provenance, write_predictions
    from dualpatch.serving.review import write_review
    from dualpatch.serving.runtime import load_for_scoring

    files = _image_files(paths)
    check_output_dir(out, COMMAND, force, files, legacy=("scores.csv",))
    # onnx/openvino: the exported graph, without torch (same scores: tests/unit/export/)
    m = load_for_scoring(model, runtime, weights)
    record = provenance(model, command="predict", weights=m.weights, threshold=cut,
                        threshold_source=source, maps=maps)  # fmt: skip
    with rendering():
        n = write_predictions(m, files, out, force, record, cut, maps,
                              finish=lambda tmp: write_review(tmp, cut, record))  # fmt: skip
    _warn_aspect(files, m.image_size)  # after the work: a bad image's error stays the only line
    say_threshold(cut, source)  # after the work: a bad image's error stays the only line
    typer.echo(f"scored {n} images: {out / 'scores.csv'}, review page {out / 'index.html'}")


def _image_files(paths: list[Path]) -> list[Path]:
    """The image files named by ``paths`` (files, or folders of images)."""
    from dualpatch.data.images import IMAGE_SUFFIXES, list_images

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
    return files


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

    from dualpatch.fileio import atomic_path

    with atomic_path(path) as tmp:
        maps = np.ascontiguousarray(maps, dtype=np.float32)
        save_file({"anomaly_maps": maps}, str(tmp), metadata={"ids": json.dumps(ids)})
