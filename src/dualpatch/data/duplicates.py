"""Leak detection: exact (and near) duplicate images within and across the train and test splits.

A test image that is a byte-for-byte copy of a training image is scored against itself: in
KolektorSDD, kos34 (test) repeats kos27 (train) file for file, defective Part0 included, so that
defect sits in the defect bank at distance ~0. ``check_splits`` finds such copies by SHA-256 and,
by policy, warns (one line per pair, naming both files), drops the test copy, or refuses.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualpatch.data.base import Dataset, Sample
from dualpatch.errors import DataError
from dualpatch.fileio import sha256_file

POLICIES = ("warn", "drop", "error")


@dataclass
class DuplicateReport:
    """Groups of byte-identical images, and which test images copy a training image."""

    #: each group: ``[(split, sample), ...]`` with at least two members
    groups: list[list[tuple[str, Sample]]] = field(default_factory=list)
    policy: str = "warn"
    dropped: list[str] = field(default_factory=list)  # test image paths removed by "drop"
    #: the near-copy check's largest Hamming distance of average hashes (None: not checked)
    near_bits: int | None = None
    #: (training sample, test sample, distance) pairs within ``near_bits``, exact copies excluded
    near: list[tuple[Sample, Sample, int]] = field(default_factory=list)

    @property
    def across(self) -> list[tuple[Sample, Sample]]:
        """(training sample, test sample) pairs with identical bytes."""
        pairs = []
        for group in self.groups:
            train = [s for split, s in group if split == "train"]
            if train:
                pairs += [(train[0], s) for split, s in group if split == "test"]
        return pairs

    def to_json(self) -> dict:
        return {
            "policy": self.policy,
            "exact_groups": [
                [{"split": split, "id": s.id, "image": str(s.image_path)} for split, s in group]
                for group in self.groups
            ],
            "across_splits": len(self.across),
            "dropped_from_test": self.dropped,
            "near_copies": self.near_json(),
        }

    def near_json(self) -> dict:
        """The near-copy check: off unless ``near_duplicates`` is set; its pairs when on."""
        if self.near_bits is None:
            return {"checked": False, "why": "off by default (near_duplicates: null)"}
        return {
            "checked": True,
            "max_bits": self.near_bits,
            "across_splits": len(self.near),
            "pairs": [
                {"train": str(a.image_path), "test": str(b.image_path), "bits": d}
                for a, b, d in self.near
            ],
        }


def find_duplicates(splits: dict[str, list[Sample]]) -> list[list[tuple[str, Sample]]]:
    """Groups (two or more members) of samples whose image files have the same SHA-256."""
    by_hash: dict[str, list[tuple[str, Sample]]] = defaultdict(list)
    for split, samples in splits.items():
        for s in samples:
            by_hash[sha256_file(s.image_path)].append((split, s))
    return [g for g in by_hash.values() if len(g) > 1]


def warn_within(
    groups: list[list[tuple[str, Sample]]], where: str, note: str = "", show: int = 3
) -> None:
    """One warning line for all groups of identical images inside one split or dataset.

    Groups that pair whole folders file for file (KolektorSDD's ``kos01/PartK = kos26/PartK``) are
    summarised per folder pair: ``kos01 = kos26 (8 images)``.
    """
    folder_pairs: dict[str, int] = {}
    names = []
    for g in groups:
        heads, tails = zip(*(s.id.rpartition("/")[::2] for _, s in g), strict=True)
        if all(heads) and len(set(tails)) == 1 and len(set(heads)) == len(heads):
            key = " = ".join(heads)
            folder_pairs[key] = folder_pairs.get(key, 0) + 1
        else:
            names.append(" = ".join(s.id for _, s in g))
    names = [f"{k} ({n} image{'s' if n > 1 else ''})" for k, n in folder_pairs.items()] + names
    more = f" and {len(names) - show} more" if len(names) > show else ""
    warnings.warn(
        f"{len(groups)} group(s) of identical images in {where}: "
        f"{', '.join(names[:show])}{more} (all listed in dataset.json){note}",
        stacklevel=3,
    )


def check_splits(
    train: Dataset,
    test: Dataset,
    policy: str = "warn",
    report_within: bool = True,
    near_bits: int | None = None,
):
    """Look for exact duplicates within and across ``train`` and ``test``; apply ``policy``.

    Returns ``(test, report)``: ``test`` without the images that copy a training image when
    ``policy == "drop"``, else unchanged. Every cross-split copy gives one warning line naming both
    files (``warn`` and ``drop``) or a DataError (``error``); copies inside one split are reported
    in one line per split (``report_within``). With ``near_bits`` (off by default), test images
    whose average hash is within that many bits of a training image's count as copies too, under
    the same policy (one summary warning line; every pair in ``report.near``).
    """
    if policy not in POLICIES:
        raise DataError(f"on_duplicates is {policy!r}; expected one of {', '.join(POLICIES)}")
    report = DuplicateReport(find_duplicates({"train": train, "test": test}), policy)
    across = report.across
    if near_bits is not None:
        report.near_bits = near_bits
        report.near = near_duplicates(list(train), list(test), near_bits)
        _near_policy(report.near, policy, near_bits)
    if across and policy == "error":
        a, b = across[0]
        more = f" (and {len(across) - 1} more)" if len(across) > 1 else ""
        raise DataError(
            f"{b.image_path}: test image is an exact copy of training image {a.image_path}"
            f"{more}; use --on-duplicates drop or a split that keeps copies together"
        )
    for a, b in across:
        action = "dropped from the test set" if policy == "drop" else "leaks into the test set"
        warnings.warn(
            f"{b.image_path}: test image is an exact copy of training image {a.image_path}; "
            f"{action}",
            stacklevel=2,
        )
    if report_within:
        for split in ("train", "test"):
            within = [g for g in report.groups if {sp for sp, _ in g} == {split}]
            if within:
                warn_within(within, f"the {split} split of {train.root}")
    leaked = [b for _, b in across] + [b for _, b, _ in report.near]
    if policy == "drop" and leaked:
        ids = {id(b) for b in leaked}
        kept = [s for s in test if id(s) not in ids]
        if not kept:
            raise DataError(f"{test.root}: every test image copies a training image")
        report.dropped = list(dict.fromkeys(str(b.image_path) for b in leaked))
        test = copy.copy(test)
        test.samples = kept
    return test, report


def _near_policy(near: list[tuple[Sample, Sample, int]], policy: str, bits: int) -> None:
    """``error``: refuse on the first near copy; else one warning line for all of them."""
    if not near:
        return
    a, b, d = near[0]
    more = f" (and {len(near) - 1} more)" if len(near) > 1 else ""
    if policy == "error":
        raise DataError(
            f"{b.image_path}: test image is a near copy of training image {a.image_path} "
            f"({d} of {bits} allowed hash bits differ){more}; use --on-duplicates drop, "
            "a split that keeps copies together, or a smaller --near-duplicates"
        )
    action = "dropped from the test set" if policy == "drop" else "kept in the test set"
    warnings.warn(
        f"{len(near)} test image(s) are near copies of training images (average hash within "
        f"{bits} bits), e.g. {b.image_path} ~ {a.image_path}; {action} (all listed in "
        "dataset.json)",
        stacklevel=3,
    )


# ------------------------------------------------------------------------ near duplicates
def average_hash(path: str | os.PathLike[str], side: int = 16) -> np.ndarray:
    """A perceptual hash: the image in gray at ``side`` x ``side``, thresholded at its mean."""
    from dualpatch.data.images import read_image

    small = read_image(Path(path), (side, side)).mean(axis=2)
    return (small > small.mean()).reshape(-1)


def near_duplicates(
    train: list[Sample], test: list[Sample], max_bits: int = 8, side: int = 16
) -> list[tuple[Sample, Sample, int]]:
    """(train, test, Hamming distance) for test images whose average hash is within ``max_bits``
    of a training image's, excluding exact copies: re-encoded or slightly shifted copies."""
    if not train or not test:
        return []
    a = np.stack([average_hash(s.image_path, side) for s in train]).astype(np.float32)
    b = np.stack([average_hash(s.image_path, side) for s in test]).astype(np.float32)
    # Hamming distance of 0/1 vectors as one matrix product: |a| + |b| - 2 a.b
    dist = np.rint(b.sum(1)[:, None] + a.sum(1)[None, :] - 2 * b @ a.T).astype(int)
    out = []
    for j, i in zip(*np.nonzero(dist <= max_bits), strict=True):
        if sha256_file(train[i].image_path) != sha256_file(test[j].image_path):
            out.append((train[i], test[j], int(dist[j, i])))
    return out
