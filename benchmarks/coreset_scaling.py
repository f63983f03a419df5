"""Exact greedy k-center against the approximate coreset (``memory.narrowed_kcenter``).

A generated set of the issue's size and resolution: 666 normal training images at 256x256
(682k patches of 152-d Lite0 features, a 1 % coreset of 6,820 picks) and a test set of generated
good and defective images. For N = 1/8, 1/4, 1/2 and all of the training images it times the exact
and the approximate coreset, measures their k-center radius (in the 128-d projection the coreset
works in: max over all N patches of the distance to the nearest pick) and the image AUROC of the
bank each gives on the generated test set. Writes benchmarks/results/coreset_scaling.json.

``--fit-timing [approx|greedy]`` times the whole ``PatchCore.fit`` instead (that coreset, 1 % as
the issue states it, no feature cache) on the first 83/166/333/666 images, with its phases (feature
extraction, coreset, map scale), the process's CPU seconds and the load average before and after;
it goes into the same JSON under ``fit_timing`` (the coreset rows are kept). Run it through
``benchmarks/timed.sh``. ``--seed-spread`` adds the k-center radius (label-free) and the image AUROC
of both coresets of all images for seeds 0, 1, 2 (``seed_spread``); with ``--tune``, the
approximate coreset's parameter grid at seed 0, judged on the radius bound against exact greedy
(training patches only, no labels).

    PYTHONPATH=src python benchmarks/coreset_scaling.py [--work runs/bench-coreset] [--quick]
    PYTHONPATH=src benchmarks/timed.sh python benchmarks/coreset_scaling.py --fit-timing
    PYTHONPATH=src benchmarks/timed.sh python benchmarks/coreset_scaling.py --seed-spread --tune
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
from line_speed import busy_cpu_s  # this folder is on sys.path when run as a script

from dualpatch import PatchCore
from dualpatch.bank import memory
from dualpatch.bank.memory import (
    MemoryBank,
    greedy_coreset,
    greedy_kcenter,
    kcenter_radius,
    narrowed_kcenter,
    project,
    projection_for,
)
from dualpatch.data import load_dataset, make_demo_dataset

SIZE = (256, 256)
#: (share of the picks made over all rows, margin) of the approximate coreset compared by --tune
TUNE_GRID = ((0.0625, 0.97), (0.0625, 1.0), (0.125, 0.97), (0.125, 1.03), (0.25, 0.97))
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
        cpu, busy, t0 = cpu_seconds(), busy_cpu_s(), time.perf_counter()
        model.fit(train[:n_img])
        end = time.perf_counter()
        own = cpu_seconds() - cpu
        others = max(0.0, busy_cpu_s() - busy - own) / ((end - t0) * (os.cpu_count() or 1))
        row.update(
            fit_seconds=round(end - t0, 2),
            cpu_seconds=round(own, 2),
            others_cpu_share=round(others, 3),
            extract_seconds=round(clock.start["normal coreset"] - t0, 2),
            coreset_seconds=round(clock.last["normal coreset"] - clock.start["normal coreset"], 2),
            map_scale_seconds=round(end - clock.last["normal coreset"], 2),
            bank_rows=int(model.memory_.bank_.shape[0]),
            load_after=load(),
        )
        print(row, flush=True)
        rows.append(row)
    return {
        "command": "PYTHONPATH=src benchmarks/timed.sh python "
        f"benchmarks/coreset_scaling.py --fit-timing {method}",
        "approx_settings": memory.approx_settings(),
        "what": f"PatchCore(image_size=256x256, coreset_ratio=0.01, coreset_method={method!r}).fit "
        "on the first N training images, no feature cache, backbone loaded beforehand",
        "threads": threads,
        "goal": "666 images in at most 60 s on the 2 cores",
        "rows": rows,
    }


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - start, 2)


def tuning(x: torch.Tensor, k: int, exact: torch.Tensor, r_exact: float) -> list[dict]:
    """The approximate coreset's parameters against exact greedy on the training patches only
    (label-free): its certified radius bound over exact greedy's radius, the share of exact
    greedy's picks it makes, and its row updates as a share of exact greedy's."""
    rows, saved = [], (memory.APPROX_FIRST, memory.APPROX_MARGIN)
    try:
        for first, margin in TUNE_GRID:
            memory.APPROX_FIRST, memory.APPROX_MARGIN = first, margin
            report: dict = {}
            picks, sec = timed(narrowed_kcenter, x, k, 0, report=report)
            rows.append(
                {
                    "first_share": first,
                    "margin": margin,
                    "radius_bound_over_exact": round(report["radius_bound"] / r_exact, 4),
                    "same_picks_share": same_share(picks, exact),
                    "row_update_share": round(
                        report["row_updates"] / report["exact_row_updates"], 3
                    ),
                    "seconds": sec,
                }
            )
            print(rows[-1], flush=True)
    finally:
        memory.APPROX_FIRST, memory.APPROX_MARGIN = saved
    return rows


def same_share(picks: torch.Tensor, exact: torch.Tensor) -> float:
    return round(len(set(picks.tolist()) & set(exact.tolist())) / len(exact), 4)


def seed_spread(model: PatchCore, train: list, test, tune: bool) -> dict:
    """Exact and approximate coresets of all training images for seeds 0, 1, 2 (the seed moves
    the projection, the first pick and the pre-sample): k-center radius (label-free) and image
    AUROC, against how far exact greedy itself moves from seed to seed. ``tune``: the parameter
    grid at seed 0 (``tuning``)."""
    flat = model.image_features(train, None)
    flat = flat.reshape(-1, flat.shape[-1])
    test_feats = model.image_features(list(test), None)
    k = MemoryBank(0.01, 1000).target_size(flat.shape[0])
    rows = []
    for seed in (0, 1, 2):
        row: dict = {"seed": seed, "load_before": load()}
        x = project(flat, projection_for(flat.shape[1], 128, seed))
        exact, exact_sec = timed(greedy_kcenter, x, k, seed)
        report: dict = {}
        approx, approx_sec = timed(narrowed_kcenter, x, k, seed, report=report)
        r_exact, r_approx = kcenter_radius(x, exact), kcenter_radius(x, approx)
        for name, picks, sec, radius in (
            ("greedy", exact, exact_sec, r_exact),
            ("approx", approx, approx_sec, r_approx),
        ):
            auroc = bank_auroc(model, flat, picks, test, test_feats)
            row[name] = {"image_auroc": round(auroc, 4), "radius": round(radius, 4), "seconds": sec}
        row["approx"]["radius_bound"] = round(report["radius_bound"], 4)
        row["approx"]["row_update_share"] = round(
            report["row_updates"] / report["exact_row_updates"], 3
        )
        row["radius_ratio"] = round(r_approx / r_exact, 4)
        row["same_picks_share"] = same_share(approx, exact)
        row["approx_minus_exact_auroc"] = round(
            row["approx"]["image_auroc"] - row["greedy"]["image_auroc"], 4
        )
        if tune and seed == 0:
            row["tuning"] = tuning(x, k, exact, r_exact)
        row["load_after"] = load()
        print(row, flush=True)
        rows.append(row)
    return {
        "command": "PYTHONPATH=src benchmarks/timed.sh python benchmarks/coreset_scaling.py "
        + ("--seed-spread --tune" if tune else "--seed-spread"),
        "what": "greedy = exact greedy k-center, approx = narrowed_kcenter with its defaults "
        f"(first share {memory.APPROX_FIRST}, at most {memory.APPROX_FIRST_PICKS} first picks, "
        f"margin {memory.APPROX_MARGIN}, row budget {memory.APPROX_SAMPLE}); radius in the "
        "128-d projection over all patches",
        "images": len(train),
        "picks": k,
        "rows": rows,
    }


def coreset_row(model: PatchCore, flat: torch.Tensor, test, test_feats) -> dict:
    """Both coresets of these patches: seconds, k-center radius, image AUROC."""
    n = flat.shape[0]
    k = MemoryBank(0.01, 1000).target_size(n)
    x = project(flat, projection_for(flat.shape[1], 128, 0))
    row: dict = {"patches": n, "picks": k, "load_before": load()}
    for method in ("approx", "greedy"):
        idx, sec = timed(greedy_coreset, flat, k, 128, 0, method=method)
        row[method] = {
            "seconds": sec,
            "radius": round(kcenter_radius(x, idx), 4),
            "image_auroc": round(bank_auroc(model, flat, idx, test, test_feats), 4),
        }
        print(n, method, row[method], flush=True)
    row["radius_ratio"] = round(row["approx"]["radius"] / row["greedy"]["radius"], 3)
    row["speedup"] = round(row["greedy"]["seconds"] / row["approx"]["seconds"], 1)
    row["load_after"] = load()
    return row


def coreset_rows(model: PatchCore, train: list, test, n_train: int, args, out: Path) -> None:
    """Exact and approximate coresets alone on the first 1/8, 1/4, 1/2 and all of the images:
    seconds, k-center radius and image AUROC (``rows``)."""
    feats = model.image_features(train)  # through the feature cache: see --fit-timing
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
        "approx_settings": memory.approx_settings(),
        "threads": args.threads,
        "radius_space": "128-d seeded random projection (the space the coreset selects in)",
        "rows": [],
    }
    flat_all = feats.reshape(-1, feats.shape[-1])
    fractions = [1.0] if args.quick else [0.125, 0.25, 0.5, 1.0]
    for frac in fractions:
        n_img = int(round(n_train * frac))
        row = coreset_row(model, flat_all[: n_img * per_image], test, test_feats)
        row["images"] = n_img
        result["rows"].append(row)
        old = json.loads(out.read_text()) if out.is_file() else {}
        for key in old.keys() - result.keys():  # the other modes' entries
            result[key] = old[key]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-coreset")
    ap.add_argument("--quick", action="store_true", help="1/8 of the images only (a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed-spread", action="store_true", help="seeds 0-2 at all images")
    ap.add_argument("--tune", action="store_true", help="with --seed-spread: parameter grid")
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
        result["seed_spread"] = seed_spread(model, train.normal(), test, args.tune)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return
    coreset_rows(model, train.normal(), test, n_train, args, out)


if __name__ == "__main__":
    main()
