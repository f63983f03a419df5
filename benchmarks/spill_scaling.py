"""Bounded-memory fit at N = 1k, 5k, 20k generated images under a 2 GiB cap.

Each fit runs in its own process (its peak RSS is that process's ru_maxrss). The set is the demo
generator's striped surfaces scaled up, at 128x64 (16x8 = 128 patches of 152-d Lite0 features per
image) so that 20k images generate and extract in well under an hour on two shared cores; the
test set (100 good, 100 defective) is shared by all N. The coreset is 1 % (the issue's setting;
the library default is 10 %).

Per N: wall time, the fit process's CPU seconds (user + system, from its rusage: the figure to
compare when the machine is shared, since the benchmark runs at low priority), the load average
before and after, peak RSS, the on-disk store's size, the rows the coreset ran on, the image AUROC
and, where affordable, the k-center radius of the bank over all patches (in the coreset's 128-d
projection). Runs: the approximate coreset under the cap; exact greedy under the cap (bit-identical
to the in-memory fit while the projection fits: tests/unit/spill/test_spill.py; past it, greedy on a
seeded
pre-sample of the rows the cap holds); the plain in-memory fit at N = 1k.

Resumable: a row already in the JSON (same image size, cap and ratio) is not run again, generated
sets are kept (``.complete`` marker), and an interrupted spilled fit resumes extraction from its
on-disk store. Writes benchmarks/results/spill_scaling.json after every row.

    PYTHONPATH=src nice -n 19 python benchmarks/spill_scaling.py [--sizes 1000 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from line_speed import busy_cpu_s  # this folder is on sys.path when run as a script

SIZE = (128, 64)
CAP = "2GiB"
RATIO = 0.01
#: The radius is measured when rows x bank rows stays under this (it costs that many distances).
RADIUS_BUDGET = 2e10

CHILD = r"""
import json, resource, sys, time, numpy as np, torch
torch.set_num_threads(int(sys.argv[6]))
from sklearn.metrics import roc_auc_score
from dualpatch import PatchCore
from dualpatch.data import load_dataset
from dualpatch.bank.memory import knn, project, projection_for
train = load_dataset("demo", sys.argv[1], "train").normal()
test = load_dataset("demo", sys.argv[2], "test")
cap = None if sys.argv[4] == "none" else sys.argv[4]
t = time.perf_counter()
size = tuple(int(v) for v in sys.argv[9].split("x"))
model = PatchCore(image_size=size, coreset_ratio=float(sys.argv[7]),
                  coreset_method=sys.argv[5],
                  max_memory=cap, cache_dir=sys.argv[3], progress=False, batch_size=32)
model.fit(train)
fit_s = time.perf_counter() - t
scores = model.predict(test).image_scores
row = {
    "fit_seconds": round(fit_s, 1),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "image_auroc": round(float(roc_auc_score([s.label for s in test], scores)), 4),
    "bank_rows": int(model.memory_.bank_.shape[0]),
    **{k: v for k, v in getattr(model, "spill_", {}).items() if k != "store"},
}
spill = getattr(model, "spill_", None)
if spill and spill["rows"] * row["bank_rows"] <= float(sys.argv[8]):
    # k-center radius over every patch, read back from the store chunk by chunk
    t = time.perf_counter()
    matrix = projection_for(152, model.projection_dim, model.seed)
    centres = project(model.memory_.bank_, matrix)
    radius = 0.0
    for start in range(0, spill["rows"], 65536):
        chunk = np.fromfile(spill["store"], np.float32, count=65536 * 152, offset=start * 152 * 4)
        x = project(torch.from_numpy(chunk.reshape(-1, 152)), matrix)
        radius = max(radius, float(knn(x, centres, 1)[0].max()))
    row["kcenter_radius"] = round(radius, 4)
    row["radius_seconds"] = round(time.perf_counter() - t, 1)
