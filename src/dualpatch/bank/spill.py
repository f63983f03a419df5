"""Bounded-memory fit: patch features spill to an on-disk store; the coreset runs on their
in-memory random projection (or a seeded pre-sample of it, past what the cap's share holds)."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dualpatch.bank.feature_store import FeatureStore
from dualpatch.bank.memory import (
    APPROX_OVERSAMPLE,
    MemoryBank,
    greedy_kcenter,
    narrowed_kcenter,
    presample,
    projection_for,
)
from dualpatch.errors import ConfigError, DataError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "t": 1000**4,
    "tb": 1000**4,
}


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: an int, or text like ``2GiB``, ``512MiB``, ``1.5GB``."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"max_memory {value!r} is not a size like 2GiB or 512MiB")
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise ConfigError(f"max_memory {value!r} must be more than zero")
    return size


def memory_size_ok(value: object) -> bool:
    try:
        parse_size(value)  # type: ignore[arg-type]
    except ConfigError:
        return False
    return True


# ------------------------------------------------------------------------------ the store


if TYPE_CHECKING:
    from dualpatch.bank.feature_cache import FeatureSource
    from dualpatch.data.base import Sample

log = logging.getLogger("dualpatch.bank.spill")

#: Share of ``max_memory`` for the coreset's projection and greedy's per-row state. A fixed
#: share of the cap, not "what the process has left": the pre-sample past the cap then depends on
#: the cap, the seed and the images only, never on the resident memory when the coreset starts.
#: The rest holds the process: Python, torch, the backbone and what extraction left resident
#: (about 0.95 GiB measured after extracting 5k images at 320x128), greedy's update blocks and
#: the bank read back. At 0.5 that fit peaked at 2,008 MiB under a 2 GiB cap: too close.
#: Changing it changes past-the-cap banks: bump feature_cache.BANK_VERSION with it.
PROJECTION_SHARE = 0.4


def rss_bytes() -> int:
    """This process's resident memory now (Linux), or 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def _spill_errors(store: FeatureStore, need: int) -> Iterator[None]:
    """A full disk: the store is removed whole (nothing half-written stays, the space is
    freed) and one line names the file and the space it needs."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        shutil.rmtree(store.folder, ignore_errors=True)
        parent = store.folder.parent.name
        where = (
            "--cache-dir"
            if parent == "spill"
            else "--out"
            if parent.endswith(".spill")
            else "TMPDIR"
        )
        raise DataError(
            f"{store.path}: no space left on device while spilling features ({size_text(need)} "
            f"needed); free space or point {where} at a larger disk"
        ) from exc


def size_text(n: int) -> str:
    """Bytes as the largest binary unit that keeps a digit before the point (never 0.00 GiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"


#: where a fit without a feature cache spills (``scratch_folder``); None: the temporary folder
_SCRATCH: contextvars.ContextVar[Path | None] = contextvars.ContextVar("scratch", default=None)


@contextlib.contextmanager
def scratch_folder(out: str | os.PathLike[str]) -> Iterator[None]:
    """Spill stores of fits without a cache go to ``.OUT.spill/`` beside ``out`` in the block:
    a known place, so that the next fit into ``out`` resumes a killed fit's store or removes it
    (the caller holds ``out``'s lock: no other fit uses that folder meanwhile)."""
    out = Path(os.path.abspath(out))
    folder = out.with_name(f".{out.name}.spill")
    token = _SCRATCH.set(folder)
    try:
        yield
    finally:
        _SCRATCH.reset(token)
        with contextlib.suppress(OSError):
            folder.rmdir()  # empty once the fit removed its store


def _scratch_stores(key: str) -> Path:
    """The folder of a temporary store: under ``scratch_folder``'s folder, whose stale stores (a
    killed fit's, of other images or settings) are removed; else under this user's folder in the
    system's temporary folder, named by ``key`` so that a rerun resumes it."""
    base = _SCRATCH.get()
    if base is None:
        return Path(tempfile.gettempdir()) / f"dualpatch-spill-{os.getuid()}" / key[:32]
    for stale in base.iterdir() if base.is_dir() else ():
        if stale.name != key[:32]:
            log.warning("removing %s, the spill store of an earlier fit that did not finish", stale)
            shutil.rmtree(stale, ignore_errors=True)
    return base / key[:32]


def open_store(source: FeatureSource, samples: Sequence[Sample]) -> tuple[FeatureStore, bool]:
    """The store for these images: under ``cache_dir/spill/`` (kept for resume and reuse), or in
    a known scratch folder (``True``: remove it when done; a killed fit's is resumed)."""
    keys = [source.key(s) for s in samples]
    key = hashlib.sha256(json.dumps(keys).encode()).hexdigest()
    if not source.cache_dir:
        folder = _scratch_stores(key)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return FeatureStore(folder, key, len(samples)), True
    return FeatureStore(Path(source.cache_dir) / "spill" / key[:32], key, len(samples)), False


def fill_store(
    source: FeatureSource, samples: Sequence[Sample], store: FeatureStore, bar: Callable
) -> None:
    """Extract the images the store does not hold yet, batch by batch, appending each; a batch
    whose features the cache holds (written by a Ray job: ``distributed_fit``) is read instead."""
    from dualpatch.bank.feature_cache import read_or_extract

    bar(store.done)
    while store.done < len(samples):
        batch = samples[store.done : store.done + source.batch_size]
        feats = read_or_extract(source, batch)
        if not torch.isfinite(feats).all():
            raise DataError(f"{batch[0].image_path}: features contain NaN or infinite values")
        if store.grid is None:
            grid, dim = tuple(feats.shape[1:3]), int(feats.shape[3])
            with _spill_errors(store, store._nbytes(grid, dim)):
                store.create(grid, dim)
        with _spill_errors(store, store._nbytes(store.grid, store.dim)):
            store.append(feats.numpy())
        bar(len(batch))


def row_bytes(width: int) -> int:
    """Bytes a row costs the k-center: its ``width``-d float32 projection, squared norm, distance
    to the picks, a pass's new distance, and (approx) its row number."""
    return 4 * (width + 3) + 8


def projection_rows(cap: int, width: int) -> int:
    """Rows of a ``width``-d projection (with greedy's per-row state) that ``cap`` bytes hold:
    ``PROJECTION_SHARE`` of the cap, whatever the process holds now, so that the same cap, seed
    and images always give the same pre-sample and the same bank."""
    return int(cap * PROJECTION_SHARE) // row_bytes(width)


def coreset_rows(model: Any, n: int, k: int, width: int) -> torch.Tensor | None:
    """The rows a capped fit's k-center runs on: all (None), or past the cap a seeded pre-sample
    of as many rows as the cap's projection share holds."""
    cap = parse_size(model.max_memory)  # type: ignore[arg-type]
    fits = projection_rows(cap, width)
    if fits < min(n, APPROX_OVERSAMPLE * k):
        raise DataError(
            f"max_memory {model.max_memory}: too small to select {k} of {n} patches "
            f"(its projection share holds {fits} rows)"
        )
    if n > fits:
        log.warning("projection of %d patches exceeds max_memory: k-center on %d", n, fits)
    held = rss_bytes()
    if held + min(n, fits) * row_bytes(width) > cap:  # a warning only: see PROJECTION_SHARE
        log.warning("the process holds %.0f MiB: max_memory may be exceeded", held / 2**20)
    return presample(n, fits, model.seed) if fits < n else None


def spilled_bank(
    model: Any, source: FeatureSource, bank: MemoryBank, samples: Sequence[Sample]
) -> tuple[tuple[int, int], MemoryBank, dict, StoredImageFeatures]:
    """``bank`` (an unfitted ``MemoryBank``) fitted on the features ``source`` gives for
    ``samples`` under the ``max_memory`` of ``model`` (a ``PatchCore``, whose coreset parameters
    are read): (grid, bank, report, the images' features read from the store on demand).

    Features stream to a ``FeatureStore``; the coreset runs on their in-memory projection, or on
    a seeded pre-sample of it when the projection would not fit the cap's projection share.
    """
    store, temporary = open_store(source, samples)
    resumed = store.done
    progress = source.stage
    try:
        fill_store(source, samples, store, progress("normal features", len(samples)))
        store.verify()  # a damaged chunk (resumed or reused) is refused, not fitted on
        n, k = store.n_rows, bank.target_size(store.n_rows)
        matrix = projection_for(store.dim, model.projection_dim, model.seed)
        rows = coreset_rows(model, n, k, matrix.shape[1] if matrix is not None else store.dim)
        x = store.project(rows, matrix)
        picks = k - 1 if k < n else 0
        step = progress("normal coreset", picks)
        if model.coreset_method == "approx":  # narrows x in place: no second copy under the cap
            local = narrowed_kcenter(x, k, model.seed, step, overwrite=True)
        else:
            local = greedy_kcenter(x, k, model.seed, step)
        if picks == 0:
            step(0)
        del x
        chosen = local if rows is None else rows[local]
        bank.bank_ = store.rows(chosen.numpy()).contiguous()
        report = {
            "store": str(store.path),
            "store_bytes": store.path.stat().st_size,
            "rows": n,
            "coreset_rows": n if rows is None else len(rows),
            "resumed_images": resumed,
        }
        return store.grid, bank, report, StoredImageFeatures(store, temporary)  # type: ignore[return-value]
    except BaseException:
        if temporary:
            remove_store(store)
        raise


class StoredImageFeatures:
    """(N, h, w, D) features of a store's images, read batch by batch (for the map scale);
    ``close`` removes a temporary store."""

    def __init__(self, store: FeatureStore, temporary: bool):
        self.store, self.temporary = store, temporary
        self.shape = (store.n_images,)

    def __getitem__(self, images: slice | list[int]) -> torch.Tensor:
        if not isinstance(images, slice):  # chosen images, one contiguous read each
            return torch.cat([self[i : i + 1] for i in images])
        start, stop, _ = images.indices(self.store.n_images)
        per = self.store.rows_per_image
        rows = self.store.rows(slice(start * per, stop * per))
        return rows.reshape(stop - start, *self.store.grid, self.store.dim)  # type: ignore[misc]

    def close(self) -> None:
        if self.temporary:
            remove_store(self.store)


def remove_store(store: FeatureStore) -> None:
    """Remove a temporary store, and its scratch folder once empty."""
    shutil.rmtree(store.folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        store.folder.parent.rmdir()  # only when empty: another fit's store stays
