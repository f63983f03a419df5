"""The on-disk feature cache: one safetensors file of (h, w, D) patch features per image, keyed
by the image's content and everything that shapes its features, plus the shared normal banks.

Entries are never trusted: each carries the SHA-256 of its key (the image's digest, the
extractor's and the settings: ``cache_key``) and its values together, so a missing, truncated or
damaged entry, and one copied or renamed onto another image's key, is deleted and recomputed. An
unwritable cache warns once and is dropped. The folder is made private (0700); a group- or
world-writable one warns once, since whoever can write it can forge consistent entries and so
change scores (the trust boundary: docs/cache.md). ``verify_entries`` re-extracts a sample.

An estimator hands the functions here its ``FeatureSource`` (backbone, input size, batch size,
cache folder, key prefix, progress), built once by the estimator: nothing here reaches back
into the estimator.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dualpatch.data.base import Sample
from dualpatch.errors import DataError
from dualpatch.events import open_stage, silent
from dualpatch.features.extractor import FEATURE_VERSION, to_tensor
from dualpatch.fileio import atomic_path, sha256_file

#: Bump whenever coreset selection changes: shared normal banks of an older version are ignored.
#: 2: a spilled fit past its cap samples rows from the cap alone (spill.PROJECTION_SHARE).
BANK_VERSION = 2


def key_prefix(backbone: str, image_size: Sequence[int], normalization: str, weights) -> bytes:
    """What shapes an image's features besides its content: code version, backbone, weights."""
    digest = sha256_file(weights) if weights else "package"
    return json.dumps([FEATURE_VERSION, backbone, list(image_size), normalization, digest]).encode()


def cache_key(prefix: bytes, image_path: str) -> str:
    """Image content + ``prefix`` (see ``key_prefix``)."""
    h = hashlib.sha256(sha256_file(image_path).encode())
    h.update(prefix)
    return h.hexdigest()


def entry_path(cache: Path, key: str) -> Path:
    """Where the cache folder ``cache`` keeps the features of the image with ``key``
    (``FeatureSource.key(sample)``): the one naming rule of every reader and writer."""
    return cache / f"{key}.safetensors"


@dataclass(frozen=True)
class FeatureSource:
    """Where an estimator's patch features come from: its backbone (``extractor``: a function
    that gives it, so that a fit whose features are all cached never loads it), input size
    (H, W), batch size, cache folder (None: no cache), cache key prefix (``key_prefix``) and
    progress setting (``events.open_stage``). Built once by the estimator
    (``PatchCore.feature_source``) and passed down to the cache, the spill store, the defect
    features and the Ray fit."""

    extractor: Callable[[], Any]
    image_size: tuple[int, int]
    batch_size: int
    cache_dir: str | None
    key_prefix: bytes
    progress: Any = True

    def key(self, sample: Sample) -> str:
        """The cache key of ``sample``'s features: its image's content and this prefix."""
        return cache_key(self.key_prefix, sample.image_path)

    def extract(self, samples: Sequence[Sample]) -> torch.Tensor:
        """(B, h, w, D) patch features of one batch of full images, through the backbone at
        ``image_size`` (no cache)."""
        return extract(self, samples)

    def features(
        self, samples: Sequence[Sample], desc: str | None = "features", bar: Callable | None = None
    ) -> torch.Tensor:
        """(N, h, w, D) patch features of full images, through the cache when there is one;
        ``desc`` names the progress stage (None: none), ``bar`` takes the progress instead."""
        bar = bar or (self.stage(desc, len(samples)) if desc else silent("", 0))
        return image_features(self, samples, bar)

    def stage(self, desc: str, total: int) -> Callable[[int], None]:
        """A progress stage of ``total`` steps (shown or not as ``progress`` says)."""
        return open_stage(self.progress, desc, total)


def image_features(
    source: FeatureSource, samples: Sequence[Sample], bar: Callable[[int], None]
) -> torch.Tensor:
    """(N, h, w, D) patch features from ``source`` of full images at its ``image_size``, read
    from and written to its cache folder when it has one; ``bar`` gets the number of images
    done."""
    cache = Path(source.cache_dir) if source.cache_dir else None
    if cache is not None:
        private_folder(cache)
    out: list[torch.Tensor | None] = [None] * len(samples)
    paths = [entry_path(cache, source.key(s)) for s in samples] if cache else []
    todo = []
    for i in range(len(samples)):
        if cache is not None:
            out[i] = load_cached(paths[i])
            if out[i] is not None:
                continue
        todo.append(i)
    bar(len(samples) - len(todo))
    for start in range(0, len(todo), source.batch_size):
        batch = todo[start : start + source.batch_size]
        feats = source.extract([samples[i] for i in batch])
        for i, f in zip(batch, feats, strict=True):
            out[i] = f
            if cache is not None and not save_cached(paths[i], f):
                cache = None  # unwritable: warned once, carry on without it
        bar(len(batch))
    if not out:
        raise DataError("no images to extract features from")
    return torch.stack(out)  # type: ignore[arg-type]


