"""Bounded-memory fit at N = 1k, 5k, 20k generated images under a 2 GiB cap.

Each fit runs in its own process (its peak RSS is that process's ru_maxrss). The set is the demo
generator's striped surfaces scaled up, at 128x64 (16x8 = 128 patches of 152-d Lite0 features per
image) so that 20k images extract in minutes on two shared cores; the test set (100 good, 100
defective) is shared by all N. Per N: wall time, peak RSS, the on-disk store's size, the rows the
coreset ran on and the image AUROC, for the approximate coreset under the cap and, where its
projection fits, the exact greedy coreset under the cap (bit-identical to the in-memory fit:
tests/unit/spill/test_spill.py) and the plain in-memory fit (N = 1k). Writes
benchmarks/results/spill_scaling.json.

    PYTHONPATH=src python benchmarks/spill_scaling.py [--sizes 1000 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SIZE = (128, 64)
CAP = "2GiB"

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[6]))
from sklearn.metrics import roc_auc_score
from dualpatch import PatchCore
from dualpatch.data import load_dataset
train = load_dataset("demo", sys.argv[1], "train").normal()
test = load_dataset("demo", sys.argv[2], "test")
cap = None if sys.argv[4] == "none" else sys.argv[4]
t = time.perf_counter()
model = PatchCore(image_size=(128, 64), coreset_method=sys.argv[5], max_memory=cap,
                  cache_dir=sys.argv[3], progress=False, batch_size=32)
model.fit(train)
fit_s = time.perf_counter() - t
scores = model.predict(test).image_scores
print(json.dumps({
    "fit_seconds": round(fit_s, 1),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "image_auroc": round(float(roc_auc_score([s.label for s in test], scores)), 4),
    "bank_rows": int(model.memory_.bank_.shape[0]),
    **{k: v for k, v in getattr(model, "spill_", {}).items() if k != "store"},
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--work", default="runs/bench-spill")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/spill_scaling.json")
    args = ap.parse_args()
    from dualpatch.data import make_demo_dataset

    work = Path(args.work).resolve()
    test_root = make_demo_dataset(work / "test", seed=11, counts={"test": (100, 100)}, size=SIZE)
    result = {
        "command": "PYTHONPATH=src python benchmarks/spill_scaling.py --sizes "
        + " ".join(map(str, args.sizes)),
        "cap": CAP,
        "image_size": list(SIZE),
        "patches_per_image": 128,
        "feature_dim": 152,
        "threads": args.threads,
        "coreset_ratio": 0.01,
        "rows": [],
    }
    for n in args.sizes:
        t = time.perf_counter()
        root = make_demo_dataset(work / f"train-{n}", seed=n, counts={"train": (n, 0)}, size=SIZE)
        gen_s = time.perf_counter() - t
        cache = work / f"cache-{n}"
        runs = [("approx", CAP)]
        if n * 128 * 4 * 131 < 1.2 * 1024**3:  # projection fits the cap: exact greedy too
            runs.append(("greedy", CAP))
        if n <= 1000:
            runs.append(("greedy", "none"))
        for method, cap in runs:
            load = os.getloadavg()
            t = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(root),
                    str(test_root),
                    str(cache),
                    cap,
                    method,
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": "src"},
            )
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(proc.returncode)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(
                images=n,
                coreset=method,
                max_memory=cap,
                load_before=load,
                wall_seconds=round(time.perf_counter() - t, 1),
                generate_seconds=round(gen_s, 1),
                disk_used_mib=round(
                    sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1024**2, 1
                ),
            )
            print(json.dumps(row), flush=True)
            result["rows"].append(row)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
