"""Copy-paste baseline: real training defects Poisson-blended onto normal training images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from dualpatch.augment.manifest import ManifestRow, check_output, open_output
from dualpatch.augment.sources import (
    PlacementPrior,
    data_channels,
    defect_shapes,
    place,
    read_pixels,
    training_sources,
)
from dualpatch.data import Dataset
from dualpatch.data.crop_folder import CropSpec
from dualpatch.data.crop_reader import CropRow
from dualpatch.errors import ConfigError
from dualpatch.events import track

#: pixels of surface kept around each defect: Poisson blending needs a rim to match gradients on
RIM = 3


def generate_paste(
    dataset: Dataset,
    n: int,
    out: str | Path,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    force: bool = False,
    as_crops: CropSpec | None = None,
    placement: str = "learned",
    flip: bool = False,
    scale: tuple[float, float] = (1.0, 1.0),
) -> list[ManifestRow] | list[CropRow]:
    """Write ``n`` images to ``out``: each a random normal training image with one real training
    defect moved onto it and Poisson-blended in (``_blend``).

    ``placement`` "learned" puts the defect near a training defect's centre and on the part
    (``PlacementPrior``), "source" within +-0.30 of the image of its own position; ``flip`` flips
    it at random, ``scale`` scales it by a random factor in that range. The defaults (learned, no
    flips, no scaling; before: source, flips, 0.8-1.2x) were chosen on training data only: real
    defects pasted from one half of KolektorSDD's training items came out nearest to the other
    half's (benchmarks/fidelity_levers.py, docs/fewshot.md "Fidelity of copy-paste").
    The written mask is the blended region (the defect's mask grown by ``RIM`` pixels), so pixels
    outside it equal the normal image's. Row ``i`` uses seed ``seed + i`` and is reproducible.
    ``as_crops`` writes each image's defect crops instead (see ``open_output``).
    """
    if placement not in ("learned", "source"):
        raise ConfigError(f"unknown placement {placement!r} (learned or source)")
    if as_crops is None:
        check_output(out, force, [dataset.root])
    normals, defects = training_sources(dataset)
    shapes = defect_shapes(defects, pad=RIM + 1)
    channels = data_channels(normals + defects)
    prior = PlacementPrior.learn(shapes) if placement == "learned" else None
    if log:
        log(f"paste: {len(shapes)} training defects onto {len(normals)} normal images")
    with open_output(out, as_crops, "paste", force, [dataset.root]) as writer:
        for i in track(range(n), "paste", progress=progress):
            rng = np.random.default_rng(seed + i)
            normal = normals[int(rng.integers(len(normals)))]
            shape = shapes[int(rng.integers(len(shapes)))]
            dst = read_pixels(normal, channels)
            src = read_pixels(shape.sample, channels)
            y0, x0, y1, x1 = shape.box
            # The grown region: defect plus rim, which the blend re-solves from gradients.
            region = ndimage.binary_dilation(shape.mask, iterations=RIM)
            if prior is not None:
                where, why = prior.place(rng, shape, dst, scale=scale, flip=flip)
            else:
                where = place(rng, shape, dst.shape[:2], scale=scale, shift=0.3, flip=flip)
                why = "source defect's own position (+-0.30 of the image)"
            why += (
                f"; scale {scale[0]:g}-{scale[1]:g}, {'flipped at random' if flip else 'no flips'}"
            )
            mask = where.on_canvas(region, dst.shape[:2])
            patch = where.on_canvas(src[y0:y1, x0:x1], dst.shape[:2])
            image = _blend(patch, dst, mask)
            writer.add(image, mask, normal.image_path, shape.sample.mask_path, seed + i,
                       placement=why)  # fmt: skip
    return writer.rows


def _blend(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson-blend ``src`` into ``dst`` inside ``mask`` (all one size); outside stays ``dst``.

    Poisson image editing (Perez et al. 2003, ``cv2.seamlessClone``'s NORMAL_CLONE): inside the
    mask the result has ``src``'s Laplacian, and at the mask's edge it meets the ``dst`` pixels
    around it. Solved exactly with scipy's sparse LU, not with ``cv2.seamlessClone``, which (OpenCV
    5.0) washed defects out (a spot 140 gray levels below its surface came out 19 below, where the
    exact solution keeps all 140: tests/unit/augment/test_poisson_blend.py) and, for some masks,
    returned ``dst`` unchanged on every second identical call (a defect mask on plain surface, and
    one seed giving different images).
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    inner = mask.copy()  # an image-border pixel has no neighbour on one side: it stays dst
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    ys, xs = np.nonzero(inner)
    out = dst.copy()
    if len(ys) == 0:
        return out
    index = np.full(mask.shape, -1, dtype=np.int64)
    index[ys, xs] = np.arange(len(ys))
    s, d = src.astype(np.float64), dst.astype(np.float64)
    rhs = np.zeros((len(ys), dst.shape[2]))
    rows, cols = [np.arange(len(ys))], [np.arange(len(ys))]
    values = [np.full(len(ys), 4.0)]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        rhs += s[ys, xs] - s[ny, nx]  # the guidance field: src's own differences
        j = index[ny, nx]
        unknown = j >= 0
        rows.append(np.nonzero(unknown)[0])
        cols.append(j[unknown])
        values.append(np.full(int(unknown.sum()), -1.0))
        rhs[~unknown] += d[ny[~unknown], nx[~unknown]]  # the boundary: dst just outside
    a = csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(len(ys), len(ys)))  # fmt: skip
    solved = splu(a).solve(rhs)
    out[ys, xs] = np.clip(np.rint(solved), 0, 255).astype(dst.dtype)
    return out
