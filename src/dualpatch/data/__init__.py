"""Datasets: each yields ``Sample`` records (image path, mask path, label, id), loaded lazily."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Dataset, Sample
from .crops import DefectCrop, extract_defect_crops
from .demo import make_demo_dataset
from .images import read_image, read_mask
from .kolektorsdd import KolektorSDD
from .ksdd2 import KolektorSDD2
from .mvtec import MVTecFolder

DATASETS = {
    "kolektorsdd": KolektorSDD,
    "ksdd2": KolektorSDD2,
    "folder": MVTecFolder,
    "demo": KolektorSDD2,
}


def load_dataset(name: str, root: str | Path, split: str) -> Dataset:
    """Open dataset ``name`` (kolektorsdd, ksdd2, folder, demo) at ``root``.

    ``demo`` generates the synthetic set at ``root`` first if it is not there yet.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if name == "demo":
        make_demo_dataset(root)
    return DATASETS[name](root, split=split)


__all__ = [
    "DATASETS",
    "Dataset",
    "DefectCrop",
    "KolektorSDD",
    "KolektorSDD2",
    "MVTecFolder",
    "Sample",
    "extract_defect_crops",
    "load_dataset",
    "make_demo_dataset",
    "read_image",
    "read_mask",
]
