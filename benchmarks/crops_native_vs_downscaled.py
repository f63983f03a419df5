"""The dual model with --defects crop at the current defaults, its crops cut per native mask region
(34 on KolektorSDD's default training split) against per region of the mask downscaled to 320x128
(68, the cut before issue 24); the same test split, scores compared.

    PYTHONPATH=src python benchmarks/crops_native_vs_downscaled.py --data ../shared/data/kolektorsdd

writes ``benchmarks/results/crops_native_vs_downscaled.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

SIZE = (320, 128)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/kolektorsdd")
    ap.add_argument("--out", default="benchmarks/results/crops_native_vs_downscaled.json")
    args = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from dualpatch import DualPatchCore
    from dualpatch.data.crops import extract_defect_crops
    from dualpatch.experiment.protocol import make_splits
    from dualpatch.fileio import write_json
    from dualpatch.metrics.evaluation import evaluate

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    split = make_splits("kolektorsdd", args.data, None, None, "drop", 0)[0]
    train, test = split.train, split.test
    cuts = {
        "native regions (now)": train.defect_crops(SIZE),
        "downscaled-mask regions (before)": [
            c for s in train.defective()
            for c in extract_defect_crops(s.image(SIZE), s.mask(SIZE), 16, 32, s.id)
        ],
    }  # fmt: skip
    masks = np.stack([s.mask(SIZE) for s in test])
    runs = {}
    for name, crops in cuts.items():
        model = DualPatchCore(image_size=SIZE, progress=False).fit(train.normal(), crops)
        pred = model.predict(test)
        found = evaluate(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
        runs[name] = {"crops": len(crops), "rule": model.rule, **found}
    write_json(args.out, {
        "command": "PYTHONPATH=src python " + " ".join(sys.argv),
        "split": "default (kos01-33 train), test copies of training images dropped; defaults",
        "runs": runs,
        "machine": {"wall_seconds": round(time.perf_counter() - t0, 1),
                    "load_average_1min": [load0, os.getloadavg()[0]], "threads": 1},
    })  # fmt: skip
    print(runs)


if __name__ == "__main__":
    main()
