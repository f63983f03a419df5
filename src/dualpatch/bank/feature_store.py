"""The on-disk feature store of a bounded-memory fit (``spill.py``): (n_images, h, w, D) patch
features in one raw file, written with plain ``pwrite`` (a full disk is an OSError, not the
SIGBUS a memory map would raise) and read back in bounded buffers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from dualpatch.bank.memory import PROJECT_CHUNK, project
from dualpatch.errors import DataError
from dualpatch.fileio import write_json

DTYPES = {"float32": np.float32, "float16": np.float16}


def write_rows(fd: int, data: bytes, offset: int) -> None:
    """Write ``data`` at ``offset``: plain writes, so a full disk is an OSError, not a SIGBUS."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def read_exactly(fd: int, buffer: memoryview, offset: int, path: Path) -> None:
    """Fill ``buffer`` from ``offset``; a file shorter than the store says is a DataError."""
    while buffer:
        got = os.preadv(fd, [buffer], offset)
        if got == 0:
            raise DataError(f"{path}: shorter than its meta.json says; delete the store folder")
        buffer, offset = buffer[got:], offset + got


class FeatureStore:
    """(n_images, h, w, D) patch features in one raw file on disk, filled in image order.

    ``meta.json`` records the shape, dtype and how many images are complete (updated after each
    batch's rows are written), so a killed fit resumes where it stopped. Rows are read back with
    ``pread`` into buffers of the size asked, so resident memory stays bounded however large the
    file.
    """

    def __init__(self, folder: Path, key: str, n_images: int, dtype: str = "float32"):
        self.folder, self.key, self.n_images, self.dtype = Path(folder), key, n_images, dtype
        self.path, self.meta_path = self.folder / "features.bin", self.folder / "meta.json"
        self.grid: tuple[int, int] | None = None
        self.dim = 0
        self.done = 0
        #: (first image, images, SHA-256 of their bytes) of each appended batch
        self.chunks: list[tuple[int, int, str]] = []
        meta = self._read_meta()
        if meta is not None:
            self.grid, self.dim, self.done = tuple(meta["grid"]), meta["dim"], meta["done"]
            self.chunks = [(int(a), int(n), str(h)) for a, n, h in meta["chunks"]]

    def _read_meta(self) -> dict | None:
        try:
            meta = json.loads(self.meta_path.read_text())
            ok = (
                meta.get("key") == self.key
                and meta.get("n_images") == self.n_images
                and meta.get("dtype") == self.dtype
                and self.path.is_file()
                and self.path.stat().st_size == self._nbytes(meta["grid"], meta["dim"])
                # a store of an older version (no checksums) is extracted again
                and sum(int(c[1]) for c in meta["chunks"]) == meta["done"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        return meta if ok else None

    def _nbytes(self, grid, dim) -> int:
        return self.n_images * grid[0] * grid[1] * dim * np.dtype(DTYPES[self.dtype]).itemsize

    @property
    def rows_per_image(self) -> int:
        assert self.grid is not None
        return self.grid[0] * self.grid[1]

    @property
    def n_rows(self) -> int:
        return self.n_images * self.rows_per_image

    def create(self, grid: tuple[int, int], dim: int) -> None:
        """Allocate the whole file up front: a disk too small fails now, before any extraction."""
        self.grid, self.dim, self.done, self.chunks = tuple(grid), dim, 0, []
        self.folder.mkdir(parents=True, exist_ok=True)
        self.meta_path.unlink(missing_ok=True)
        need = self._nbytes(grid, dim)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, need)
        finally:
            os.close(fd)
        self._write_meta()

    def _write_meta(self) -> None:
        write_json(
            self.meta_path,
            {
                "key": self.key,
                "n_images": self.n_images,
                "dtype": self.dtype,
                "grid": list(self.grid or ()),
                "dim": self.dim,
                "done": self.done,
                "chunks": [list(c) for c in self.chunks],
            },
        )

    def append(self, features: np.ndarray) -> None:
        """Write the next images' (b, h, w, D) features and mark them complete."""
        data = np.ascontiguousarray(features, dtype=DTYPES[self.dtype])
        offset = self.done * self.rows_per_image * self.dim * data.itemsize
        raw = data.tobytes()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            write_rows(fd, raw, offset)
        finally:
            os.close(fd)
        self.chunks.append((self.done, features.shape[0], hashlib.sha256(raw).hexdigest()))
        self.done += features.shape[0]
        self._write_meta()

    def verify(self) -> None:
        """Read every chunk back and compare it with the checksum recorded when it was written;
        a damaged one is refused in one line (bits changed on disk would change the bank)."""
        image_bytes = self.rows_per_image * self.dim * np.dtype(DTYPES[self.dtype]).itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, (first, n, digest) in enumerate(self.chunks):
                buffer = bytearray(n * image_bytes)
                read_exactly(fd, memoryview(buffer), first * image_bytes, self.path)
                if hashlib.sha256(buffer).hexdigest() != digest:
                    raise DataError(
                        f"{self.path}: chunk {i + 1} of {len(self.chunks)} (images {first + 1} "
                        f"to {first + n}) does not match its checksum: the store was changed on "
                        f"disk; delete {self.folder} and fit again"
                    )
        finally:
            os.close(fd)

    def rows(self, index: np.ndarray | slice) -> torch.Tensor:
        """float32 rows (by index array, in its order, or a slice of step 1), read with ``pread``
        into a fresh buffer. Not through a memmap: the kernel maps pages around each touched one
        (fault-around), so scattered rows would bring whole spans of the file into resident
        memory."""
        dtype = np.dtype(DTYPES[self.dtype])
        row_bytes = self.dim * dtype.itemsize
        if isinstance(index, slice):
            start, stop, step = index.indices(self.n_rows)
            assert step == 1, "rows() reads slices of step 1"
            runs = [(start, max(0, stop - start))]
        else:
            runs = [(int(i), 1) for i in np.asarray(index).tolist()]
        out = np.empty((sum(n for _, n in runs), self.dim), dtype)
        view = memoryview(out).cast("B")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            at = 0
            for first, n in runs:
                read_exactly(fd, view[at : at + n * row_bytes], first * row_bytes, self.path)
                at += n * row_bytes
        finally:
            os.close(fd)
        return torch.from_numpy(out.astype(np.float32, copy=False))

    def project(self, rows: torch.Tensor | None, matrix: torch.Tensor | None) -> torch.Tensor:
        """Projection of all rows (``rows=None``) or of the given ascending rows, in the same
        chunks of ``PROJECT_CHUNK`` rows as ``memory.project`` uses on in-memory features."""
        n = self.n_rows if rows is None else len(rows)
        out = torch.empty(n, matrix.shape[1] if matrix is not None else self.dim)
        for start in range(0, n, PROJECT_CHUNK):
            stop = min(n, start + PROJECT_CHUNK)
            chunk = self.rows(slice(start, stop) if rows is None else rows[start:stop].numpy())
            out[start:stop] = project(chunk, matrix)
        return out
