"""What every generator draws from: real training defect shapes, placed anew on normal images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dualpatch.data import Dataset, Sample
from dualpatch.data.crops import connected_regions
from dualpatch.data.images import resize
from dualpatch.errors import DataError


@dataclass(frozen=True)
class DefectShape:
    """One connected defect region of a training image, cut to its (padded) box."""

    mask: np.ndarray  # bool, the box's size
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 in the source image
    image_shape: tuple[int, int]
    sample: Sample


@dataclass(frozen=True)
class Placement:
    """Where a shape goes: flips, scale and top-left corner in the target image."""

    flip_h: bool
    flip_v: bool
    size: tuple[int, int]  # (h, w) after scaling
    y0: int
    x0: int

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """Flip and scale ``arr`` (a shape's bool mask or its box's pixels) as this placement does.

        Pixels and masks are scaled on one grid, OpenCV's bilinear one (data.images.OPENCV_GRID):
        a mask goes through it as 0/255 and keeps the pixels that come out at least half defect.
        OpenCV's nearest grid (floor of i * scale) lies up to half a source pixel up-left of the
        bilinear one's pixel centres, so a mask scaled nearest missed part of its own defect's
        pixels and covered surface beside them (tests/unit/augment/test_placement_alignment.py).
        """
        if self.flip_h:
            arr = arr[:, ::-1]
        if self.flip_v:
            arr = arr[::-1]
        h, w = self.size
        if arr.shape[:2] == (h, w):
            return np.ascontiguousarray(arr)
        # OpenCV's grids, not PIL's filters: PIL's bilinear filter widens when shrinking, which
        # would blur a small defect's pixels
        if arr.dtype == bool:
            levels = np.ascontiguousarray(arr).astype(np.uint8) * 255
            return resize(levels, (h, w), "opencv-linear") >= 128
        return resize(np.ascontiguousarray(arr), (h, w), "opencv-linear")

    def put(self, part: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Put an already transformed ``part`` at (y0, x0) on a zero canvas of ``shape`` (H, W)."""
        canvas = np.zeros(shape + part.shape[2:], dtype=part.dtype)
        h, w = self.size
        canvas[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = part
        return canvas

    def on_canvas(self, arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``apply`` then ``put``: ``arr`` flipped, scaled and placed on a canvas of ``shape``."""
        return self.put(self.apply(arr), shape)


def training_sources(dataset: Dataset) -> tuple[list[Sample], list[Sample]]:
    """(normal, defective-with-mask) samples of a training split; DataError if either is empty."""
    normals = dataset.normal()
    defects = [s for s in dataset.defective() if s.mask_path is not None]
    root = dataset.root or "<dataset>"
    if not normals:
        raise DataError(f"{root}: the training split has no normal images to put defects on")
    if not defects:
        raise DataError(f"{root}: the training split has no defective images with masks")
    return normals, defects


def defect_shapes(samples: Sequence[Sample], pad: int = 0) -> list[DefectShape]:
    """Every 8-connected mask region of ``samples``, each cut to its box grown by ``pad`` pixels."""
    shapes = []
    for s in samples:
        mask = s.mask()
        for region in connected_regions(mask, padding=pad):
            shapes.append(DefectShape(region.mask, region.box, mask.shape, s))
    if not shapes:
        raise DataError(f"{samples[0].mask_path}: the defective training masks are all empty")
    return shapes


def data_channels(samples: Sequence[Sample], probe: int = 6) -> int:
    """1 when the data is grayscale (all probed images have R == G == B), else 3.

    Grayscale data is modelled in one channel: a 3-channel model would have to learn that the
    channels are equal, and shows colour noise until it has.
    """
    for s in list(samples)[:probe]:
        img = s.image()
        if not (
            np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
        ):
            return 3
    return 1


def read_pixels(sample: Sample, channels: int) -> np.ndarray:
    """The sample's image at its own size as HxWxC uint8 (C = 1 for grayscale data)."""
    img = sample.image()
    return np.ascontiguousarray(img[..., :1] if channels == 1 else img)


def place(
    rng: np.random.Generator,
    shape: DefectShape,
    target: tuple[int, int],
    scale: tuple[float, float] = (0.75, 1.25),
    shift: float = 0.25,
    border: int = 2,
    centre: tuple[float, float] | None = None,
    flip: bool = True,
) -> Placement:
    """A random placement of ``shape`` on an image of size ``target`` (H, W).

    The shape keeps roughly its original position (shifted by up to ``shift`` of the image size)
    because defects sit on the part, not anywhere in the frame; it is flipped at random (with
    ``flip``), scaled by a factor in ``scale`` and kept ``border`` pixels inside the image.
    ``centre`` (y, x as shares of the image size) replaces the shape's own position as the point
    the shift starts from. The flips are drawn either way, so ``flip`` changes nothing else.
    """
    th, tw = target
    h0, w0 = shape.mask.shape
    s = rng.uniform(*scale)
    fit = min((th - 2 * border) / (h0 * s), (tw - 2 * border) / (w0 * s), 1.0)
    h = max(1, round(h0 * s * fit))
    w = max(1, round(w0 * s * fit))
    flip_h, flip_v = bool(rng.random() < 0.5) and flip, bool(rng.random() < 0.5) and flip
    if centre is None:
        centre = box_centre(shape)
    cy = centre[0] * th + rng.uniform(-shift, shift) * th
    cx = centre[1] * tw + rng.uniform(-shift, shift) * tw
    y0 = int(np.clip(round(cy - h / 2), border, th - border - h))
    x0 = int(np.clip(round(cx - w / 2), border, tw - border - w))
    return Placement(flip_h, flip_v, (h, w), y0, x0)


def box_centre(shape: DefectShape) -> tuple[float, float]:
    """Centre of a shape's box as shares (y, x) of its image's height and width."""
    y0, x0, y1, x1 = shape.box
    return (y0 + y1) / 2 / shape.image_shape[0], (x0 + x1) / 2 / shape.image_shape[1]


def _gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)


@dataclass(frozen=True)
class PlacementPrior:
    """Where defects occur, learned from the training masks of the defects a generator may see.

    ``centres`` are the training defects' box centres (shares of the image size): a new defect goes
    near one of them, picked at random. The part is told from the background by intensity: ``lo``
    and ``hi`` bound the gray levels of the surface around training defects (the 1st and 99th
    percentiles of a rim around each box), and a position is on the part when at least
    ``min_on_part`` of the pixels under the placed box fall inside those bounds. Sizes and
    orientations are the real shapes' own (flipped, scaled 0.75-1.25x, never rotated: KolektorSDD's
    cracks all run across the part).
    """

    centres: tuple[tuple[float, float], ...]
    ids: tuple[str, ...]
    lo: float
    hi: float
    min_on_part: float = 0.9

    @classmethod
    def learn(cls, shapes: Sequence[DefectShape], rim: int = 16) -> PlacementPrior:
        levels = []
        for sh in shapes:
            gray = _gray(sh.sample.image())
            y0, x0, y1, x1 = sh.box
            box = gray[max(y0 - rim, 0) : y1 + rim, max(x0 - rim, 0) : x1 + rim]
            levels.append(box.ravel())
        lo, hi = np.percentile(np.concatenate(levels), [1, 99])
        return cls(
            tuple(box_centre(sh) for sh in shapes),
            tuple(sh.sample.id for sh in shapes),
            float(lo),
            float(hi),
        )

    def on_part(self, gray: np.ndarray, where: Placement) -> float:
        """Share of the pixels under the placed box whose gray level lies within [lo, hi]."""
        h, w = where.size
        box = gray[where.y0 : where.y0 + h, where.x0 : where.x0 + w]
        return float(((box >= self.lo) & (box <= self.hi)).mean())

    def place(
        self,
        rng: np.random.Generator,
        shape: DefectShape,
        image: np.ndarray,
        shift: float = 0.05,
        tries: int = 20,
        scale: tuple[float, float] = (0.75, 1.25),
        flip: bool = True,
    ) -> tuple[Placement, str]:
        """A placement of ``shape`` on ``image`` near a training defect's centre and on the part,
        with the reason it was chosen (for the manifest). After ``tries`` positions off the part,
        the best one seen is kept and the reason says so."""
        gray = _gray(image)
        best: tuple[float, Placement, int, int] | None = None
        for attempt in range(1, tries + 1):
            k = int(rng.integers(len(self.centres)))
            where = place(rng, shape, image.shape[:2], scale, shift, centre=self.centres[k],
                          flip=flip)  # fmt: skip
            share = self.on_part(gray, where)
            if best is None or share > best[0]:
                best = (share, where, k, attempt)
            if share >= self.min_on_part:
                break
        share, where, k, attempt = best
        cy, cx = self.centres[k]
        ok = share >= self.min_on_part
        verdict = "on part" if ok else f"best of {tries} tries, none on part"
        return where, (
            f"near training defect {self.ids[k]} (centre y {cy:.2f} x {cx:.2f}, +-{shift:.2f}); "
            f"{verdict}: {share:.0%} of box in gray {self.lo:.0f}-{self.hi:.0f} (try {attempt})"
        )


def thin(rng: np.random.Generator, mask: np.ndarray, keep: float = 0.3) -> np.ndarray:
    """Erode a mask by a random 0 .. half its half-thickness, keeping at least ``keep`` of it.

    Coarse labels (KolektorSDD's are drawn generously around thin cracks) would otherwise make every
    synthetic defect as thick as its label.
    """
    if not mask.any():
        return mask
    half = float(ndimage.distance_transform_edt(np.pad(mask, 1)).max())
    k = int(rng.integers(0, int(half * 0.5) + 1))
    if k == 0:
        return mask
    eroded = ndimage.binary_erosion(mask, iterations=k)
    return eroded if eroded.sum() >= keep * mask.sum() else mask