print(json.dumps(row))
"""


def same_setup(old: dict, new: dict) -> bool:
    keys = ("cap", "image_size", "coreset_ratio", "test_set")
    return all(old.get(k) == new.get(k) for k in keys)


def setup(args) -> dict:
    return {
        "command": "PYTHONPATH=src benchmarks/timed.sh python benchmarks/spill_scaling.py --sizes "
        + " ".join(map(str, args.sizes))
        + ("" if args.methods == ["approx", "greedy"] else " --methods " + " ".join(args.methods))
        + ("" if args.exact_up_to == 1000 else f" --exact-up-to {args.exact_up_to}")
        + (
            ""
            if tuple(args.size) == SIZE
            else f" --size {args.size[0]} {args.size[1]} --out {args.out}"
        ),
        "cap": CAP,
        "image_size": list(args.size),
        "patches_per_image": (args.size[0] // 8) * (args.size[1] // 8),
        "feature_dim": 152,
        "threads": args.threads,
        "coreset_ratio": RATIO,
        "test_set": "demo generator seed 11, 100 good + 100 defective",
        "timing": "wall_seconds under the load recorded (load_before/after); cpu_seconds is the "
        "fit process's user + system time",
        "rows": [],
    }


def fit_row(n: int, root: Path, test_root: Path, cache: Path, method: str, cap: str, args) -> dict:
    """One fit in its own process: its JSON row, with wall and CPU seconds, load and disk used."""
    # a shared normal bank of an earlier run would skip the coreset: every row fits
    shutil.rmtree(cache / "banks", ignore_errors=True)
    load = os.getloadavg()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_cpu_s()
    t = time.perf_counter()
    size = f"{args.size[0]}x{args.size[1]}"
    argv = [root, test_root, cache, cap, method, args.threads, RATIO, RADIUS_BUDGET, size]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": "src"},
    )
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(proc.returncode)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    # the share of the machine the other processes took meanwhile: a wall time under load says
    # little without it
    others = max(0.0, busy_cpu_s() - busy - own) / (wall * (os.cpu_count() or 1))
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(
        store_reads="pread",
        images=n,
        coreset=method,
        max_memory=cap,
        wall_seconds=round(wall, 1),
        cpu_seconds=round(own, 1),
        other_processes_cpu_share=round(others, 3),
        load_before=[round(x, 2) for x in load],
        load_after=[round(x, 2) for x in os.getloadavg()],
        disk_used_mib=round(
            sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1024**2, 1
        ),
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--size", type=int, nargs=2, default=list(SIZE), help="image width height")
    ap.add_argument("--methods", nargs="+", default=["approx", "greedy"], help="coresets to fit")
    ap.add_argument(
        "--exact-up-to", type=int, default=1000, help="also fit in memory (exact greedy) up to N"
    )
    ap.add_argument("--work", default="runs/bench-spill")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/spill_scaling.json")
    args = ap.parse_args()
    from dualpatch.data import make_demo_dataset

    work = Path(args.work).resolve() / (
        "" if tuple(args.size) == SIZE else "x".join(map(str, args.size))
    )
    size = tuple(args.size)
    test_root = make_demo_dataset(work / "test", seed=11, counts={"test": (100, 100)}, size=size)
    out = Path(args.out)
    result = setup(args)
    if out.is_file() and same_setup(old := json.loads(out.read_text()), result):
        result["rows"] = old["rows"]
        result["superseded_rows"] = old.get("superseded_rows", [])
    done = {(r["images"], r["coreset"], r["max_memory"]) for r in result["rows"]}
    for n in args.sizes:
        t = time.perf_counter()
        root = make_demo_dataset(work / f"train-{n}", seed=n, counts={"train": (n, 0)}, size=size)
        gen_s = time.perf_counter() - t
        exact = [("greedy", "none")] if n <= args.exact_up_to else []
        runs = [(m, CAP) for m in args.methods] + exact
        for method, cap in runs:
            if (n, method, cap) not in done:
                row = fit_row(n, root, test_root, work / f"cache-{n}", method, cap, args)
                row["generate_seconds"] = round(gen_s, 1)  # 0: generated by an earlier run
                row["command"] = result["command"]
                print(json.dumps(row), flush=True)
                result["rows"].append(row)
                out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
