"""Atomic writes: every output appears complete or not at all."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    if path.is_dir():
        raise OSError(errno.EISDIR, "is a folder; give a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path, path.parent):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(path, tmp_path):
            yield tmp_path
            # mkstemp makes owner-only files; outputs get the usual umask-based mode instead.
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def _naming(path: Path, hidden: Path) -> Iterator[None]:
    """An OSError about the hidden temporary file (or its folder) names ``path``, the file the
    user asked for: a temporary name means nothing to them."""
    try:
        yield
    except OSError as exc:
        if exc.filename and str(exc.filename).startswith(str(hidden)):
            exc.filename = str(path)
        if exc.filename2 and str(exc.filename2).startswith(str(hidden)):
            exc.filename2 = str(path)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Strict JSON: NaN and infinities (which JSON does not have) are written as null."""
    text = json.dumps(finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text(path, text + "\n")


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return finite(obj.item())
    return obj


def write_image(path: str | os.PathLike[str], image: Any) -> None:
    """Write a uint8 array (HxW or HxWx3 RGB) as an image, atomically; format from the suffix."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=_pil_format(path.suffix))


def _pil_format(suffix: str) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        suffix.lower(), "PNG"
    )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------------- output folders
#: a small file in every output folder dualpatch writes, naming the command that wrote it, so that
#: a rerun may replace its own output and nothing else
MARKER = ".dualpatch-output.json"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or path.is_relative_to(folder)


def _written_by(out: Path) -> tuple[str | None, set[str] | None]:
    """The command that wrote ``out`` and the entries it wrote (None: not recorded)."""
    try:
        meta = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(meta, dict):
        return None, None
    entries = meta.get("entries")
    listed = {str(e) for e in entries} if isinstance(entries, list) else None
    return meta.get("command"), listed


def check_output_dir(
    out: str | os.PathLike[str],
    command: str,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    keep: Iterable[str] = (),
    legacy: Iterable[str] = (),
) -> list[str]:
    """Refuse ``out`` unless it is new, empty, or an earlier output of ``command`` that holds
    only what ``command`` wrote there (``--force`` overrides the last rule only); return the
    entries that replacing ``out`` would delete although ``command`` did not write them.

    ``inputs``: the user's input files and folders; none may lie inside ``out``, which gets
    replaced, whatever ``force`` says. ``keep``: entry names that this command itself keeps in
    ``out`` between runs (a resumable model) and carries over. ``legacy``: entry names that, all
    present, mark an output written before folders carried a marker.
    """
    from dualpatch.errors import DataError

    out = Path(out)
    for item in inputs:
        if item is not None and _inside(Path(item), out):
            raise DataError(
                f"{item}: this input lies inside --out {out}, which '{command}' replaces; "
                "choose another --out"
            )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if not out.is_dir():
        return []
    foreign, owner = _foreign_entries(out, command, set(keep), set(legacy))
    if not foreign or force:
        return foreign
    shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    n = f"{len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'}"
    if owner == command:  # its own earlier output, with the user's files added since
        what = f"that 'dualpatch {command}' did not write"
    else:
        what = f"written by 'dualpatch {owner}'" if owner else "not written by dualpatch"
    raise DataError(
        f"{out}: holds {n} {what} ({shown}); move them out or choose another --out "
        "(--force replaces the folder and deletes them)"
    )


def _foreign_entries(
    out: Path, command: str, keep: set[str], legacy: set[str]
) -> tuple[list[str], str | None]:
    """The entries of ``out`` that ``command`` did not write (and does not keep), and the
    command that wrote ``out``."""
    entries = sorted(p.name for p in out.iterdir())
    owner, listed = _written_by(out)
    ours = keep | {MARKER}
    if owner == command:
        # an output marked before markers listed their entries: all of it counts as ours
        ours |= listed if listed is not None else set(entries)
    elif owner is None and legacy and legacy <= set(entries):
        ours |= set(entries)
    return [e for e in entries if e not in ours], owner


def mark_output(folder: str | os.PathLike[str], command: str, listed: bool = False) -> None:
    """Record that ``command`` wrote ``folder`` (see ``check_output_dir``); ``listed``: and
    that it wrote exactly the entries ``folder`` holds now (a folder written whole), so that a
    rerun can tell the user's later additions from its own."""
    from dualpatch import __version__

    meta: dict[str, Any] = {"command": command, "dualpatch": __version__}
    if listed:
        meta["entries"] = sorted(p.name for p in Path(folder).iterdir() if p.name != MARKER)
    write_json(Path(folder) / MARKER, meta)


# ------------------------------------------------------------------------------- output locks
_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth): re-entrant in one process


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file of an output: beside it, since the output itself is swapped whole."""
    out = Path(os.path.abspath(out))
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def output_lock(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``out``'s lock for the block; another process holding it is refused in one line
    (two commands writing one --out would otherwise both succeed and one be lost).

    Re-entrant within one process. The lock file is removed on release; a process that locked
    a file removed meanwhile locks again (the inode check).
    """
    path = lock_path(out)
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
    else:
        _held[path] = (_acquire(path, Path(out)), 1)
    try:
        yield
    finally:
        fd, depth = _held[path]
        if depth > 1:
            _held[path] = (fd, depth - 1)
        else:
            del _held[path]
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)


