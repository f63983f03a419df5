"""Native-resolution pixel metrics: the map upsampled to the image's size, the mask as annotated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from dualpatch.data.images import resize_mask
from dualpatch.metrics.evaluation import aupro, evaluate, native_pixel_metrics, pixel_metrics

NATIVE, SMALL = (80, 40), (20, 10)


@dataclass
class Fake:
    """What native_pixel_metrics reads of a sample: its image file (for the size) and its mask."""

    image_path: Path
    native_mask: np.ndarray

    def mask(self, size=None):
        return self.native_mask if size is None else resize_mask(self.native_mask, size)


def _samples(tmp_path: Path) -> list[Fake]:
    out = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("L", NATIVE[::-1]).save(path)
        mask = np.zeros(NATIVE, dtype=bool)
        if i:  # a one-pixel-wide vertical crack, off the rows the 4x nearest resize samples
            mask[10:50, 13 + 2 * i] = True  # columns 15 and 17
        out.append(Fake(path, mask))
    return out


def _maps(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    maps = rng.random((3, *SMALL)).astype(np.float32)
    maps[1:, 2:13, 3:5] += 1.0  # higher around the cracks
    return maps


def test_native_metrics_upsample_the_map_and_keep_the_annotated_mask(tmp_path):
    samples, maps = _samples(tmp_path), _maps(0)
    got = native_pixel_metrics(samples, maps)
    # independently: PIL's bilinear resize of each map, scikit-learn's AUROC over every pixel
    up = [np.asarray(Image.fromarray(m).resize(NATIVE[::-1], Image.BILINEAR)) for m in maps]
    masks = [s.native_mask for s in samples]
    flat_mask = np.concatenate([m.ravel() for m in masks])
    expected = roc_auc_score(flat_mask, np.concatenate([u.ravel() for u in up]))
    assert abs(got["pixel_auroc_native"] - expected) < 1e-12
    assert abs(got["pixel_aupro_native"] - aupro(np.stack(masks), np.stack(up))) < 1e-12


def test_a_thin_crack_counts_natively_where_the_downscaled_mask_loses_it(tmp_path):
    samples, maps = _samples(tmp_path), _maps(1)
    small = np.stack([s.mask(SMALL) for s in samples])
    assert not small.any()  # the nearest-neighbour downscale drops both cracks
    model_size = evaluate(np.array([0, 1, 1]), maps.max(axis=(1, 2)), small, maps)
    assert np.isnan(model_size["pixel_auroc"]) and np.isnan(model_size["pixel_aupro"])
    native = native_pixel_metrics(samples, maps)
    assert 0.5 < native["pixel_auroc_native"] <= 1 and 0 < native["pixel_aupro_native"] <= 1


def test_lists_of_images_give_what_the_stacked_arrays_give():
    rng = np.random.default_rng(2)
    masks, maps = rng.random((3, 6, 9)) > 0.7, rng.random((3, 6, 9))
    assert pixel_metrics(list(masks), list(maps)) == pixel_metrics(masks, maps)
    # images of different sizes: AUROC over every pixel of every image
    masks = [rng.random((6, 9)) > 0.7, rng.random((4, 5)) > 0.6]
    maps = [rng.random((6, 9)), rng.random((4, 5))]
    flat_m = np.concatenate([m.ravel() for m in masks])
    flat_a = np.concatenate([a.ravel() for a in maps])
    found = pixel_metrics(masks, maps)
    assert abs(found["pixel_auroc"] - roc_auc_score(flat_m, flat_a)) < 1e-12
    assert 0 < found["pixel_aupro"] <= 1
