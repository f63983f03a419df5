"""Accuracy cost of the faster-search candidates at the default 10 % coreset (issue 25, item 2).

For KolektorSDD, battery_weld and BSData, on the safety suite's group-aware outer folds
(``select_defaults.outer_folds``, fold seed 0 unless ``--fold-seeds`` says more) at its model
sizes and from its feature cache: one default dual model per fold (10 % normal and defect
coresets, rule ``guarded``, normalisation ``auto``), fit on 80 % of the fold's normal training
images (the rest held out for the stored threshold and tau, as ``threshold.calibrate`` sets them,
reproduced by ``safety_suite.Fold``). Then the same banks are searched by each candidate:

* ``exact``: float32 bank, exact search (the default);
* ``fp16``: the banks stored in float16 (``bank_dtype``), searched in float32;
* ``pcaP``: neighbours ranked in the P leading principal axes of each bank (``search_dim``),
  distances exact;
* ``rowsR``: at most R rows per bank (``coreset_rows``): greedy k-center picks in order, so the
  first R rows of the 10 % bank are the R-row bank.

For each: image AUROC, image AP, pixel AUPRO on the fold's test images, and foreign-frame recall
at the stored threshold (safety_inputs.foreign_set), per fold, with the fold-level interval
(Nadeau-Bengio corrected t) and the paired fold-level difference against ``exact``. No timing:
the ranking cost per query patch (rows x dims searched) stands for the search's cost.

``--levels inner`` fits each fold's inner split instead (select_defaults.inner_split: training
items only) and scores its validation set; the pick rule (``pick``) reads those rows only.

    python benchmarks/search_candidates.py --work runs/search --levels outer inner
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safety_compute import skip_unused_fit_work
from safety_data import DATASETS, pooled_samples
from safety_inputs import foreign_set
from safety_suite import Fold, fold_summary
from select_defaults import CRITERION, inner_split, outer_folds

RESULTS = Path(__file__).parent / "results"
HOLDOUT = 0.2
RULE = "guarded"
#: candidate name -> (bank_dtype, search_dim, coreset_rows)
CANDIDATES = {
    "exact": ("float32", None, None),
    "fp16": ("float16", None, None),
    "pca64": ("float32", 64, None),
    "pca32": ("float32", 32, None),
    "rows5000": ("float32", None, 5000),
    "rows2000": ("float32", None, 2000),
}
METRICS = ("image_auroc", "image_ap", "pixel_aupro", "foreign_recall")
#: the pick rule's tolerance: a candidate's validation criterion (mean of image AUROC, AP and
#: AUPRO) may be at most this far below exact search's, on every dataset and fold
TOLERANCE = 0.005


def searched_as(model, name: str):
    """``model``'s banks searched as candidate ``name`` (the same fitted rows: a shallow copy)."""
    import copy

    dtype, dim, rows = CANDIDATES[name]
    out = copy.copy(model)
    out.bank_dtype, out.search_dim, out.coreset_rows = dtype, dim, rows
    for attr in ("memory_", "defect_memory_"):
        old = getattr(model, attr)
        bank = out._memory(old.coreset_ratio)
        # greedy picks come in order: the first rows of the bank are the smaller budget's bank
        bank.bank_ = old.bank_ if rows is None else old.bank_[:rows]
        setattr(out, attr, bank)
    return out


def distances(model, samples: list, batch: int = 32) -> dict[str, np.ndarray]:
    dn, dd = [], []
    for start in range(0, len(samples), batch):
        feats = model.image_features(samples[start : start + batch])
        dn.append(model._nearest(model.memory_, feats)[0])
        dd.append(model._nearest(model.defect_memory_, feats)[0])
    return {"dn": torch.cat(dn).numpy(), "dd": torch.cat(dd).numpy()}


