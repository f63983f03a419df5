"""Pixel metrics at the model's size against the image's own size, and crops per native region,
on KolektorSDD's default split (kos01-33 train; kos34's test copy of kos27 dropped).

Runs single and dual (the defaults) through the experiment runner with
``native_pixel_metrics: true`` and records, per run, pixel AUROC and AUPRO with the mask downscaled
to 320x128 (the standard figures) and with the map upsampled to each image's size against the mask
as annotated; and how many defect regions the training split has at each resolution, with the
number of crops ``data crops`` now cuts.

    PYTHONPATH=src python benchmarks/native_pixels.py --data ../shared/data/kolektorsdd

writes ``benchmarks/results/native_pixels.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/kolektorsdd")
    ap.add_argument("--work", default="runs/bench-native-pixels")
    ap.add_argument("--out", default="benchmarks/results/native_pixels.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from dualpatch.data import KolektorSDD
    from dualpatch.data.crops import connected_regions
    from dualpatch.experiment.config import load_config
    from dualpatch.experiment.runner import Experiment
    from dualpatch.fileio import write_json

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    train = KolektorSDD(args.data, "train")
    defective = train.defective()
    regions = {
        "native": sum(len(connected_regions(s.mask())) for s in defective),
        "320x128": sum(len(connected_regions(s.mask((320, 128)))) for s in defective),
    }
    crops = len(train.defect_crops((320, 128)))
    cfg = load_config(None, ["dataset=kolektorsdd", f"data={args.data}", f"out={args.work}",
                             "on_duplicates=drop", "threshold=none", "native_pixel_metrics=true",
                             "bootstrap=100"])  # fmt: skip
    cfg["runs"] = [{"name": "single", "bank": "single"}, {"name": "dual", "bank": "dual"}]
    Experiment(cfg).run()
    metrics = json.loads((Path(args.work) / "metrics.json").read_text())
    keys = ("image_auroc", "pixel_auroc", "pixel_auroc_native", "pixel_aupro",
            "pixel_aupro_native")  # fmt: skip
    write_json(args.out, {
        "command": "PYTHONPATH=src python " + " ".join(sys.argv),
        "split": "default (kos01-33 train), test copies of training images dropped",
        "defective_training_images": len(defective),
        "training_defect_regions": regions,
        "crops_cut": crops,
        "runs": {name: {k: metrics[name][k] for k in keys} for name in ("single", "dual")},
        "machine": {"wall_seconds": round(time.perf_counter() - t0, 1),
                    "load_average_1min": [load0, os.getloadavg()[0]], "threads": 1},
    })  # fmt: skip
    print(open(args.out).read())


if __name__ == "__main__":
    main()
