"""The safety suite's three datasets: where they are, the model size each is read at, and every
image of each (both official splits pooled, for cross-validation)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

DATA = Path(os.environ.get("DUALPATCH_SHARED_DATA", "/work/shared/data"))
CACHE = os.environ.get("DUALPATCH_CACHE", str(Path.home() / ".cache" / "dualpatch" / "features"))

#: (H, W) model sizes near each dataset's own aspect ratio: KolektorSDD ~500x1250 portrait, the
#: weld seams 400 wide and 101-392 high, BSData 1130x460 landscape
DATASETS = {
    "kolektorsdd": {"loader": "kolektorsdd", "root": DATA / "kolektorsdd", "size": (320, 128)},
    "battery_weld": {"loader": "folder", "root": DATA / "battery_weld" / "welding",
                     "size": (160, 256)},
    "bsdata": {"loader": "folder", "root": DATA / "bsdata", "size": (128, 320)},
}  # fmt: skip
for _spec in DATASETS.values():
    _spec["cache"] = CACHE


def pooled_samples(name: str) -> list:
    """Every image of dataset ``name``, train and test together (orphan-mask warnings muted: the
    weld set's 40 masks without an image are a known quirk, listed in its README)."""
    from dualpatch.experiment.protocol import pooled

    spec = DATASETS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(pooled(spec["loader"], spec["root"]))