def fit_fold(name: str, train: list, sets: dict[str, list], out_dir: Path, tag: str) -> None:
    """Fit the default dual model on ``train`` and store each candidate's distances of the
    held-out normals and of every set (``out_dir/<candidate>/<tag>.npz``)."""
    from dualpatch.models import DualPatchCore
    from dualpatch.threshold import holdout_split

    todo = [c for c in CANDIDATES if not (out_dir / c / f"{tag}.npz").exists()]
    if not todo:
        return
    spec = DATASETS[name]
    normal = [s for s in train if s.label == 0]
    bank, held = holdout_split(normal, HOLDOUT, seed=0)
    model = DualPatchCore(image_size=spec["size"], cache_dir=spec["cache"], progress=False)
    t0 = time.perf_counter()
    model.fit(bank, [s for s in train if s.label == 1])
    fit_s = time.perf_counter() - t0
    for cand in todo:
        searched = searched_as(model, cand)
        arrays, meta = {}, {"fit_seconds_loaded_machine": round(fit_s, 1), "sets": {}}
        for set_name, samples in {"held": held, **sets}.items():
            for k, v in distances(searched, samples).items():
                arrays[f"{set_name}.{k}"] = v
            arrays[f"{set_name}.label"] = np.array([s.label for s in samples])
            meta["sets"][set_name] = [s.id for s in samples]
        meta["bank_rows"] = int(searched.memory_.bank_.shape[0])
        meta["defect_rows"] = int(searched.defect_memory_.bank_.shape[0])
        meta["dims_ranked"] = CANDIDATES[cand][1] or int(searched.memory_.bank_.shape[1])
        path = out_dir / cand / f"{tag}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        path.with_suffix(".json").write_text(json.dumps(meta))
        os.replace(tmp, path)
        print(name, tag, cand, round(fit_s, 1), flush=True)


def fold_metrics(path: Path, masks: np.ndarray, size) -> dict:
    """Image AUROC and AP, pixel AUPRO, foreign recall at the stored threshold of one stored fit
    (the figures of ``safety_suite.metrics_of`` that this benchmark stores the sets for)."""
    from dualpatch.metrics.evaluation import aupro, evaluate

    fold = Fold(path)
    labels = fold.arrays["test.label"]
    scores, maps = fold.scores(RULE, "test", size)
    m = evaluate(labels, scores)
    thr = fold.threshold(RULE)
    foreign, _ = fold.scores(RULE, "foreign")
    return {
        "image_auroc": m["image_auroc"],
        "image_ap": m["image_ap"],
        "pixel_aupro": aupro(masks, maps),
        "foreign_recall": float((foreign >= thr).mean()),
        "threshold": thr,
        "bank_rows": fold.meta["bank_rows"],
        "rank_cost_per_patch": fold.meta["bank_rows"] * fold.meta["dims_ranked"],
    }


def run_dataset(name: str, work: Path, fold_seeds: list[int], levels: list[str]) -> None:
    samples = pooled_samples(name)
    others = {o: pooled_samples(o) for o in DATASETS if o != name}
    size = DATASETS[name]["size"]
    for fs in fold_seeds:
        for f, (train, test) in enumerate(outer_folds(name, samples, fs)):
            tag = f"r{fs}f{f}"
            split = work / name / f"{tag}.split.json"
            split.parent.mkdir(parents=True, exist_ok=True)
            split.write_text(json.dumps({"train": len(train), "test": len(test)}))
            splits = {"outer": (train, test)}
            if "inner" in levels:
                splits["inner"] = inner_split(name, train, seed=fs)
            for level in levels:
                fit_on, scored = splits[level]
                normals = [s for s in scored if s.label == 0]
                folder = work / "foreign" / name / f"{tag}-{level}"
                sets = {"test": scored, "foreign": foreign_set(normals, others, size, folder, 1)}
                fit_fold(name, fit_on, sets, work / name / level, tag)


def stored_folds(work: Path, name: str, level: str, fold_seeds: list[int]) -> list[str]:
    """The folds of ``fold_seeds`` whose distances are stored for every candidate."""
    tags = [f"r{fs}f{f}" for fs in fold_seeds for f in range(3)]
    folder = work / name / level
    return [t for t in tags if all((folder / c / f"{t}.npz").exists() for c in CANDIDATES)]


