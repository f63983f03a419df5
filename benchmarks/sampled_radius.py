"""k-center radius of a fitted bank estimated on a seeded uniform sample of the training patches,
where the exact radius (every patch against every bank row) costs too much.

Reads a spill store (``CACHE/spill/<digest>/features.bin`` + ``meta.json``) and the shared normal
bank the same fit saved (``CACHE/banks/<digest>.safetensors``), projects both with the coreset's
seeded 128-d projection and takes the largest nearest-bank distance over the sampled rows. The
maximum over a sample can only be lower than the maximum over all rows: the estimate is a lower
bound. Where the exact radius is known (1k images), the sample's gap to it is measured too.

    PYTHONPATH=src nice -n 19 python benchmarks/sampled_radius.py CACHE [CACHE...] --sample 200000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from dualpatch.bank.memory import presample, project, projection_for
from dualpatch.bank.neighbours import knn
from dualpatch.bank.spill import FeatureStore


def only(paths: list[Path], what: str, cache: Path) -> Path:
    """The one ``what`` in ``cache``: with none or several, which bank goes with which store is
    not known, so stop rather than measure a bank against another fit's patches."""
    if len(paths) != 1:
        raise SystemExit(f"error: {cache}: expected one {what}, found {len(paths)}; give a cache "
                         "folder that holds one fit")  # fmt: skip
    return paths[0]


def sampled_radius(cache: Path, sample: int, seed: int) -> dict:
    folder = only(sorted((cache / "spill").glob("*/meta.json")), "spill store", cache).parent
    meta = json.loads((folder / "meta.json").read_text())
    store = FeatureStore(folder, meta["key"], meta["n_images"])
    bank_file = only(sorted((cache / "banks").glob("*.safetensors")), "shared bank", cache)
    bank = load_file(bank_file)["bank"]
    matrix = projection_for(store.dim, 128, 0)  # the fits' seed 0
    rows = presample(store.n_rows, min(sample, store.n_rows), seed)
    centres = project(bank, matrix)
    t = time.perf_counter()
    radius = 0.0
    for start in range(0, len(rows), 65536):
        x = project(store.rows(rows[start : start + 65536].numpy()), matrix)
        radius = max(radius, float(knn(x, centres, 1)[0].max()))
    return {
        "cache": str(cache),
        "images": meta["n_images"],
        "rows": store.n_rows,
        "bank_rows": int(bank.shape[0]),
        "sampled_rows": len(rows),
        "sample_seed": seed,
        "radius_on_sample": round(radius, 4),
        "seconds": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("caches", nargs="+", type=Path)
    ap.add_argument("--sample", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/sampled_radius_320x128.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for cache in args.caches:
        rows.append(sampled_radius(cache, args.sample, args.seed))
        print(rows[-1], flush=True)
    result = {
        "command": "PYTHONPATH=src nice -n 19 python benchmarks/sampled_radius.py "
        + " ".join(map(str, args.caches))
        + f" --sample {args.sample} --out {args.out}",
        "what": "k-center radius (128-d projection, seed 0) of each cache's saved normal bank, "
        "maximum over a seeded uniform sample of the training patches: a lower bound",
        "load": list(os.getloadavg()),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
