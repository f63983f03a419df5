"""Choose the dual model's defaults on training data only (nested: no test image is ever scored).

For each outer fold of the cross-validated KolektorSDD protocol (3 item-level folds, duplicated
items kept together), the outer training items are split again, group-aware and stratified, into
an inner training set (2/3) and a validation set (1/3). Every candidate is fitted on the inner
training set and scored on the validation set; the outer test fold is never touched.

Search (kept small for 2 shared CPU cores, and said so in the README): the rule {weighted, patch,
seed} x normalisation {tf, imagenet} x defect source {image, crop}, at normal coreset 1 % and defect
coreset 10 %; one fit per (normalisation, defect source) serves all three rules, and the fits run in
the order of ``FITS``, each worker writing what it has measured after every fit. ``--coresets 0.01
0.1`` adds stage 2: the winner at a larger normal coreset (10x the coreset cost; not run this time).
Criterion: the mean of validation image AUROC, image AP and pixel AUPRO (one number, three views:
ranking, ranking under class imbalance, localisation).

    python benchmarks/select_defaults.py [--data ../shared/data/kolektorsdd]

writes ``benchmarks/results/select_defaults.json``: every candidate's validation metrics per outer
fold, what each fold chose, and how often each value was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

GRID = {
    "rule": ("weighted", "patch", "seed"),
    "normalization": ("tf", "imagenet"),
    "defects": ("image", "crop"),
}
#: (normalisation, defect source) pairs fitted, most informative first; each fit serves every rule
FITS = (("tf", "image"), ("imagenet", "image"), ("tf", "crop"), ("imagenet", "crop"))
#: normal coreset ratios: stage 2 (a larger coreset for the stage-1 winner) runs only when asked
CORESETS = [0.01]
CRITERION = ("image_auroc", "image_ap", "pixel_aupro")
SIZE = (320, 128)


def cache_dir() -> str:
    return os.environ.get("DUALPATCH_CACHE", str(Path.home() / ".cache" / "dualpatch" / "features"))


def validate(candidate: dict, inner, validation, rules=("weighted",)) -> list[dict]:
    """Fit a dual model with ``candidate`` on ``inner`` (public fit) and score ``validation`` under
    each of ``rules``: the rule is used at predict time only, so one fit serves them all."""
    from dualpatch import DualPatchCore
    from dualpatch.evaluation import evaluate
    from dualpatch.experiment import defect_inputs

    model = DualPatchCore(
        image_size=SIZE,
        coreset_ratio=candidate["normal_coreset"],
        defect_coreset=0.10,
        normalization=candidate["normalization"],
        cache_dir=cache_dir(),
        progress=False,
    )
    t0 = time.perf_counter()
    model.fit(inner.normal(), defect_inputs(inner, candidate["defects"], SIZE))
    fit_s = time.perf_counter() - t0
    masks = np.stack([s.mask(SIZE) for s in validation])
    rows = []
    for rule in rules:
        model.rule = rule
        pred = model.predict(validation)
        m = evaluate(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
        m["criterion"] = float(np.mean([m[k] for k in CRITERION]))
        m["fit_seconds"] = round(fit_s, 1)
        rows.append({"candidate": {**candidate, "rule": rule}, "metrics": m})
        print(rows[-1]["candidate"], f"{m['criterion']:.4f}", flush=True)
    return rows


def select_on_fold(data: str, n_folds: int, fold: int, partial: Path | None = None) -> dict:
    """The search on one outer fold's training items; the result so far is written to
    ``partial`` after every fit, so a search cut short still reports what it measured."""
    from dualpatch.fileio import write_json
    from dualpatch.protocol import inner_split, make_splits

    split = make_splits("kolektorsdd", data, n_folds, on_duplicates="drop")[fold]
    inner, validation = inner_split(split.train, seed=0, k=3)
    result = {
        "fold": split.name,
        "inner_train_images": len(inner),
        "validation_images": len(validation),
        "validation_defective": int(validation.labels.sum()),
        "validation_items": sorted({s.id.split("/")[0] for s in validation}),
        "candidates": [],
        "complete": False,
    }
    rows = result["candidates"]

    def record() -> None:
        result["chosen"] = max(rows, key=lambda r: r["metrics"]["criterion"])["candidate"]
        if partial is not None:
            write_json(partial, result)

    for norm, defects in FITS:
        cand = {"normalization": norm, "defects": defects, "normal_coreset": CORESETS[0]}
        rows += validate(cand, inner, validation, GRID["rule"])
        record()
    best = max(rows, key=lambda r: r["metrics"]["criterion"])
    for ratio in CORESETS[1:]:
        cand = {**best["candidate"], "normal_coreset": ratio}
        rows += validate(cand, inner, validation, (cand.pop("rule"),))
        record()
    result["complete"] = True
    record()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "select_defaults.json")
    )
    parser.add_argument("--jobs", type=int, default=1, help="Outer folds run in parallel.")
    parser.add_argument("--coresets", type=float, nargs="+", default=[0.01])
    parser.add_argument(
        "--collect", action="store_true", help="Only summarise the workers' partial results."
    )
    parser.add_argument("--only-fold", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--partial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from dualpatch.fileio import write_json

    t_start = time.perf_counter()
    CORESETS[:] = args.coresets
    if args.only_fold is not None:  # a worker: one outer fold into a partial file
        select_on_fold(args.data, args.folds, args.only_fold, Path(args.partial))
        return
    partials = [Path(args.out).with_name(f".select-fold{f}.json") for f in range(args.folds)]
    procs = []
    for f in range(0 if args.collect else args.folds):
        cmd = [sys.executable, __file__, "--data", args.data, "--folds", str(args.folds),
               "--only-fold", str(f), "--partial", str(partials[f]),
               "--coresets", *map(str, CORESETS)]  # fmt: skip
        procs.append(subprocess.Popen(cmd))
        if len(procs) >= args.jobs:
            procs.pop(0).wait()
    for p in procs:
        p.wait()
    folds = [json.loads(p.read_text()) for p in partials if p.exists()]
    keys = [*GRID, "normal_coreset"]
    stability = {k: dict(Counter(str(f["chosen"][k]) for f in folds)) for k in keys}
    majority = {k: Counter(f["chosen"][k] for f in folds).most_common(1)[0][0] for k in keys}
    write_json(Path(args.out), {
        "command": "python " + " ".join(a for a in sys.argv if a != "--collect"),
        "collected_early": args.collect,  # the workers' partial files, taken before they finished
        "criterion": "mean of validation " + ", ".join(CRITERION),
        "grid": {**GRID, "normal_coreset": list(CORESETS)},
        "fits_in_order": FITS,
        "complete_folds": [f["fold"] for f in folds if f["complete"]],
        "folds": folds,
        "chosen_per_fold": [{"fold": f["fold"], **f["chosen"]} for f in folds],
        "stability": stability,
        "majority": majority,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    })  # fmt: skip
    for f in folds:
        print(f["fold"], "chose", f["chosen"])
    print("majority:", majority, "stability:", stability)


if __name__ == "__main__":
    main()