def _acquire(path: Path, out: Path) -> int:
    from dualpatch.errors import DataError

    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # the user's --out, not the lock file, is what cannot be written
            raise DataError(f"{out}: cannot write there ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataError(
                f"{out}: another dualpatch command is writing it now (lock {path}); "
                "wait for it to finish, or choose another --out"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # its holder removed it while we waited for it: lock the new one


# check_output_dir's parameters, repeated on purpose: output_dir checks ``out`` with them first
@contextlib.contextmanager
def output_dir(
    out: str | os.PathLike[str],
    command: str,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    keep: Iterable[str] = (),
    legacy: Iterable[str] = (),
) -> Iterator[Path]:
    """Write a whole output folder: yield a new temporary folder beside ``out``, then swap it in.

    ``out`` is checked first (``check_output_dir``) and locked (``output_lock``) until the swap.
    The old content stays in place, untouched, until the new folder is complete: an error or
    Ctrl-C inside the block leaves it as it was and removes the temporary folder. Entries named
    in ``keep`` move from the old folder into the new one unless the block wrote its own. With
    ``force``, entries the command did not write are deleted with one warning that names them.
    """
    out = Path(out)
    keep = tuple(keep)
    with output_lock(out):
        check_output_dir(out, command, force, inputs, keep, legacy)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            yield tmp
            mark_output(tmp, command, listed=True)
            os.chmod(tmp, 0o777 & ~_umask())
            # checked again: the user may have added files while the command ran
            foreign = check_output_dir(out, command, force, (), keep, legacy)
            _swap(tmp, out, command, keep, foreign)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: Path, out: Path, command: str, keep: tuple[str, ...], foreign: list[str]) -> None:
    """Put the complete folder ``tmp`` in place of ``out``, carrying ``keep`` over; ``foreign``:
    the entries --force deletes although ``command`` did not write them (named in a warning)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        warnings.warn(
            f"{out}: --force deletes {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} "
            f"that 'dualpatch {command}' did not write ({shown})",
            stacklevel=4,
        )
    carried: list[str] = []
    try:
        for name in keep:
            if (out / name).exists() and not (tmp / name).exists():
                os.replace(out / name, tmp / name)
                carried.append(name)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)  # a fresh unused name: the old folder is renamed onto it
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        carried.clear()
        shutil.rmtree(old, ignore_errors=True)
    finally:
        for name in carried:  # the swap failed: give the kept entries back
            if (tmp / name).exists() and not (out / name).exists():
                os.replace(tmp / name, out / name)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (never the whole file at once), computed once
    per process for each version of each file: the key is the file's identity and its stat
    times, and any write (or ``touch``, or a file renamed onto the path) changes ``st_ctime_ns``,
    which no user can set back."""
    st = os.stat(path)
    return _sha256(
        os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
    )


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, *version: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
