"""How close are synthetic defects to real ones? A picture and a fidelity table per source.

Each source's defect patches (the backbone's patch features under its masks) are compared with REAL
TEST defect patches (KolektorSDD default split, test images byte-identical to a training image
dropped), which no source has seen: mean nearest distance, precision/recall (Kynkäänniemi et al.
2019) and density/coverage (Naeem et al. 2020), see ``dualpatch.augment.fidelity``. Sources: real
training defects, random normal test patches, copy-paste, the feature-space baseline (each
method), and the DDPM with the first sampler and with the fast one, for each training stage of
``benchmarks/ddpm_training.py``, with the sampling time per defect.

Writes ``benchmarks/results/augment_fidelity.json`` and ``benchmarks/results/augment_grid.png``.

    python benchmarks/augment_fidelity.py --data ../shared/data/kolektorsdd
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SIZE = (320, 128)
#: the first sampler (window of half a patch, hard paste, 50 steps, defect near its own position)
FIRST = dict(context=None, feather=0.0, sample_steps=50, placement="source")
#: the fast sampler at 20 steps (its default is now 10, measured beside it as "fast 10-step")
FAST = dict(sample_steps=20)


def main() -> None:
    from dualpatch import DualPatchCore
    from dualpatch.augment import augmented_samples
    from dualpatch.augment.ddpm import mask_contrast, sample_ddpm
    from dualpatch.augment.fidelity import fidelity
    from dualpatch.augment.paste import generate_paste
    from dualpatch.experiment.protocol import make_splits
    from dualpatch.features.augment import METHODS, augment_defect_features
    from dualpatch.fileio import write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--training", default=str(HERE / "results" / "ddpm_training.json"))
    parser.add_argument("--n", type=int, default=30, help="synthetic images per source")
    parser.add_argument("--first-n", type=int, default=10, help="images of the slow first sampler")
    parser.add_argument("--work", default="runs/fidelity")
    parser.add_argument("--cache", default="runs/fewshot/cache")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # 2 cores shared with other jobs
    out, work = Path(args.out), Path(args.work)
    path = out / "augment_fidelity.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if "sources" not in results:  # the first version's table: measured anew, not mixed in
        results = {"sources": {}}
    done = results["sources"]
    split = make_splits("kolektorsdd", args.data, None, None, "drop", 0)[0]
    train, test, dropped = split.train, split.test, split.duplicates.dropped
    model = DualPatchCore(image_size=SIZE, progress=False, cache_dir=args.cache, seed=args.seed)
    model.fit(train.normal(), train.defective())
    real_test = model.defect_image_features([s for s in test if s.label == 1])
    results |= {
        "reference": "real TEST defect patches (KolektorSDD default split)",
        "real_test_defect_patches": int(real_test.shape[0]),
        "dropped_test_duplicates": dropped,
        "k": 5,
    }

    def add(name: str, feats: torch.Tensor, **extra) -> None:
        f = fidelity(feats, real_test).to_json() | extra
        results["sources"][name] = f
        write_json(path, results)
        print(f"{name:32s} " + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in f.items()), flush=True)  # fmt: skip

    rng = np.random.default_rng(args.seed)
    normal_feats = model.image_features([s for s in test if s.label == 0])
    flat = normal_feats.reshape(-1, normal_feats.shape[-1])
    add("random normal test patches", flat[torch.from_numpy(rng.choice(len(flat), 2000, False))])
    real_train = model.defect_image_features(train.defective())
    add("real training defects", real_train)

    def nearest_normal(rows: torch.Tensor) -> torch.Tensor:
        return model.memory_.bank_[model.memory_.query(rows)[1][:, 0]]

    for method in METHODS:
        feats = augment_defect_features(real_train, {"method": method}, args.seed, nearest_normal)
        add(f"feature baseline: {method}", feats)

    paste = work / "paste"
    if "copy-paste" not in done:
        generate_paste(train, args.n, paste, seed=args.seed, progress=False)
        add("copy-paste", model.defect_image_features(augmented_samples([paste])), images=args.n)

    # Rejection threshold from the training split: a fifth of real training defects are fainter.
    contrasts = [mask_contrast(s.image(), s.mask()) for s in train.defective()]
    min_contrast = float(np.percentile(contrasts, 20))
    results["min_contrast"] = {"value": min_contrast, "rule": "20th percentile of training defects"}
    stages = (
        json.loads(Path(args.training).read_text())["stages"]
        if Path(args.training).exists()
        else {}
    )
    for steps, stage in sorted(stages.items(), key=lambda kv: int(kv[0])):
        samplers = {"fast": (FAST, args.n)}
        if steps == max(stages, key=int):  # the levers, on the longest-trained model
            samplers |= {
                "fast 10-step": ({"sample_steps": 10}, args.n),
                "fast+reject": (FAST | {"min_contrast": min_contrast, "tries": 3}, args.n),
                "first": (FIRST, args.first_n),
            }
        for label, (kw, n) in samplers.items():
            name = f"ddpm {label} sampler, {steps} steps"
            if name in done:
                continue
            folder = work / f"ddpm-{label}-{steps}"
            load0 = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            sample_ddpm(stage["model"], train, n, folder, seed=args.seed, progress=False, **kw)
            seconds = (time.perf_counter() - t0) / n
            # CPU seconds of this one-thread process: what a defect costs whatever else runs
            cpu = (time.process_time() - c0) / n
            feats = model.defect_image_features(augmented_samples([folder]))
            add(name, feats, images=n, s_per_defect=round(seconds, 2),
                cpu_s_per_defect=round(cpu, 2), train_steps=int(steps),
                train_minutes=stage["total_minutes"], load=[load0, os.getloadavg()[0]])  # fmt: skip
    write_grid(train, work, out / "augment_grid.png")
    print(f"wrote {path} and {out / 'augment_grid.png'}")


def write_grid(train, work: Path, path: Path) -> None:
    """Rows: real training defects, copy-paste, then the first and the fast DDPM sampler on the
    longest-trained model."""
    from dualpatch.augment import augmented_samples
    from dualpatch.fileio import write_image

    last = max((p.name.rsplit("-", 1)[1] for p in work.glob("ddpm-first-*")), key=int, default="")
    folders = [work / "paste", work / f"ddpm-first-{last}", work / f"ddpm-fast 10-step-{last}"]
    rows = [_strip(train.defective()[:6])]
    rows += [_strip(augmented_samples([f])[:6]) for f in folders if (f / "manifest.csv").is_file()]
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([_fit(r, (r.shape[0], width)) for r in rows], axis=0)
    write_image(path, grid)


def _strip(samples, box=(96, 96)) -> np.ndarray:
    """A row of tiles centred on each sample's defect, with the mask outline in magenta."""
    from scipy import ndimage

    tiles = []
    for s in samples:
        img, mask = s.image(), s.mask()
        ys, xs = np.nonzero(mask)
        cy, cx = (
            (int(ys.mean()), int(xs.mean())) if len(ys) else (img.shape[0] // 2, img.shape[1] // 2)
        )
        h, w = box
        y0 = int(np.clip(cy - h // 2, 0, max(img.shape[0] - h, 0)))
        x0 = int(np.clip(cx - w // 2, 0, max(img.shape[1] - w, 0)))
        tile = img[y0 : y0 + h, x0 : x0 + w].copy()
        edge = mask[y0 : y0 + h, x0 : x0 + w]
        edge = edge & ~ndimage.binary_erosion(edge)
        outlined = tile.copy()
        outlined[edge] = (255, 0, 255)
        pad = np.full((h, 4, 3), 255, np.uint8)
        pair = np.concatenate([tile, np.full((h, 2, 3), 255, np.uint8), outlined], axis=1)
        tiles += [_fit(pair, (h, 2 * w + 2)), pad]
    return np.concatenate(tiles, axis=1)


def _fit(a: np.ndarray, shape) -> np.ndarray:
    out = np.full((*shape, 3), 255, np.uint8)
    out[: a.shape[0], : a.shape[1]] = a[: shape[0], : shape[1]]
    return out


if __name__ == "__main__":
    main()
