"""What one run leaves in its folder (model, predictions, ids, metrics, run.json with the run's
signature) and reads back when it finished before, plus the reference script's results.npy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.metrics.io import from_json, json_metrics


def run_signature(s: dict, dataset_info: dict, threshold: str, native: bool = False) -> str:
    """What makes a finished run reusable: its settings, the split's images, a crops folder's
    content (edited crops make the run stale, not only a new name), the recipe of the generator
    its synthetic defects come from (a fixed generator makes the run stale), how defect crops are
    cut (native regions since issue 24), the threshold mode and whether native-resolution pixel
    metrics were asked for (``native``)."""
    from dualpatch.augment import recipe
    from dualpatch.data.crop_reader import crops_fingerprint
    from dualpatch.spec import ALIASES

    old_names = {new: old for old, new in ALIASES.items()}
    inputs = [crops_fingerprint(s["crops"])] if s.get("crops") else []
    # only runs with synthetic defects carry it, so the other finished runs stay valid
    inputs += [f"augment recipe {recipe(s['augment'])}"] if s.get("augment") else []
    # crops were cut from the downscaled mask's regions before: such runs are redone
    inputs += ["crops: native regions"] if s.get("defects") == "crop" else []
    inputs += ["native pixel metrics"] if native else []
    # under their old names: a run that finished before a setting was renamed is not redone
    s = {old_names.get(k, k): v for k, v in s.items()}
    return hashlib.sha256(
        json.dumps(
            [s, dataset_info["train"]["sha256"], dataset_info["test"]["sha256"], *inputs]
            + ([] if threshold == "validation" else ["no-threshold"]),
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()


def finished_before(run_dir: Path, signature: str) -> bool:
    done = run_dir / "run.json"
    return done.exists() and json.loads(done.read_text()).get("signature") == signature


def write_run(run_dir: Path, model: Any, pred: Any, metrics: dict, signature: str, s: dict) -> None:
    """The run's files; run.json last, so that a run cut short is never taken as finished."""
    from safetensors.numpy import save_file

    from dualpatch.fileio import atomic_path, write_json, write_text

    model.save(run_dir / "model")
    with atomic_path(run_dir / "predictions.safetensors") as tmp:
        save_file(
            {
                "scores": pred.image_scores,
                "labels": pred.labels.astype(np.int64),
                "maps": pred.anomaly_maps.astype(np.float16),
            },
            str(tmp),
        )
    write_text(run_dir / "ids.txt", "\n".join(pred.ids) + "\n")
    write_json(run_dir / "metrics.json", json_metrics(metrics))
    write_json(run_dir / "run.json", {"signature": signature, "settings": s})


def load_finished(run_dir: Path, name: str) -> dict:
    """A finished run's result, as ``Experiment.run_one`` returns it, from its files."""
    from safetensors.numpy import load_file

    t = load_file(str(run_dir / "predictions.safetensors"))
    return {
        "name": name,
        "settings": json.loads((run_dir / "run.json").read_text())["settings"],
        "metrics": from_json(json.loads((run_dir / "metrics.json").read_text())),
        "ids": (run_dir / "ids.txt").read_text().split("\n")[:-1],
        "labels": t["labels"],
        "scores": t["scores"],
        "maps": t["maps"].astype(np.float32),
    }


def seed_layout(results: list[dict]) -> dict:
    """The reference script's results.npy dict: standard/dual PatchCore image and pixel AUROC."""
    out: dict[str, dict[str, float]] = {}
    for r in results:
        s = r["settings"]
        if s["bank"] == "single":
            key = "standard_patchcore"
        elif s["augment"] or s["augmented"]:
            key = "dual_patchcore_augmented"
        else:
            key = "dual_patchcore"
        key = key if key not in out else f"{key}:{r['name']}"
        out[key] = {
            "image_auc": r["metrics"]["image_auroc"],
            "pixel_auc": r["metrics"]["pixel_auroc"],
        }
        if s["bank"] == "dual":  # which rule produced the figures (the reference had one)
            out[key]["rule"] = s["rule"]
    return out


def npy_bytes(obj: dict) -> bytes:
    import io

    buf = io.BytesIO()
    # The reference saved a dict, which numpy can only store pickled: kept for its users' scripts.
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


def write_report(exp, results: list[dict], dataset_info: dict, sections=()) -> Path:
    """report.html of an experiment: every run's figures, curves and gallery, and provenance."""
    from dualpatch.report.data import RunResult
    from dualpatch.report.html import write_html_report

    size = tuple(exp.config["image_size"])

    def sample(r: dict, i: int):
        split, j = r["where"][i]
        return split.test[j]

    shown = ("name", "metrics", "ids", "labels", "scores", "threshold", "maps")
    runs = [
        RunResult(
            **{k: r[k] for k in shown},
            images=lambda i, r=r: sample(r, i).image(size),
            masks=lambda i, r=r: sample(r, i).mask(size),
            threshold_label=threshold_label(r),
        )
        for r in results
    ]
    provenance = {
        "config": exp.config,
        "environment": json.loads((exp.out / "environment.json").read_text()),
        "dataset": report_dataset(dataset_info),
    }
    return write_html_report(
        exp.out,
        runs,
        provenance,
        title=f"dualpatch: {exp.config['name']}",
        gallery_limit=None,
        inline_images=exp.config["inline_images"],
        sections=sections,
    )


def threshold_label(result: dict) -> str:
    """What the report's threshold of a pooled run is: where it was fitted, and its scale."""
    where = (
        "oracle threshold, fitted on test labels"
        if result["oracle"]
        else "validation threshold (from training data, never test labels)"
    )
    if result["relative"]:
        return where + "; 1 = each fold's threshold (scores and maps divided by it)"
    return where


def report_dataset(dataset_info: dict) -> dict:
    """dataset.json as the report's provenance shows it: counts and digests, not file lists."""
    dataset = {k: v for k, v in dataset_info.items() if k not in ("train", "test", "files")}
    dataset["duplicates"] = {
        k: v for k, v in dataset["duplicates"].items() if k not in ("exact_groups", "near_copies")
    } | {"exact_groups": len(dataset["duplicates"]["exact_groups"])}
    near = dataset_info["duplicates"].get("near_copies") or {"checked": False}
    # the report states whether near copies were looked for; the pairs stay in dataset.json
    dataset["duplicates"]["near_copies"] = (
        f"{near['across_splits']} train/test pair(s) within {near['max_bits']} hash bits"
        if near["checked"]
        else "not checked (off by default; set near_duplicates)"
    )
    for k in ("train", "test"):
        if k in dataset_info:
            dataset[k] = {
                "sha256": dataset_info[k]["sha256"],
                "images": len(dataset_info[k]["files"]),
            }
    if "folds" in dataset:
        dataset["folds"] = [
            {
                "name": f["name"],
                "train": f["train"],
                "test": f["test"],
                "train_items": f["train_items"],
            }
            for f in dataset["folds"]
        ]
    return dataset