def extract(source: FeatureSource, samples: Sequence[Sample]) -> torch.Tensor:
    """(B, h, w, D) patch features of one batch of full images, run through ``source``'s backbone
    at its ``image_size`` (no cache): the one place the backbone runs on whole images."""
    images = to_tensor([s.image(source.image_size) for s in samples])
    return source.extractor()(images).features.permute(0, 2, 3, 1).contiguous()


def read_or_extract(source: FeatureSource, samples: Sequence[Sample]) -> torch.Tensor:
    """(B, h, w, D) features of one batch: the cache's valid entries where ``source``'s cache
    holds them (e.g. written by a Ray job: ``distributed_fit``), the backbone's for the rest,
    which are not written (the bounded-memory fit keeps its own store)."""
    cache = Path(source.cache_dir) if source.cache_dir else None
    if cache is not None:
        private_folder(cache)
    paths = [entry_path(cache, source.key(s)) for s in samples] if cache else []
    found = [load_cached(p) for p in paths]
    if not found or any(f is None for f in found):
        return source.extract(samples)  # one batch through the backbone, as without a cache
    return torch.stack(found)  # type: ignore[arg-type]


def verify_entries(source: FeatureSource, samples: Sequence[Sample], n: int, seed: int) -> int:
    """Re-extract ``n`` of the cache's entries for ``samples`` (a draw seeded by ``seed`` among
    those it holds) and refuse, in one line, an entry that differs from its image's features: a
    forged entry carries a consistent digest, so only the backbone can tell. Returns how many
    were checked."""
    import numpy as np

    cache = Path(source.cache_dir)  # type: ignore[arg-type]
    held = [(s, p) for s in samples if (p := entry_path(cache, source.key(s))).is_file()]
    if not held or n <= 0:
        return 0
    rng = np.random.default_rng(seed)
    picked = [held[i] for i in sorted(rng.choice(len(held), min(n, len(held)), replace=False))]
    for start in range(0, len(picked), source.batch_size):
        batch = picked[start : start + source.batch_size]
        fresh = source.extract([s for s, _ in batch])
        for (sample, path), features in zip(batch, fresh, strict=True):
            cached = load_cached(path)
            if cached is None:  # damaged: deleted, extracted again by the fit
                continue
            # a batch of another size may round differently: a forgery differs by far more
            if cached.shape != features.shape or not torch.allclose(
                cached, features, rtol=1e-3, atol=1e-3
            ):
                raise DataError(
                    f"{path}: cached features of {sample.image_path} differ from a "
                    "re-extraction: the cache was changed by something other than dualpatch; "
                    f"delete {cache} or fit with --no-cache"
                )
    return len(picked)


def tensor_digest(t: torch.Tensor, key: str = "") -> str:
    """SHA-256 of ``key`` (what the values claim to be: an entry's file name) and the values."""
    h = hashlib.sha256(key.encode())
    h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- the cache folder
_checked: set[Path] = set()  # folders whose permissions were checked in this process


