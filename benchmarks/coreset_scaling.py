"""Exact greedy k-center against the approximate coreset (pre-sample, then greedy).

A generated set of the issue's size and resolution: 666 normal training images at 256x256
(682k patches of 152-d Lite0 features, a 1 % coreset of 6,820 picks) and a test set of generated
good and defective images. For N = 1/8, 1/4, 1/2 and all of the training images it times the exact
and the approximate coreset, measures their k-center radius (in the 128-d projection the coreset
works in: max over all N patches of the distance to the nearest pick) and the image AUROC of the
bank each gives on the generated test set. Writes benchmarks/results/coreset_scaling.json.

``--fit-timing [approx|greedy]`` times the whole ``PatchCore.fit`` instead (that coreset, 1 % as
the issue states it, no feature cache) on the first 83/166/333/666 images, with its phases (feature
extraction, coreset, map scale), the process's CPU seconds and the load average before and after;
it goes into the same JSON under ``fit_timing`` (the coreset rows are kept). Run it alone on the
machine: ``flock /work/notes/timing.lock`` and normal priority. ``--seed-spread`` adds the image
AUROC of both coresets of all images for seeds 0, 1, 2 (``seed_spread``).

    PYTHONPATH=src python benchmarks/coreset_scaling.py [--work runs/bench-coreset] [--quick]
    PYTHONPATH=src flock LOCK python benchmarks/coreset_scaling.py --fit-timing
    PYTHONPATH=src python benchmarks/coreset_scaling.py --seed-spread
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
#: Pre-sample budgets of the approximate coreset compared in ``--seed-spread``.
BUDGETS = (65536, 131072, 262144)
#: 200 + 200 test images: an AUROC difference of 0.005 is about one standard error, not five
TRAIN, TEST = (666, 0), (200, 200)


def load() -> str:
    return os.getloadavg().__repr__()


def bank_auroc(model: PatchCore, flat: torch.Tensor, idx: torch.Tensor, test, test_feats) -> float:
    model.memory_ = MemoryBank(0.01, 1)
    model.memory_.bank_ = flat[idx].contiguous().float()
    scores = torch.cat(
        [model._score_features(test_feats[i : i + 32])[1] for i in range(0, len(test_feats), 32)]
    ).numpy()
    labels = np.array([s.label for s in test])
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


class StageClock:
    """A ``progress`` callable for ``PatchCore``: when each stage started and last moved."""

    def __init__(self) -> None:
        self.start: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, desc: str, total: int):
        self.start[desc] = self.last[desc] = time.perf_counter()

        def update(n: int) -> None:
            self.last[desc] = time.perf_counter()

        return update


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fit_timing(train: list, n_train: int, threads: int, method: str = "approx") -> dict:
    """Whole fits (``method`` coreset, 1 %, no cache) on growing prefixes of the training set."""
    rows = []
    warm = PatchCore(image_size=SIZE, progress=False)
    warm.image_features(train[:2], None)  # weights loaded and kernels warmed outside the clock
    for frac in (0.125, 0.25, 0.5, 1.0):
        n_img = int(round(n_train * frac))
        clock = StageClock()
        model = PatchCore(
            image_size=SIZE, coreset_ratio=0.01, coreset_method=method, progress=clock
        )
        model._extractor = warm.extractor_
        row = {"images": n_img, "load_before": load()}
        cpu, t0 = cpu_seconds(), time.perf_counter()
        model.fit(train[:n_img])
        end = time.perf_counter()
        row.update(
            fit_seconds=round(end - t0, 2),
            cpu_seconds=round(cpu_seconds() - cpu, 2),
            extract_seconds=round(clock.start["normal coreset"] - t0, 2),
            coreset_seconds=round(clock.last["normal coreset"] - clock.start["normal coreset"], 2),
            map_scale_seconds=round(end - clock.last["normal coreset"], 2),
            bank_rows=int(model.memory_.bank_.shape[0]),
            load_after=load(),
        )
        print(row, flush=True)
        rows.append(row)
    return {
        "command": "PYTHONPATH=src flock /work/notes/timing.lock python "
        f"benchmarks/coreset_scaling.py --fit-timing {method}",
        "what": f"PatchCore(image_size=256x256, coreset_ratio=0.01, coreset_method={method!r}).fit "
        "on the first N training images, no feature cache, backbone loaded beforehand",
        "threads": threads,
        "goal": "666 images in at most 60 s on the 2 cores",
        "rows": rows,
    }


def seed_spread(model: PatchCore, train: list, test) -> dict:
    """Image AUROC of exact and approximate coresets of all training images for seeds 0, 1, 2
    (the seed moves the projection, the first pick and the pre-sample): how far exact greedy
    itself moves from seed to seed, against the approx - exact gap."""
    flat = model.image_features(train, None)
    flat = flat.reshape(-1, flat.shape[-1])
    test_feats = model.image_features(list(test), None)
    k = MemoryBank(0.01, 1000).target_size(flat.shape[0])
    rows = []
    for seed in (0, 1, 2):
        row = {"seed": seed, "load_before": load()}
        idx = greedy_coreset(flat, k, 128, seed)
        row["greedy"] = round(bank_auroc(model, flat, idx, test, test_feats), 4)
        for budget in BUDGETS:
            t = time.perf_counter()
            idx = greedy_coreset(flat, k, 128, seed, method="approx", sample_budget=budget)
            sec = time.perf_counter() - t
            auroc = round(bank_auroc(model, flat, idx, test, test_feats), 4)
            row[f"approx_{budget}"] = {
                "image_auroc": auroc,
                "minus_exact": round(auroc - row["greedy"], 4),
                "coreset_seconds": round(sec, 2),
            }
        print(row, flush=True)
        rows.append(row)
    return {
        "command": "PYTHONPATH=src python benchmarks/coreset_scaling.py --seed-spread",
        "images": len(train),
        "picks": k,
        "approx_sample_budgets": list(BUDGETS),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-coreset")
    ap.add_argument("--quick", action="store_true", help="1/8 of the images only (a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed-spread", action="store_true", help="seeds 0-2 at all images")
    ap.add_argument(
        "--fit-timing",
        nargs="?",
        const="approx",
        choices=["approx", "greedy"],
        help="time whole fits with this coreset (see above)",
    )
    ap.add_argument("--out", default="benchmarks/results/coreset_scaling.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    n_train = TRAIN[0] // 8 if args.quick else TRAIN[0]
    root = make_demo_dataset(
        work / f"data-{n_train}-test{TEST[0]}",
        seed=3,
        counts={"train": (n_train, 0), "test": TEST},
        size=SIZE,
    )
    train, test = load_dataset("demo", root, "train"), load_dataset("demo", root, "test")
    out = Path(args.out)
    if args.fit_timing:
        result = json.loads(out.read_text()) if out.is_file() else {}
        key = "fit_timing" if args.fit_timing == "approx" else f"fit_timing_{args.fit_timing}"
        result[key] = fit_timing(train.normal(), n_train, args.threads, args.fit_timing)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return
    model = PatchCore(image_size=SIZE, cache_dir=str(work / "cache"), progress=False)
    if args.seed_spread:
        result = json.loads(out.read_text())
        result["seed_spread"] = seed_spread(model, train.normal(), test)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return
    feats = model.image_features(train.normal())  # through the feature cache: see --fit-timing
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
        old = json.loads(out.read_text()) if out.is_file() else {}
        for key in ("fit_timing", "fit_timing_greedy", "seed_spread"):
            if key in old:
                result[key] = old[key]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
