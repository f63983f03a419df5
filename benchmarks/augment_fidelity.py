"""How close are synthetic defects to real ones? A picture and one number per source.

Writes ``benchmarks/results/augment_grid.png`` (real training defects beside synthetic ones) and
``benchmarks/results/augment_fidelity.json``: the mean distance, in the backbone's patch-feature
space, from each synthetic defect patch to its nearest REAL TEST defect patch, set against the
same distance from random normal test patches. Lower than the normal baseline means the synthetic
patches look like real defects to the detector.

    python benchmarks/augment_fidelity.py --data ../shared/data/kolektorsdd \
        --pool ddpm=runs/kolektorsdd-ablation/augment/ddpm-... --pool paste=runs/.../paste-...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

SIZE = (320, 128)


def mask_patches(model, samples) -> torch.Tensor:
    return model.defect_image_features(samples)


def main() -> None:
    from dualpatch import DualPatchCore
    from dualpatch.augment import augmented_samples
    from dualpatch.data import KolektorSDD
    from dualpatch.fileio import write_image, write_json
    from dualpatch.memory import knn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--pool", action="append", default=[], help="NAME=FOLDER (repeatable)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    train, test = KolektorSDD(args.data, "train"), KolektorSDD(args.data, "test")
    model = DualPatchCore(image_size=SIZE, progress=False)
    real_test = mask_patches(model, test.defective())
    rng = np.random.default_rng(args.seed)
    normal_feats = model.image_features(test.normal())
    flat = normal_feats.reshape(-1, normal_feats.shape[-1])
    pick = torch.from_numpy(rng.choice(flat.shape[0], size=2000, replace=False))
    baseline = knn(flat[pick], real_test)[0][:, 0]
    real_train = mask_patches(model, train.defective())
    results = {
        "real_test_defect_patches": int(real_test.shape[0]),
        "random_normal_patches": {"n": 2000, "mean_nn_distance": float(baseline.mean())},
        "real_train_defect_patches": {
            "n": int(real_train.shape[0]),
            "mean_nn_distance": float(knn(real_train, real_test)[0][:, 0].mean()),
        },
    }
    pools = dict(p.split("=", 1) for p in args.pool)
    rows = [_strip(train.defective()[:6])]
    for name, folder in pools.items():
        synth = augmented_samples([folder])
        feats = mask_patches(model, synth)
        d = knn(feats, real_test)[0][:, 0]
        results[name] = {
            "images": len(synth),
            "n": int(feats.shape[0]),
            "mean_nn_distance": float(d.mean()),
        }
        rows.append(_strip(synth[:6]))
        print(f"{name}: {results[name]}")
    print(f"random normal patches: {results['random_normal_patches']}")
    print(f"real training defects: {results['real_train_defect_patches']}")
    write_json(out / "augment_fidelity.json", results)
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([_fit(r, (r.shape[0], width)) for r in rows], axis=0)
    write_image(out / "augment_grid.png", grid)
    print(f"wrote {out / 'augment_grid.png'} (rows: real, {', '.join(pools)})")


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