def private_folder(folder: Path) -> None:
    """Make ``folder`` (and any parent it needs) owner-only, or warn once if it exists and others
    may write to it: they could replace entries with consistent forgeries."""
    import stat

    if folder in _checked:
        return
    _checked.add(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        for p in reversed(missing):
            with contextlib.suppress(FileExistsError):
                p.mkdir(mode=0o700)
    except OSError:
        return  # not creatable: save_cached warns about it
    try:
        mode = folder.stat().st_mode
    except OSError:
        return  # not creatable: save_cached warns about it
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        warnings.warn(
            f"{folder}: the feature cache is writable by other users (mode "
            f"{stat.S_IMODE(mode):o}): they could change cached features and so scores; "
            f"chmod 700 it, or use --verify-cache N or --no-cache (docs/cache.md)",
            stacklevel=3,
        )


def save_cached(path: Path, features: torch.Tensor) -> bool:
    """One cache entry, written atomically, with the SHA-256 of its values in the metadata;
    False (after one warning) if the cache cannot be written."""
    import safetensors
    from safetensors.torch import save_file

    features = features.detach().contiguous().clone()
    meta = {"sha256": tensor_digest(features, path.stem), "key": path.stem}
    try:
        private_folder(path.parent)
        with atomic_path(path) as tmp:
            save_file({"features": features}, str(tmp), metadata=meta)
    except (OSError, safetensors.SafetensorError) as exc:  # full or read-only disk: no cache
        reason = getattr(exc, "strerror", None) or _first_words(exc)
        warnings.warn(
            f"{path.parent}: feature cache not writable ({reason}); carrying on without it "
            "(--no-cache or DUALPATCH_CACHE= turns it off)",
            stacklevel=4,
        )
        return False
    return True


def _first_words(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def load_cached(path: Path) -> torch.Tensor | None:
    """A cache entry's (h, w, D) features, or None (and the entry deleted) if it is missing,
    truncated, unreadable, or its values and file name (its key) do not match their recorded
    SHA-256: never trusted. An older entry, whose digest did not cover its key, is recomputed."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            digest = (f.metadata() or {}).get("sha256")
            features = f.get_tensor("features")
        if (
            features.ndim == 3
            and features.dtype == torch.float32
            and digest == tensor_digest(features, path.stem)
        ):
            return features
    except Exception:  # any damage at all: recompute
        pass
    path.unlink(missing_ok=True)
    return None


# -------------------------------------------------------------------------- shared normal banks
def shared_bank_path(
    source: FeatureSource, normal: Sequence[Sample], settings: Sequence[Any]
) -> Path | None:
    """Where ``source``'s cache keeps the normal bank of these images and the bank ``settings``
    (``bank_settings``), so that the runs of an experiment that share a normal bank compute it
    once."""
    if not source.cache_dir:
        return None
    keys = [source.key(s) for s in normal]
    digest = hashlib.sha256(json.dumps([keys, list(settings)], default=str).encode()).hexdigest()
    return Path(source.cache_dir) / "banks" / f"{digest}.safetensors"


def bank_settings(
    coreset_ratio: float,
    coreset_min: int,
    projection_dim: int | None,
    seed: int,
    coreset_method: str,
    max_memory: Any,
    coreset_rows: int | None = None,
    bank_dtype: str = "float32",
) -> list[Any]:
    """What makes a normal bank besides its images' features: the coreset's settings, its row
    cap (``coreset_rows``) and how its rows are stored (``bank_dtype``)."""
    from dualpatch.bank import memory

    approx = memory.approx_settings() if coreset_method == "approx" else 0
    settings = [coreset_ratio, coreset_min, projection_dim, seed, coreset_method, approx,
                str(max_memory), BANK_VERSION]  # fmt: skip
    # settings added later join the key only when set, so older shared banks still match
    settings += ([["coreset_rows", coreset_rows]] if coreset_rows is not None else []) + (
        [["bank_dtype", bank_dtype]] if bank_dtype != "float32" else []
    )
    return settings


def save_shared_bank(path: Path, bank: torch.Tensor, grid: tuple[int, int]) -> None:
    import safetensors
    from safetensors.torch import save_file

    bank = bank.detach().contiguous()
    meta = {"sha256": tensor_digest(bank, path.stem + json.dumps(list(grid))),
            "grid": json.dumps(list(grid))}  # fmt: skip
    try:
        private_folder(path.parent)
        with atomic_path(path) as tmp:
            save_file({"bank": bank}, str(tmp), metadata=meta)
    except (OSError, safetensors.SafetensorError):
        pass  # an unwritable cache (the feature cache warns about it): the bank is not shared


def load_shared_bank(path: Path) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """A shared normal bank and its grid, or None (and the file deleted) if damaged in any way."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            bank = f.get_tensor("bank")
        grid = tuple(json.loads(meta["grid"]))
        digest = tensor_digest(bank, path.stem + json.dumps(list(grid)))
        if bank.ndim == 2 and meta.get("sha256") == digest and len(grid) == 2:
            return bank, grid  # type: ignore[return-value]
    except Exception:  # any damage at all: recompute
        pass
    path.unlink(missing_ok=True)
    return None


class CachedImageFeatures:
    """(N, h, w, D) features of images, read batch by batch through the feature cache."""

    def __init__(self, source: FeatureSource, samples: list[Sample]):
        self.source, self.samples = source, samples
        self.shape = (len(samples),)

    def __getitem__(self, rows: slice | list[int]) -> torch.Tensor:
        samples = self.samples[rows] if isinstance(rows, slice) else [self.samples[i] for i in rows]
        return self.source.features(samples, "normal features")


def close_features(feats: Any) -> None:
    """Release a feature view that holds files (a temporary spill store)."""
    if hasattr(feats, "close"):
        feats.close()