def dataset_result(name: str, work: Path, tags: list[str], level: str) -> dict:
    from dualpatch.metrics.uncertainty import corrected_paired_test

    by_id = {s.id: s for s in pooled_samples(name)}
    size = tuple(DATASETS[name]["size"])
    shares = []
    for t in tags:
        split = json.loads((work / name / f"{t}.split.json").read_text())
        shares.append(split["test"] / split["train"])
    share = float(np.mean(shares))
    per: dict[str, list[dict]] = {}
    masks: dict = {}
    for cand in CANDIDATES:
        per[cand] = []
        for t in tags:
            path = work / name / level / cand / f"{t}.npz"
            ids = tuple(Fold(path).ids("test"))
            if ids not in masks:
                masks[ids] = np.stack([by_id[i].mask(size) for i in ids])
            per[cand].append(fold_metrics(path, masks[ids], size))
    out = {}
    for cand, rows in per.items():
        out[cand] = {"bank_rows_per_fold": [r["bank_rows"] for r in rows],
                     "rank_cost_per_patch": [r["rank_cost_per_patch"] for r in rows]}  # fmt: skip
        for k in METRICS:
            values = [r[k] for r in rows]
            out[cand][k] = fold_summary(values, share)
            if cand != "exact" and len(values) > 1:
                exact = [r[k] for r in per["exact"]]
                out[cand][k]["vs_exact"] = corrected_paired_test(
                    values, exact, share, (cand, "exact")
                )
        out[cand]["criterion_per_fold"] = [_criterion(r) for r in rows]
    return out


def _criterion(m: dict) -> float:
    values = [m[k] for k in CRITERION if isinstance(m[k], float) and math.isfinite(m[k])]
    return float(np.mean(values)) if values else -math.inf


def pick(inner: dict[str, dict]) -> dict:
    """The pick rule, on the inner (validation) rows only: among the candidates whose criterion
    is within ``TOLERANCE`` of exact search's on every dataset and fold, and whose foreign-frame
    recall is never below exact's, the one with the lowest ranking cost summed over datasets
    (exact itself always qualifies, so there is always a pick)."""
    ok = []
    for cand in CANDIDATES:
        fine = True
        for rows in inner.values():
            ex, c = rows["exact"], rows[cand]
            close = all(
                a >= b - TOLERANCE
                for a, b in zip(c["criterion_per_fold"], ex["criterion_per_fold"], strict=True)
            )
            foreign = all(
                a >= b
                for a, b in zip(
                    c["foreign_recall"]["per_fold"], ex["foreign_recall"]["per_fold"], strict=True
                )
            )
            fine = fine and close and foreign
        if fine:
            cost = sum(sum(rows[cand]["rank_cost_per_patch"]) for rows in inner.values())
            ok.append((cost, cand))
    rule = " ".join(pick.__doc__.split("only: ")[1].split()).replace(
        "``TOLERANCE``", str(TOLERANCE)
    )
    return {"rule": rule, "qualified": [c for _, c in ok],
            "picked": min(ok)[1]}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    skip_unused_fit_work()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", default="runs/search")
    parser.add_argument(
        "--levels",
        nargs="+",
        default=["outer"],
        choices=["outer", "inner"],
        help="outer: the test folds; inner: the validation splits (the pick).",
    )
    parser.add_argument("--out", default=str(RESULTS / "search_candidates.json"))
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="fit nothing: the JSON from the folds already stored (complete for every candidate)",
    )
    args = parser.parse_args()
    work = Path(args.work)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    record = {"command": "python " + " ".join(sys.argv), "git_commit": commit,
              "loadavg_before": os.getloadavg(), "cpus": os.cpu_count(), "started": time.time(),
              "fold_seeds": args.fold_seeds, "rule": RULE,
              "candidates": {k: dict(zip(("bank_dtype", "search_dim", "coreset_rows"), v,
                                         strict=True)) for k, v in CANDIDATES.items()},
              "coreset": "default: 10 % normal, 10 % defect, greedy", "datasets": {}}  # fmt: skip
    if not args.aggregate_only:
        for name in args.datasets:
            run_dataset(name, work, args.fold_seeds, args.levels)
    for name in args.datasets:
        record["datasets"][name] = {}
        for lv in args.levels:
            tags = stored_folds(work, name, lv, args.fold_seeds)
            record["datasets"][name][lv] = {"folds": tags, **dataset_result(name, work, tags, lv)}
    if "inner" in args.levels:
        record["pick"] = pick({n: d["inner"] for n, d in record["datasets"].items()})
    record.update(finished=time.time(), loadavg_after=os.getloadavg())
    record["wall_seconds_loaded_machine"] = round(record["finished"] - record["started"], 1)
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
