"""Datasets: each yields ``Sample`` records (image path, mask path, label, id), loaded lazily."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from dualpatch.data.base import Dataset, MissingSplit, Sample
from dualpatch.data.folder import (
    FolderLayout,
    ImageFolder,
    layout_of,
    open_folder,
    split_validation,
)
from dualpatch.data.images import read_image, read_mask
from dualpatch.data.kolektorsdd import KolektorSDD
from dualpatch.data.ksdd2 import KolektorSDD2
from dualpatch.data.mvtec import MVTecFolder
from dualpatch.errors import ConfigError

if TYPE_CHECKING:
    from dualpatch.data.crops import DefectCrop, extract_defect_crops
    from dualpatch.data.demo import make_demo_dataset

# scipy loads on first use of these: the registry below (the config's and the CLI's choices of
# dataset) costs little to import
_LAZY = {"DefectCrop": "crops", "extract_defect_crops": "crops", "make_demo_dataset": "demo"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: datasets by name: the one place a dataset family is added
DATASETS = {
    "kolektorsdd": KolektorSDD,
    "ksdd2": KolektorSDD2,
    "folder": open_folder,
    "demo": KolektorSDD2,
}


def load_dataset(
    name: str, root: str | Path, split: str, layout: FolderLayout | None = None
) -> Dataset:
    """Open dataset ``name`` (kolektorsdd, ksdd2, folder, demo) at ``root``.

    ``demo`` generates the synthetic set at ``root`` first if it is not there yet. ``layout``:
    a ``folder`` dataset's sub-folders and split (``data.folder``; other datasets ignore it).
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if name == "demo":
        from dualpatch.data.demo import make_demo_dataset

        make_demo_dataset(root)
    if name == "folder":
        return open_folder(root, split, layout)
    return DATASETS[name](root, split=split)


__all__ = [
    "DATASETS",
    "Dataset",
    "DefectCrop",
    "FolderLayout",
    "ImageFolder",
    "KolektorSDD",
    "KolektorSDD2",
    "MVTecFolder",
    "MissingSplit",
    "Sample",
    "extract_defect_crops",
    "layout_of",
    "load_dataset",
    "make_demo_dataset",
    "open_folder",
    "read_image",
    "read_mask",
    "split_validation",
]
