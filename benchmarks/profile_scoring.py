"""Where test time goes: per-image ms of each scoring stage, single and dual, batch 1 and 32.

Stages: decode + resize (read, resize, to a float tensor), backbone (normalisation and the stages
that feed the features), patch features (3x3 averaging, resize, concat), k-NN (every bank), the
rule (map and image score from the distances), map (bilinear upsampling + Gaussian blur) and
metrics (computed once over the whole test split, divided by its size). KolektorSDD default split,
320x128, Lite0. The models are fitted here (or read with --single/--dual) with the library's code.

    python benchmarks/profile_scoring.py --data ../shared/data/kolektorsdd [--repeats 2]

Writes ``benchmarks/results/profile_scoring.json`` (under the key given by --label, "current" by
default, so that a before/after pair can sit side by side).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import dualpatch  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

# isort: split
import numpy as np
import torch

STAGES = ("decode_resize", "backbone", "patch_features", "knn", "rule", "map", "metrics")


def _fit(kind: str, data: str, cache: str):
    from dualpatch import DualPatchCore, PatchCore
    from dualpatch.data import KolektorSDD

    train = KolektorSDD(data, "train")
    common = dict(image_size=(320, 128), progress=False, cache_dir=cache)
    if kind == "single":
        return PatchCore(**common).fit(train.normal())
    return DualPatchCore(**common).fit(train.normal(), train.defective())


def profile(model, samples, batch_size: int, repeats: int) -> dict:
    """Per-image ms of each stage (the best of ``repeats`` passes over ``samples``)."""
    from dualpatch.features.extractor import to_tensor
    from dualpatch.metrics.evaluation import evaluate
    from dualpatch.scoring import anomaly_map, dual_scores, max_score

    size = tuple(model.image_size)
    ex = model.extractor_
    best: dict[str, float] = {}
    for _ in range(repeats):
        t = dict.fromkeys(STAGES, 0.0)
        scores, maps = [], []
        with torch.no_grad():
            for start in range(0, len(samples), batch_size):
                batch = samples[start : start + batch_size]
                t0 = time.perf_counter()
                images = to_tensor([s.image(size) for s in batch])
                t1 = time.perf_counter()
                stage_maps = ex.stage_maps(images)
                t2 = time.perf_counter()
                feats = ex.combine(stage_maps).features.permute(0, 2, 3, 1)
                t3 = time.perf_counter()
                normal, _ = model._nearest(model.memory_, feats)
                defect = None
                if model.kind == "dual":
                    defect, _ = model._nearest(model.defect_memory_, feats)
                t4 = time.perf_counter()
                if defect is None:
                    patch_map, score = normal, max_score(normal)
                else:
                    patch_map, score = dual_scores(normal, defect, model.rule, model.eps)
                t5 = time.perf_counter()
                if defect is not None and model.rule == "seed":
                    amap = anomaly_map(normal, size, model.blur_sigma) / (
                        anomaly_map(defect, size, model.blur_sigma) + model.eps
                    )
                else:
                    amap = anomaly_map(patch_map, size, model.blur_sigma)
                t6 = time.perf_counter()
                scores.append(score)
                maps.append(amap)
                laps = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
                for key, dt in zip(STAGES[:-1], laps, strict=True):
                    t[key] += dt
        t7 = time.perf_counter()
        labels = np.array([s.label for s in samples])
        masks = np.stack([s.mask(size) for s in samples])
        evaluate(labels, torch.cat(scores).numpy(), masks, torch.cat(maps).numpy())
        t["metrics"] = time.perf_counter() - t7
        per_image = {k: 1000 * v / len(samples) for k, v in t.items()}
        if not best or sum(per_image.values()) < sum(best.values()):
            best = per_image
    out = {k: round(v, 2) for k, v in best.items()}
    out["total"] = round(sum(best.values()), 2)
    out["scoring_without_metrics"] = round(out["total"] - best["metrics"], 2)
    return out


def removed_waste(samples, repeats: int = 3) -> dict:
    """The replaced code beside its replacement, interleaved in this run (best of ``repeats``):
    torchvision's 2-D Gaussian blur against the separable one, and the float64 read of 8-bit
    images against the direct one. Per-image ms."""
    from PIL import Image
    from torchvision.transforms.functional import gaussian_blur as blur_2d

    from dualpatch.data.images import _to_float_array, read_image, resize_image
    from dualpatch.scoring import gaussian_blur

    size = (320, 128)
    gen = torch.Generator().manual_seed(0)
    up = torch.nn.functional.interpolate(
        torch.rand(32, 1, 40, 16, generator=gen), size=size, mode="bilinear", align_corners=False
    )
    paths = [s.image_path for s in samples[:32]]

    def old_read(path):
        img = Image.open(path)
        arr = _to_float_array(img, Path(path))
        arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr
        return resize_image(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8), size)

    candidates = {
        "blur_torchvision_2d": lambda: blur_2d(up, [33, 33], [4.0, 4.0]),
        "blur_separable": lambda: gaussian_blur(up, 4.0, 33),
        "read_float64_path": lambda: [old_read(p) for p in paths],
        "read_direct_8bit": lambda: [read_image(p, size) for p in paths],
    }
    best = dict.fromkeys(candidates, float("inf"))
    with torch.no_grad():
        for _ in range(repeats):
            for name, fn in candidates.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return {k: round(1000 * v / 32, 2) for k, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument("--single", help="fitted single model folder (default: fit one here)")
    parser.add_argument("--dual", help="fitted dual model folder (default: fit one here)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache/dualpatch/features"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument(
        "--rules",
        nargs="*",
        default=["weighted"],
        help="dual rules to profile (all: weighted patch seed)",
    )
    parser.add_argument("--label", default="current")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "profile_scoring.json")
    )
    args = parser.parse_args()
    import json

    from dualpatch import PatchCore
    from dualpatch.data import KolektorSDD
    from dualpatch.fileio import write_json

    test = list(KolektorSDD(args.data, "test"))
    if args.images:  # the first N of a list sorted by item: both classes are present from 19 on
        test = test[: args.images]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result: dict = {
        "command": "python benchmarks/profile_scoring.py " + " ".join(os.sys.argv[1:]),
        "uptime_before": load,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "test_images": len(test),
        "image_size": [320, 128],
        "backbone": "efficientnet_lite0",
        "unit": "ms per image (best of --repeats passes over the test split)",
    }
    models = {}
    for kind in ("single", "dual"):
        folder = getattr(args, kind)
        models[kind] = PatchCore.load(folder) if folder else _fit(kind, args.data, args.cache)
    result["removed_waste_ms_per_image"] = removed_waste(test)
    print("removed waste", json.dumps(result["removed_waste_ms_per_image"]), flush=True)
    runs = [("single", None)] + [("dual", r) for r in args.rules]
    for kind, rule in runs:
        model = models[kind]
        if rule:
            model.rule = rule
        name = kind if rule is None else f"dual-{rule}"
        result[name] = {"bank_sizes": [int(model.memory_.bank_.shape[0])]}
        if kind == "dual":
            result[name]["bank_sizes"].append(int(model.defect_memory_.bank_.shape[0]))
        for bs in (1, 32):
            result[name][f"batch{bs}"] = profile(model, test, bs, args.repeats)
            print(name, f"batch {bs}", json.dumps(result[name][f"batch{bs}"]), flush=True)
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    result["uptime_after"] = result["uptime_after"].strip()
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[args.label] = result
    write_json(out, previous)


if __name__ == "__main__":
    main()
