"""The dataset contract every loader follows: a lazy, ordered list of ``Sample`` records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualpatch.data.images import Size, image_shape, read_image, read_mask
from dualpatch.errors import DataError


class MissingSplit(DataError):
    """A dataset without the split asked for (an MVTec folder without ``test/``): ``fit`` needs
    only the training split and goes on without it."""


@dataclass(frozen=True)
class Sample:
    """One image on disk: its id, optional mask file and label (1 = defective)."""

    id: str
    image_path: Path
    mask_path: Path | None
    label: int
    #: how a mask with values other than 0/255 is treated: "ok", "warn", "error" or "threshold"
    #: (JPEG masks: half range is the cut; see read_mask)
    mask_values: str = "warn"

    @property
    def mask_known(self) -> bool:
        """True unless this is a defective image without a mask file: its defect pixels are
        unknown, so it counts for image metrics but not for pixel metrics or the defect bank."""
        return self.label != 1 or self.mask_path is not None

    def image(self, size: Size | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB, resized to ``size`` = (H, W) when given."""
        return read_image(self.image_path, size)

    def mask(self, size: Size | None = None) -> np.ndarray:
        """HxW bool defect mask; all False for a good sample without a mask file."""
        if self.mask_path is None:
            shape = size or image_shape(self.image_path)
            return np.zeros(shape, dtype=bool)
        return read_mask(self.mask_path, image_shape(self.image_path), size, self.mask_values)


class Dataset(Sequence[Sample]):
    """A lazy list of samples: nothing but paths is held in memory."""

    name = "dataset"

    def __init__(self, samples: Sequence[Sample], root: Path | None = None):
        if not samples:
            raise DataError(f"{root or '<dataset>'}: no images found")
        self.samples = list(samples)
        self.root = root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.samples[i]
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def normal(self) -> list[Sample]:
        """Defect-free samples only."""
        return [s for s in self.samples if s.label == 0]

    def defective(self) -> list[Sample]:
        """Defective samples only."""
        return [s for s in self.samples if s.label == 1]

    def masked_defective(self) -> list[Sample]:
        """Defective samples with a mask: those whose defect patches can feed a defect bank."""
        return [s for s in self.samples if s.label == 1 and s.mask_path is not None]

    def defect_crops(self, size: Size | None = None, padding: int = 16, min_size: int = 32):
        """Crops around each connected defect region, at the model's input scale ``size``."""
        by_image = self.defect_crops_by_image(size, padding, min_size)
        return [c for _, crops in by_image for c in crops]

    def defect_crops_by_image(
        self, size: Size | None = None, padding: int = 16, min_size: int = 32
    ) -> Iterator[tuple[Sample, list]]:
        """(sample, its crops) for each defective sample, lazily: what ``defect_crops`` and
        ``dualpatch data crops`` both cut, so the two give identical crops. One crop per
        8-connected region of the mask at its native resolution (``crops.native_regions``)."""
        from dualpatch.data.crops import extract_defect_crops

        for s in self.masked_defective():
            # regions are the annotation's own (native resolution), not the downscaled mask's
            native = s.mask() if size is not None else None
            crops = extract_defect_crops(
                s.image(size), s.mask(size), padding, min_size, s.id, native
            )
            yield s, crops

    def file_list(self) -> list[dict]:
        return [
            {
                "id": s.id,
                "image": str(s.image_path),
                "mask": str(s.mask_path) if s.mask_path else None,
                "label": s.label,
            }
            for s in self.samples
        ]

    def fingerprint(self) -> str:
        """SHA-256 of the file list (paths, sizes, labels): changes when the data changes."""
        h = hashlib.sha256()
        for entry in self.file_list():
            p = Path(entry["image"])
            entry["bytes"] = p.stat().st_size if p.exists() else -1
            h.update(json.dumps(entry, sort_keys=True).encode())
        return h.hexdigest()
