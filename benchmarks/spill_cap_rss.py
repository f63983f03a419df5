"""Peak RSS of a spilled fit past the cap: the coreset of more patches than the cap's projection
share holds, so it runs on a seeded pre-sample of ``spill.projection_rows(cap, 128)`` rows.

No images are generated or extracted (that would take most of an hour on two shared cores): the
spill store of N fake training images (all one tiny PNG, 16x8 patches each, as at 128x64) is
filled with seeded Gaussian features, so ``PatchCore.fit`` finds it complete and goes straight to
the coreset, the bank read-back and the map scale. The backbone is loaded first, as in a real fit.
Each fit runs in its own process (peak RSS = its ru_maxrss). A 0.1 % coreset keeps exact greedy
on ~2M rows to a minute; the picks change greedy's memory by only the bank they read back.

    PYTHONPATH=src nice -n 19 python benchmarks/spill_cap_rss.py [--images 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from dualpatch import PatchCore
from dualpatch.bank import spill
from dualpatch.data.base import Sample
work, n_images, method, cap = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ratio = float(sys.argv[5])
samples = [Sample(f"fake{i}", work / "fake.png", None, 0) for i in range(n_images)]
model = PatchCore(image_size=(128, 64), coreset_ratio=ratio, coreset_method=method,
                  max_memory=cap, cache_dir=str(work / "cache"), progress=False)
store, _ = spill.open_store(model.feature_source(), samples)
if store.done < n_images:  # fill it once: seeded Gaussian rows, batch by batch
    rng = np.random.default_rng(0)
    store.create((16, 8), 152)
    for start in range(0, n_images, 500):
        store.append(rng.standard_normal((min(500, n_images - start), 16, 8, 152), np.float32))
model.extractor_  # the backbone is resident in a real fit
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
model.fit(samples)
print(json.dumps({
    "fit_seconds": round(time.perf_counter() - t, 1),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "peak_rss_before_fit_mib": round(before / 1024, 1),
    "projection_rows_allowed": spill.projection_rows(spill.parse_size(cap), 128),
    **{k: v for k, v in model.spill_.items() if k != "store"},
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--cap", default="2GiB")
    ap.add_argument("--ratio", type=float, default=0.001)
    ap.add_argument("--methods", nargs="+", default=["greedy", "approx"])
    ap.add_argument("--work", default="runs/bench-cap-rss")
    ap.add_argument("--out", default="benchmarks/results/spill_cap_rss.json")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    (work / "cache").mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(work / "fake.png")
    rows = []
    for method in args.methods:
        # no shared normal bank of an earlier row: every row runs its coreset
        shutil.rmtree(work / "cache" / "banks", ignore_errors=True)
        load = os.getloadavg()
        t = time.perf_counter()
        argv = [work, args.images, method, args.cap, args.ratio]
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True, text=True
        )
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(proc.returncode)
        row = {"coreset": method, **json.loads(proc.stdout.strip().splitlines()[-1])}
        row.update(
            wall_seconds=round(time.perf_counter() - t, 1),
            load_before=[round(x, 2) for x in load],
            load_after=[round(x, 2) for x in os.getloadavg()],
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "command": "PYTHONPATH=src nice -n 19 python benchmarks/spill_cap_rss.py --images "
        f"{args.images} --cap {args.cap} --ratio {args.ratio}",
        "what": "spilled fit past the cap on a store of seeded Gaussian features (no images): "
        "peak RSS of the process against the cap",
        "cap": args.cap,
        "images": args.images,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
