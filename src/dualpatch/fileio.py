"""Atomic writes: every output appears complete or not at all."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes owner-only files; outputs get the usual umask-based mode instead.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def _written_by(out: Path) -> str | None:
    try:
        meta = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("command") if isinstance(meta, dict) else None


def check_output_dir(
    out: str | os.PathLike[str],
    command: str,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    keep: Iterable[str] = (),
    legacy: Iterable[str] = (),
) -> None:
    """Refuse ``out`` unless it is new, empty, or an earlier output of ``command`` (``--force``
    overrides the last rule only).

    ``inputs``: the user's input files and folders; none may lie inside ``out``, which gets
    replaced, whatever ``force`` says. ``keep``: entry names that this command itself keeps in
    ``out`` between runs (a resumable model) and carries over. ``legacy``: entry names that, all
    present, mark an output written before folders carried a marker.
    """
    from .errors import DataError

    out = Path(out)
    for item in inputs:
        if item is not None and _inside(Path(item), out):
            raise DataError(
                f"{item}: this input lies inside --out {out}, which '{command}' replaces; "
                "choose another --out"
            )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if not out.is_dir() or force:
        return
    entries = sorted(p.name for p in out.iterdir())
    owner = _written_by(out)
    legacy = set(legacy)
    if owner == command or (owner is None and legacy and legacy <= set(entries)):
        return
    foreign = [e for e in entries if e not in set(keep) | {MARKER}]
    if not foreign:
        return
    shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    what = f"written by 'dualpatch {owner}'" if owner else "not written by dualpatch"
    raise DataError(
        f"{out}: holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} {what} "
        f"({shown}); choose another --out, or add --force to replace it"
    )


def mark_output(folder: str | os.PathLike[str], command: str) -> None:
    """Record that ``command`` wrote ``folder`` (see ``check_output_dir``)."""
    from . import __version__

    write_json(Path(folder) / MARKER, {"command": command, "dualpatch": __version__})


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

    ``out`` is checked first (``check_output_dir``). The old content stays in place, untouched,
    until the new folder is complete: an error or Ctrl-C inside the block leaves it as it was and
    removes the temporary folder. Entries named in ``keep`` move from the old folder into the new
    one unless the block wrote its own.
    """
    out = Path(out)
    keep = tuple(keep)
    check_output_dir(out, command, force, inputs, keep, legacy)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    carried: list[str] = []
    try:
        yield tmp
        mark_output(tmp, command)
        os.chmod(tmp, 0o777 & ~_umask())
        if not out.exists():
            os.replace(tmp, out)
            return
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
        shutil.rmtree(tmp, ignore_errors=True)


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
