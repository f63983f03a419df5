"""Fetching datasets: resumable streaming download and safe archive extraction.

Archives come from the network, so extraction trusts nothing in them: absolute paths, ``..``
components, links, special files and oversized or over-compressed members are refused before a
single byte is written, and the result appears atomically.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..fileio import atomic_dir, sha256_file
from .ksdd2 import SPLITS, find_root, layout_warnings

KSDD2_URL = "http://go.vicos.si/kolektorsdd2"
CHUNK = 1 << 20
OFFLINE_HINT = "fetch the zip by hand (e.g. in a browser) and pass it with --archive PATH"


@dataclass(frozen=True)
class Limits:
    """Caps on what an archive may unpack to (defaults fit KSDD2's ~1 GB with a wide margin)."""

    max_total: int = 16 << 30  # bytes, all members together
    max_member: int = 2 << 30  # bytes, one member
    max_ratio: float = 100.0  # uncompressed / compressed size: zip bombs reach thousands
    ratio_min_size: int = 1 << 20  # tiny members compress oddly; judge the ratio above this only


# ----------------------------------------------------------------------------- download


def check_sha256(value: str | None) -> str | None:
    """Normalise a user-given SHA-256 (64 hex digits) or fail with a one-line ConfigError."""
    if value is None:
        return None
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigError(f"--sha256 {value!r}: expected 64 hexadecimal digits")
    return value


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Stream ``url`` to ``dest``, resuming ``dest.part`` with an HTTP Range request.

    ``dest`` appears only once the whole body is in and matches ``sha256`` (when given); a bad
    download is deleted. An existing ``dest`` is taken as complete (it is only ever renamed into
    place whole) and just checked. Network failures are one-line ``DataError`` messages.
    """
    dest = Path(dest)
    sha256 = check_sha256(sha256)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        _fetch(url, part, connect_timeout, read_timeout, progress)
        if sha256 and (got := sha256_file(part)) != sha256:
            part.unlink()
            raise DataError(
                f"{url}: download has sha256 {got}, expected {sha256}; deleted it "
                "(check --sha256, or the server sent something else)"
            )
        os.replace(part, dest)
    elif sha256 and (got := sha256_file(dest)) != sha256:
        raise DataError(f"{dest}: sha256 is {got}, expected {sha256}; delete it to download again")
    return dest


def _fetch(url: str, part: Path, connect_timeout: float, read_timeout: float, progress: bool):
    """Append the rest of ``url`` to ``part``; restart from zero if the server ignores Range."""
    for attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "dualpatch", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            # urlopen's timeout covers connecting and waiting for the headers: a short one makes
            # an offline machine fail in seconds instead of hanging.
            resp = urlopen(Request(url, headers=headers), timeout=connect_timeout)
        except HTTPError as exc:
            if exc.code == 416 and offset:
                if exc.headers.get("Content-Range") == f"bytes */{offset}":
                    return  # the .part is already whole: only the rename was missed
                if attempt == 0:  # a stale .part larger than the file: start over
                    part.unlink()
                    continue
            msg = f"cannot download {url}: HTTP {exc.code} {exc.reason}; {OFFLINE_HINT}"
            raise DataError(msg) from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataError(f"cannot reach {url} ({reason}); {OFFLINE_HINT}") from None
        with resp:
            start, total = _body_range(resp, offset)
            if start != offset:
                if attempt == 0:  # the server sent something else than asked: start over
                    part.unlink(missing_ok=True)
                    continue
                raise DataError(f"{url}: server does not honour byte ranges; delete {part}")
            _set_read_timeout(resp, read_timeout)
            _stream(resp, part, start, total, url, progress)
        return


def _body_range(resp, offset: int) -> tuple[int, int | None]:
    """(first byte of the body, total size or None) from the response status and headers."""
    if resp.status == 206:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m:
            return -1, None
        return int(m.group(1)), (int(m.group(2)) if m.group(2) != "*" else None)
    length = resp.headers.get("Content-Length")
    return 0, (int(length) if length and length.isdigit() else None)


def _set_read_timeout(resp, seconds: float) -> None:
    # Once connected, a slow server deserves more patience than the connect timeout allows.
    try:
        resp.fp.raw._sock.settimeout(seconds)
    except AttributeError:  # not a plain socket (e.g. a test double): keep the connect timeout
        pass


def _stream(resp, part: Path, start: int, total: int | None, url: str, progress: bool) -> None:
    done = start
    bar = tqdm(
        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.name.removesuffix(".part"), disable=None if progress else True,
    )  # fmt: skip
    try:
        with part.open("ab" if start else "wb") as f, bar:
            while block := resp.read(CHUNK):
                f.write(block)
                done += len(block)
                bar.update(len(block))
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(
            f"download of {url} interrupted at {done:,} of {_n(total)} bytes "
            f"({type(exc).__name__}); run the same command again to resume from {part}"
        ) from None
    if total is not None and done != total:
        raise DataError(
            f"download of {url} interrupted at {done:,} of {total:,} bytes; "
            f"run the same command again to resume from {part}"
        )


def _n(total: int | None) -> str:
    return "?" if total is None else f"{total:,}"


# ----------------------------------------------------------------------------- extraction


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


def _tar_members(archive: Path, tf: tarfile.TarFile, lim: Limits) -> Iterator[_Member]:
    total, packed = 0, archive.stat().st_size
    for info in tf.getmembers():
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
    archive, folder = Path(archive), Path(folder)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _write_members(archive, folder, list(_zip_members(archive, zf, limits)), progress)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _write_members(archive, folder, list(_tar_members(archive, tf, limits)), progress)
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(f"{archive}: damaged archive ({str(exc).splitlines()[0]})") from None


def _write_members(archive: Path, folder: Path, members: list[_Member], progress: bool) -> None:
    base = folder.resolve()
    members = [m for m in members if m.parts and m.parts[0] != "__MACOSX"]
    bar = tqdm(members, desc=f"extracting {archive.name}", unit="file",
               disable=None if progress else True)  # fmt: skip
    for m in bar:
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


# ----------------------------------------------------------------------------- KSDD2


def download_ksdd2(
    out: str | os.PathLike[str],
    archive: str | os.PathLike[str] | None = None,
    url: str = KSDD2_URL,
    sha256: str | None = None,
    force: bool = False,
    connect_timeout: float = 5.0,
    limits: Limits = Limits(),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Download (or take ``archive``), check and unpack KSDD2 so that ``out`` holds train/ + test/.

    The download is kept beside ``out`` as ``<out>.zip`` so that a rerun needs no network. The
    structure is compared with the official file sets; deviations are warnings with numbers.
    """
    out = Path(out)
    sha256 = check_sha256(sha256)
    if all((out / s).is_dir() for s in SPLITS) and not force:
        log(f"{out} already holds train/ and test/; nothing to do (--force to unpack again)")
        return out
    if archive is None:
        archive = out.with_name(out.name + ".zip")
        log(f"downloading {url} to {archive}")
        download(url, archive, sha256, connect_timeout, progress=progress)
        if not (zipfile.is_zipfile(archive) or tarfile.is_tarfile(archive)):
            archive.unlink()  # so that a rerun fetches again instead of trusting it
            raise DataError(
                f"{url} did not send a zip or tar archive (a web page?); deleted it; {OFFLINE_HINT}"
            )
    else:
        archive = Path(archive)
        if not archive.is_file():
            raise DataError(f"{archive}: archive not found")
        if sha256 and (got := sha256_file(archive)) != sha256:
            raise DataError(f"{archive}: sha256 is {got}, expected {sha256}; not extracting it")
    if sha256:
        log(f"{archive}: sha256 ok")
    with atomic_dir(out) as tmp:
        extract_into(archive, tmp, limits, progress)
        _hoist(tmp, find_root(tmp))
    for msg in layout_warnings(out):
        warnings.warn(msg, stacklevel=2)
    log(f"KSDD2 unpacked into {out}")
    return out


def _hoist(folder: Path, root: Path) -> None:
    """Move the contents of ``root`` (a single top folder of the zip) up into ``folder``."""
    if root == folder:
        return
    # Rename first, so that a top folder called e.g. "train" cannot collide with its own child.
    staged = root.rename(folder / f".hoist-{os.getpid()}")
    for child in staged.iterdir():
        target = folder / child.name
        if target.is_dir() and not target.is_symlink():  # a same-named stray beside the top folder
            shutil.rmtree(target)
        os.replace(child, target)
    staged.rmdir()
