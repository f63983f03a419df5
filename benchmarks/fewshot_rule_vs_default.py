"""The few-shot runs' nested rule choice against the fixed default rule (`patch`), on the same
saved models: an evaluation of the procedure after the fact, which chooses nothing.

For every (run, n) of a finished ``benchmarks/fewshot.py`` results folder run with
``rule_selection: inner``, each (fold, draw) evaluation is scored again with the default rule:
where the fold chose the default, its saved predictions are the default's (one fit serves every
rule); elsewhere the saved model is loaded, its rule set to the default and the fold's test images
predicted. Then the paired bootstrap of nested minus default (the runner's resamples: test images
resampled within each fold, seed 0) for image AUROC, image AP and pixel AUPRO.

    python benchmarks/fewshot_rule_vs_default.py --data ../shared/data/kolektorsdd \
        --out runs/kolektorsdd-fewshot

Writes ``benchmarks/results/fewshot_rule_vs_default.json``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KEYS = ("image_auroc", "image_ap", "pixel_aupro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--out", default="runs/kolektorsdd-fewshot", help="the results folder")
    parser.add_argument("--metrics", help="metrics.json to read (default: the folder's)")
    parser.add_argument("--json", default=str(HERE / "results" / "fewshot_rule_vs_default.json"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from dualpatch.bank.query_memo import remembered_queries
    from dualpatch.defaults import DUAL_RULE
    from dualpatch.experiment.config import load_config
    from dualpatch.experiment.protocol import make_splits
    from dualpatch.fileio import write_json
    from dualpatch.metrics.uncertainty import fold_counts

    out = Path(args.out)
    c = load_config(out / "config.yaml")
    splits = make_splits(c["dataset"], args.data, c["folds"], None, c["on_duplicates"],
                         c["fold_seed"])  # fmt: skip
    counts = fold_counts([len(s.test) for s in splits], c["bootstrap"], seed=0)
    metrics = json.loads(Path(args.metrics or out / "metrics.json").read_text())
    rows = {}
    # every dual model of a fold shares the normal bank: its distances to the test patches are
    # searched once per fold, not once per model
    with remembered_queries():
        for name, m in metrics.items():
            if name == "fewshot" or "rule_choice" not in m:
                continue
            size = tuple(c["image_size"])
            rows[name] = compare_entry(out, name, splits, counts, DUAL_RULE, size)
            print(name, {k: rows[name][k]["difference"] for k in KEYS}, flush=True)
    write_json(Path(args.json), {
        "command": "python benchmarks/fewshot_rule_vs_default.py --data ../shared/data/kolektorsdd "
                   f"--out {args.out}",
        "default_rule": DUAL_RULE,
        "note": "evaluation of the nested choice against the fixed default on test labels, after "
                "the fact; nothing was chosen from it",
        "results": rows,
    })  # fmt: skip


def compare_entry(out: Path, name: str, splits, counts, default: str, size: tuple) -> dict:
    """Nested against ``default`` for one (run, n): means and paired differences per metric."""
    from safetensors.numpy import load_file

    from dualpatch.experiment.crossval import _add_replicates
    from dualpatch.metrics.uncertainty import BOOTSTRAP_METRICS, compare
    from dualpatch.report.data import slug

    reps = {side: {k: [] for k in BOOTSTRAP_METRICS} for side in ("nested", "default")}
    points = {side: [] for side in reps}
    rescored = []
    for folder in sorted((out / "runs" / slug(name)).glob("fold*-draw*-seed*")):
        f = int(folder.name.split("-")[0].removeprefix("fold"))
        split = splits[f]
        masks = np.stack([s.mask(size) for s in split.test])
        saved = load_file(str(folder / "predictions.safetensors"))
        nested = {k: saved[k].astype(np.float32) if k == "maps" else saved[k] for k in saved}
        rule = json.loads((folder / "run.json").read_text())["settings"]["rule"]
        if rule == default:
            fixed = nested
        else:
            fixed = _rescored(folder, split.test, default)
            rescored.append(folder.name)
        for side, p in (("nested", nested), ("default", fixed)):
            r = {"metrics": {}, "labels": p["labels"], "scores": p["scores"], "maps": p["maps"]}
            _add_replicates(reps[side], r, counts[f], masks)
            points[side].append(_point(p, masks))
    boot = {s: {k: np.nanmean(np.stack(v), axis=0) for k, v in reps[s].items()} for s in reps}
    row: dict = {"evaluations": len(points["nested"]), "rescored_with_default": rescored}
    for k in KEYS:
        a, b = (float(np.mean([p[k] for p in points[s]])) for s in ("nested", "default"))
        diff = compare(boot["nested"][k], boot["default"][k], ("nested", "default"), a - b)
        row[k] = {"nested": a, "default": b, **diff}
    return row


def _rescored(folder: Path, test, rule: str) -> dict:
    """The saved model's test predictions under ``rule``, kept beside it (a rerun reads them)."""
    from safetensors.numpy import load_file, save_file

    from dualpatch.fileio import atomic_path
    from dualpatch.models.patchcore import PatchCore

    path = folder / f"predictions-{rule}.safetensors"
    if not path.is_file():
        model = PatchCore.load(folder / "model")
        model.progress, model.rule = False, rule
        pred = model.predict(test)
        with atomic_path(path) as tmp:
            save_file({"labels": pred.labels.astype(np.int64), "scores": pred.image_scores,
                       "maps": pred.anomaly_maps.astype(np.float16)}, str(tmp))  # fmt: skip
    return {k: v.astype(np.float32) if k == "maps" else v for k, v in load_file(str(path)).items()}


def _point(pred: dict, masks: np.ndarray) -> dict:
    from dualpatch.metrics.evaluation import evaluate

    return evaluate(pred["labels"], pred["scores"], masks, pred["maps"])


if __name__ == "__main__":
    main()
