"""Exact greedy k-center against the approximate coreset (pre-sample, then greedy).

A generated set of the issue's size and resolution: 666 normal training images at 256x256
(682k patches of 152-d Lite0 features, a 1 % coreset of 6,820 picks) and a test set of generated
good and defective images. For N = 1/8, 1/4, 1/2 and all of the training images it times the exact
and the approximate coreset, measures their k-center radius (in the 128-d projection the coreset
works in: max over all N patches of the distance to the nearest pick) and the image AUROC of the
bank each gives on the generated test set. Writes benchmarks/results/coreset_scaling.json.

    PYTHONPATH=src python benchmarks/coreset_scaling.py [--work runs/bench-coreset] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from dualpatch import PatchCore
from dualpatch.data import load_dataset, make_demo_dataset
from dualpatch.memory import (
    APPROX_SAMPLE,
    MemoryBank,
    approx_sample_size,
    greedy_coreset,
    kcenter_radius,
    project,
    projection_for,
)

SIZE = (256, 256)
TRAIN, TEST = (666, 0), (60, 60)


def load() -> str:
    return os.getloadavg().__repr__()


def bank_auroc(model: PatchCore, flat: torch.Tensor, idx: torch.Tensor, test, test_feats) -> float:
    model.memory_ = MemoryBank(0.01, 1)
    model.memory_.bank_ = flat[idx].contiguous().float()
    dist, _ = model._nearest(model.memory_, test_feats)
    scores = model._map(dist).amax(dim=(1, 2)).numpy()
    labels = np.array([s.label for s in test])
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-coreset")
    ap.add_argument("--quick", action="store_true", help="1/8 of the images only (a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/coreset_scaling.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    n_train = TRAIN[0] // 8 if args.quick else TRAIN[0]
    root = make_demo_dataset(
        work / f"data-{n_train}", seed=3, counts={"train": (n_train, 0), "test": TEST}, size=SIZE
    )
    train, test = load_dataset("demo", root, "train"), load_dataset("demo", root, "test")
    model = PatchCore(image_size=SIZE, cache_dir=str(work / "cache"), progress=False)
    t0 = time.perf_counter()
    feats = model.image_features(train.normal())
    extract_s = time.perf_counter() - t0
    test_feats = model.image_features(list(test))
    model.grid_ = tuple(feats.shape[1:3])
    per_image = feats.shape[1] * feats.shape[2]
    result = {
        "command": "PYTHONPATH=src python benchmarks/coreset_scaling.py"
        + (" --quick" if args.quick else ""),
        "dataset": f"generated demo surfaces, {n_train} normal train images, test {TEST} "
        f"(good, defective), {SIZE[0]}x{SIZE[1]}, seed 3",
        "backbone": "efficientnet_lite0",
        "feature_dim": int(feats.shape[-1]),
        "patches_per_image": per_image,
        "coreset_ratio": 0.01,
        "approx_sample_budget": APPROX_SAMPLE,
        "threads": args.threads,
        "extract_seconds_all_images": round(extract_s, 2),
        "radius_space": "128-d seeded random projection (the space the coreset selects in)",
        "rows": [],
    }
    flat_all = feats.reshape(-1, feats.shape[-1])
    fractions = [1.0] if args.quick else [0.125, 0.25, 0.5, 1.0]
    for frac in fractions:
        n_img = int(round(n_train * frac))
        flat = flat_all[: n_img * per_image]
        n = flat.shape[0]
        k = MemoryBank(0.01, 1000).target_size(n)
        x = project(flat, projection_for(flat.shape[1], 128, 0))
        row = {"images": n_img, "patches": n, "picks": k, "load_before": load()}
        for method in ("approx", "greedy"):
            t = time.perf_counter()
            idx = greedy_coreset(flat, k, 128, 0, method=method)
            sec = time.perf_counter() - t
            row[method] = {
                "seconds": round(sec, 2),
                "radius": round(kcenter_radius(x, idx), 4),
                "image_auroc": round(bank_auroc(model, flat, idx, test, test_feats), 4),
            }
            if method == "approx":
                row[method]["sample_rows"] = approx_sample_size(n, k)
            print(frac, method, row[method], flush=True)
        row["radius_ratio"] = round(row["approx"]["radius"] / row["greedy"]["radius"], 3)
        row["speedup"] = round(row["greedy"]["seconds"] / row["approx"]["seconds"], 1)
        row["load_after"] = load()
        result["rows"].append(row)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
