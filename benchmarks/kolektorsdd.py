"""KolektorSDD benchmark (default split, 320x128, Lite0): accuracy, fit time, speed, peak RSS.

Each configuration runs in its own process so that its peak RSS is its own. Results are written to
``benchmarks/results/kolektorsdd.json`` (atomically, one entry per configuration).

    python benchmarks/kolektorsdd.py --data ../shared/data/kolektorsdd [--only single-1%]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "single-1%": dict(bank="single", coreset_ratio=0.01),
    "single-10%": dict(bank="single", coreset_ratio=0.10),
    "dual-weighted-1%": dict(bank="dual", coreset_ratio=0.01, rule="weighted"),
    "dual-patch-1%": dict(bank="dual", coreset_ratio=0.01, rule="patch"),
    "dual-seed-1%": dict(bank="dual", coreset_ratio=0.01, rule="seed"),
    "dual-weighted-10%": dict(bank="dual", coreset_ratio=0.10, rule="weighted"),
    "dual-patch-1%-crops": dict(bank="dual", coreset_ratio=0.01, rule="patch", defects="crop"),
}


def run_one(name: str, data: str, normalization: str, backbone: str) -> dict:
    import numpy as np
    import torch

    from dualpatch import DualPatchCore, PatchCore
    from dualpatch.data import KolektorSDD
    from dualpatch.evaluation import evaluate

    cfg = dict(CONFIGS[name])
    bank = cfg.pop("bank")
    defects = cfg.pop("defects", "image")
    size = (320, 128)
    train, test = KolektorSDD(data, "train"), KolektorSDD(data, "test")
    common = dict(
        backbone=backbone, image_size=size, normalization=normalization, progress=False, **cfg
    )
    model = PatchCore(**common) if bank == "single" else DualPatchCore(**common)
    timings = {}
    t0 = time.perf_counter()
    normal_feats = model.image_features(train.normal())
    timings["features_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    model.grid_ = tuple(normal_feats.shape[1:3])
    model.memory_ = model._bank(
        model.coreset_ratio, normal_feats.reshape(-1, normal_feats.shape[-1]), ""
    )
    timings["coreset_s"] = time.perf_counter() - t1
    if bank == "dual":
        t2 = time.perf_counter()
        if defects == "crop":
            crop_feats = model.crop_features(train.defect_crops(size))
        else:
            crop_feats = model.defect_image_features(train.defective())
        timings["features_s"] += time.perf_counter() - t2
        t3 = time.perf_counter()
        model.defect_memory_ = model._bank(model.defect_coreset, crop_feats, "")
        timings["coreset_s"] += time.perf_counter() - t3
    timings["fit_s"] = time.perf_counter() - t0
    t4 = time.perf_counter()
    pred = model.predict(test)
    test_s = time.perf_counter() - t4
    masks = np.stack([s.mask(size) for s in test])
    metrics = evaluate(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
    return {
        "config": {
            "bank": bank,
            "backbone": backbone,
            "normalization": normalization,
            "defects": defects if bank == "dual" else None,
            "image_size": list(size),
            **cfg,
            "num_neighbors": model.num_neighbors,
        },
        "metrics": metrics,
        **{k: round(v, 2) for k, v in timings.items()},
        "test_ms_per_image": round(1000 * test_s / len(test), 1),
        "normal_bank_size": int(model.memory_.bank_.shape[0]),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--normalization", default="auto")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "kolektorsdd.json")
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.data, args.normalization, args.backbone)))
        return
    from dualpatch.fileio import write_json

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.only:
        key = f"{name}/{args.backbone}/{args.normalization}"
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--data",
                args.data,
                "--normalization",
                args.normalization,
                "--backbone",
                args.backbone,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"{key} failed:\n{proc.stderr[-2000:]}")
        results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
        write_json(out, results)
        r = results[key]
        m = r["metrics"]
        print(
            f"{key:40s} imgAUROC {m['image_auroc']:.3f} pixAUROC {m['pixel_auroc']:.3f} "
            f"AP {m['image_ap']:.3f} AUPRO {m['pixel_aupro']:.3f} F1 {m['f1_max']:.3f} | "
            f"fit {r['fit_s']}s (feat {r['features_s']} coreset {r['coreset_s']}) "
            f"{r['test_ms_per_image']} ms/img RSS {r['peak_rss_gib']} GiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
