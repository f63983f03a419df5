"""Speed of the exact AUPRO on a full test set's worth of maps (140 maps of 320x128 by default).

Pixel AUROC (scikit-learn's ``roc_auc_score`` over the same pixels, itself one sort of all pixels)
is timed in the same run as the reference, so the ratio holds up on a busy machine. Writes
``benchmarks/results/aupro_speed.json``.

    python benchmarks/aupro_speed.py [--n 140] [--size 320 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from dualpatch.fileio import write_json
from dualpatch.metrics.evaluation import aupro

OUT = Path(__file__).resolve().parent / "results" / "aupro_speed.json"


def synthetic_maps(n: int, size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Masks with blob-shaped regions in a sixth of the images, blurred-noise float32 maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, *size), dtype=bool)
    defective = rng.choice(n, max(1, n // 6), replace=False)
    for i in defective:
        blob = ndimage.gaussian_filter(rng.random(size), 6) > 0.53
        masks[i] = blob
    maps = np.empty((n, *size), dtype=np.float32)
    for i in range(n):
        maps[i] = ndimage.gaussian_filter(rng.random(size), 3) + 0.05 * masks[i]
    return masks, maps


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=140)
    ap.add_argument("--size", type=int, nargs=2, default=(320, 128), metavar=("H", "W"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    masks, maps = synthetic_maps(args.n, tuple(args.size))
    aupro_s, value = best_of(args.repeat, lambda: aupro(masks, maps))
    auroc_s, auroc = best_of(
        args.repeat, lambda: roc_auc_score(masks.reshape(-1), maps.reshape(-1))
    )
    result = {
        "command": "python benchmarks/aupro_speed.py "
        f"--n {args.n} --size {args.size[0]} {args.size[1]} --repeat {args.repeat}",
        "maps": args.n,
        "size_hw": list(args.size),
        "pixels": int(maps.size),
        "defect_regions": int(sum(ndimage.label(m, structure=np.ones((3, 3)))[1] for m in masks)),
        "aupro_seconds": round(aupro_s, 3),
        "pixel_auroc_seconds": round(auroc_s, 3),
        "aupro_over_pixel_auroc": round(aupro_s / auroc_s, 2),
        "aupro": value,
        "pixel_auroc": float(auroc),
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "timing": f"best of {args.repeat}, wall-clock",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json(OUT, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
