"""Safe archive extraction: archives come from the network, so extraction trusts nothing in them.

Absolute paths, ``..`` components, links, special files and oversized or over-compressed members
are refused before a single byte is written, and the result appears atomically (``safe_extract``).
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dualpatch.errors import DataError
from dualpatch.events import track
from dualpatch.fileio import atomic_dir

CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Caps on what an archive may unpack to (defaults fit KSDD2's ~1 GB with a wide margin)."""

    max_total: int = 16 << 30  # bytes, all members together
    max_member: int = 2 << 30  # bytes, one member
    max_ratio: float = 100.0  # uncompressed / compressed size: zip bombs reach thousands
    ratio_min_size: int = 1 << 20  # tiny members compress oddly; judge the ratio above this only


def check_archive(archive: str | os.PathLike[str]) -> Path:
    """``archive`` as a Path if it is a regular file, else a DataError saying what it is."""
    archive = Path(archive)
    if archive.is_dir():
        raise DataError(f"{archive}: is a folder, not a zip or tar archive")
    if archive.exists() and not archive.is_file():
        raise DataError(f"{archive}: is not a regular file (a device or a pipe?); give a zip")
    if not archive.exists():
        raise DataError(f"{archive}: archive not found")
    return archive


@dataclass
class _Member:
    parts: tuple[str, ...]  # safe relative path components
    is_dir: bool
    size: int
    open: Callable[[], IO[bytes]]


def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    """Relative path components of member ``name``, or DataError if it could land outside."""
    norm = name.replace("\\", "/")  # zips made on Windows may use backslashes
    if norm.startswith("/") or re.match(r"[A-Za-z]:", norm):
        raise DataError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise DataError(f"{archive}: member {name!r} points outside the folder (..); refusing")
    if "\0" in norm:
        raise DataError(f"{archive}: member {name!r} has a NUL in its name; refusing")
    return parts


def _check_size(archive: Path, name: str, size: int, packed: int | None, total: int, lim: Limits):
    if size > lim.max_member:
        raise DataError(
            f"{archive}: member {name!r} unpacks to {size:,} bytes, over the {lim.max_member:,} "
            "limit; refusing"
        )
    if total > lim.max_total:
        raise DataError(
            f"{archive}: members up to {name!r} unpack to {total:,} bytes, over the "
            f"{lim.max_total:,} limit; refusing"
        )
    if packed is not None and size > lim.ratio_min_size and size > lim.max_ratio * max(packed, 1):
        raise DataError(
            f"{archive}: member {name!r} expands {size / max(packed, 1):,.0f}x "
            f"(limit {lim.max_ratio:g}x), a likely zip bomb; refusing"
        )


def _zip_members(archive: Path, zf: zipfile.ZipFile, lim: Limits) -> Iterator[_Member]:
    total = 0
    for info in zf.infolist():
        parts = _safe_parts(archive, info.filename)
        mode = info.external_attr >> 16  # unix mode, when the zip was made on unix
        if stat.S_ISLNK(mode):
            raise DataError(f"{archive}: member {info.filename!r} is a symbolic link; refusing")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise DataError(f"{archive}: member {info.filename!r} is a special file; refusing")
        if info.flag_bits & 0x1:
            raise DataError(f"{archive}: member {info.filename!r} is encrypted; cannot extract")
        total += info.file_size
        _check_size(archive, info.filename, info.file_size, info.compress_size, total, lim)
        yield _Member(parts, info.is_dir(), info.file_size, lambda i=info: zf.open(i))


def _data_filter(archive: Path, info: tarfile.TarInfo, folder: Path) -> None:
    """tarfile's own ``data`` filter (PEP 706) on a member: absolute or escaping paths and links
    and special files are refused. Our checks below stay on top of it (all links are refused,
    sizes are capped), as they are the only ones for zip archives."""
    try:
        tarfile.data_filter(info, str(folder))
    except tarfile.FilterError as exc:  # a TarError: must not read as "damaged archive"
        raise DataError(
            f"{archive}: member {info.name!r} refused by tarfile's data filter ({exc})"
        ) from None


def _tar_members(
    archive: Path, tf: tarfile.TarFile, folder: Path, lim: Limits
) -> Iterator[_Member]:
    total, packed = 0, archive.stat().st_size
    for info in tf.getmembers():
        _data_filter(archive, info, folder)
        parts = _safe_parts(archive, info.name)
        if info.issym() or info.islnk():
            raise DataError(f"{archive}: member {info.name!r} is a link; refusing to extract")
        if not (info.isfile() or info.isdir()):
            raise DataError(f"{archive}: member {info.name!r} is a special file; refusing")
        total += info.size
        # tar compresses the whole stream, so the ratio is judged on the running total
        _check_size(archive, info.name, info.size, None, total, lim)
        if total > lim.ratio_min_size and total > lim.max_ratio * packed:
            raise DataError(
                f"{archive}: members up to {info.name!r} expand {total / packed:,.0f}x "
                f"(limit {lim.max_ratio:g}x), a likely bomb; refusing"
            )
        yield _Member(parts, info.isdir(), info.size, lambda i=info: tf.extractfile(i))


def extract_into(
    archive: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    limits: Limits = Limits(),
    progress: bool = True,
) -> None:
    """Unpack a zip or tar ``archive`` into the existing empty ``folder``, refusing unsafe members.

    Every member is checked before anything is written. Modes, owners and times are not restored.
    ``__MACOSX/`` resource forks are skipped.
    """
    archive, folder = check_archive(archive), Path(folder)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _write_members(archive, folder, list(_zip_members(archive, zf, limits)), progress)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = list(_tar_members(archive, tf, folder, limits))
                _write_members(archive, folder, members, progress)
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(f"{archive}: damaged archive ({str(exc).splitlines()[0]})") from None


def _write_members(archive: Path, folder: Path, members: list[_Member], progress: bool) -> None:
    base = folder.resolve()
    members = [m for m in members if m.parts and m.parts[0] != "__MACOSX"]
    for m in track(members, f"extracting {archive.name}", progress=progress):
        target = base.joinpath(*m.parts)
        name = "/".join(m.parts)
        # Belt and braces: the names were checked, but never write where the base does not reach.
        if not target.resolve().is_relative_to(base):
            raise DataError(f"{archive}: member {name!r} resolves outside {folder}; refusing")
        try:
            if m.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with m.open() as src, target.open("wb") as dst:
                written = 0
                while block := src.read(CHUNK):
                    written += len(block)
                    if written > m.size:  # the header lied about the size
                        raise DataError(f"{archive}: member {name!r} is larger than it declares")
                    dst.write(block)
        except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            raise DataError(f"{archive}: cannot extract member {name!r} ({exc})") from None


# extract_into's parameters, repeated: safe_extract is extract_into into a folder swapped in whole
def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    limits: Limits = Limits(),
    progress: bool = True,
) -> Path:
    """Unpack ``archive`` into a temporary folder beside ``dest`` and rename it to ``dest``.

    On any error nothing is left: neither ``dest`` nor the temporary folder.
    """
    with atomic_dir(dest) as tmp:
        extract_into(archive, tmp, limits, progress)
    return Path(dest)
