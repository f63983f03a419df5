"""Versioned model folders: every change to a fitted model's banks is a new version beside the
old ones, and one atomic pointer says which version is current.

Layout of a versioned folder ``DIR`` (a folder written by ``fit`` has none of this, and is read
exactly as before)::

    DIR/versions/0001/{model.json, model.safetensors, version.json}
    DIR/versions/0002/...
    DIR/current            -> versions/0002   (a symlink: the pointer)
    DIR/model.json         -> current/model.json
    DIR/model.safetensors  -> current/model.safetensors

Why a symlink: ``os.replace`` swaps it in one step, and every reader that opens
``DIR/model.json`` (the server, the export, predict's provenance) follows it without knowing
about versions. ``load`` resolves the pointer once (``card.resolve_model_dir``), so it never
pairs one version's JSON with another's tensors. A version folder is written under a temporary
name and renamed into place only when complete; no file of an earlier version is ever replaced, and
versions are only deleted by ``prune``. Writers take an exclusive lock (``DIR/.lock``) so that
two updates cannot both build on the same parent.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import getpass
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dualpatch.card import CURRENT, resolve_model_dir
from dualpatch.errors import ConfigError, ModelFileError
from dualpatch.fileio import write_json

VERSIONS = "versions"
RECORD = "version.json"
MODEL_FILES = ("model.json", "model.safetensors")
LOCK = ".lock"


def is_versioned(model_dir: str | os.PathLike[str]) -> bool:
    return (Path(model_dir) / CURRENT).is_symlink()


def current_version(model_dir: str | os.PathLike[str]) -> int | None:
    """The current version's number; None for a folder without versions."""
    if not is_versioned(model_dir):
        return None
    return int(resolve_model_dir(model_dir).name)


def _folder(model_dir: Path, number: int) -> Path:
    return model_dir / VERSIONS / f"{number:04d}"


def numbers(model_dir: str | os.PathLike[str]) -> list[int]:
    """The version numbers present, in order (temporary folders of an unfinished write are not
    versions)."""
    root = Path(model_dir) / VERSIONS
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


def read_record(model_dir: str | os.PathLike[str], number: int) -> dict[str, Any]:
    path = _folder(Path(model_dir), number) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable version record ({exc})") from exc
    if not isinstance(record, dict):
        raise ModelFileError(f"{path}: version record is not a JSON object")
    return record


def history(model_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every version's record, oldest first, each with ``current`` (bool) added; [] for a folder
    without versions."""
    model_dir = Path(model_dir)
    if not (model_dir / "model.json").exists():
        raise ModelFileError(f"{model_dir}: not a model folder (no model.json)")
    now = current_version(model_dir)
    return [{**read_record(model_dir, n), "current": n == now} for n in numbers(model_dir)]


def default_user() -> str:
    """Who made a change when nobody says: the login name (``by`` overrides it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def locked(model_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the folder's update lock (blocking) for the block: one writer at a time."""
    model_dir = Path(model_dir)
    if not (model_dir / "model.json").exists():
        raise ModelFileError(f"{model_dir}: not a model folder (no model.json)")
    with open(model_dir / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield model_dir
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (same bytes, no space) where the file system allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _replace_with_symlink(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target`` in one step (a temporary link renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _write_version(model_dir: Path, record: dict[str, Any], fill: Callable[[Path], None]) -> int:
    """Write the next version: ``fill(tmp)`` puts the model files in a temporary folder, the
    record is added, and the folder is renamed to its number (a crash leaves only the temporary
    folder, which is never read). Returns the number."""
    root = model_dir / VERSIONS
    root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=root))
    try:
        fill(tmp)
        number = (numbers(model_dir) or [0])[-1] + 1
        write_json(tmp / RECORD, {"version": number, **record})
        os.chmod(tmp, 0o755)
        os.rename(tmp, _folder(model_dir, number))  # the lock keeps the number free
        return number
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _switch(model_dir: Path, number: int) -> None:
    """Make version ``number`` current: the one step readers can observe."""
    _replace_with_symlink(model_dir / CURRENT, f"{VERSIONS}/{number:04d}")


def start_versions(model_dir: Path) -> int:
    """Turn a plain model folder into version 1 of a versioned one, without changing what any
    reader sees at any moment: version 1 holds the same bytes (hard links), ``current`` points at
    it, and only then are the top-level files swapped, one by one, for links to ``current``."""
    if is_versioned(model_dir):
        return current_version(model_dir) or 0
    meta = model_dir / "model.json"
    created = datetime.datetime.fromtimestamp(meta.stat().st_mtime, datetime.UTC)
    record = {
        "action": "fit",
        "created": created.isoformat(timespec="seconds"),
        "by": None,
        "added": [],
        "note": "the model as fit wrote it, before its first change",
    }

    def fill(tmp: Path) -> None:
        for name in MODEL_FILES:
            _link_or_copy(model_dir / name, tmp / name)

    number = _write_version(model_dir, record, fill)
    _switch(model_dir, number)
    for name in MODEL_FILES:
        _replace_with_symlink(model_dir / name, f"{CURRENT}/{name}")
    return number


def commit(
    model_dir: str | os.PathLike[str], model: Any, record: dict[str, Any], by: str | None = None
) -> int:
    """Save ``model`` as a new version of ``model_dir`` and make it current; ``record`` says what
    changed (``added``, the threshold check...). Call under ``locked``. Returns the number."""
    from dualpatch.models.persistence import save_model

    model_dir = Path(model_dir)
    parent = start_versions(model_dir)
    full = {"parent": parent, "created": _now(), "by": by or default_user(), **record}
    number = _write_version(model_dir, full, lambda tmp: save_model(model, tmp))
    _switch(model_dir, number)
    return number


def rollback(model_dir: str | os.PathLike[str], to: int, by: str | None = None) -> int:
    """Make version ``to``'s model current again, as a new version (its files hard-linked), so
    the history keeps the rollback and who made it. Returns the new version's number."""
    model_dir = Path(model_dir)
    with locked(model_dir):
        if not is_versioned(model_dir):
            raise ConfigError(f"{model_dir}: has no versions to roll back to")
        if to not in numbers(model_dir):
            have = ", ".join(map(str, numbers(model_dir)))
            raise ConfigError(f"{model_dir}: no version {to} (versions: {have})")
        source = _folder(model_dir, to)
        record = {
            "action": "rollback",
            "parent": current_version(model_dir),
            "restores": to,
            "created": _now(),
            "by": by or default_user(),
            "added": [],
            "held_out": read_record(model_dir, to).get("held_out"),
        }

        def fill(tmp: Path) -> None:
            for name in MODEL_FILES:
                _link_or_copy(source / name, tmp / name)

        number = _write_version(model_dir, record, fill)
        _switch(model_dir, number)
    return number


def prune(model_dir: str | os.PathLike[str], keep: int) -> list[int]:
    """Delete all but the newest ``keep`` versions (the current one is always kept) and the
    temporary folders of killed updates; returns the numbers deleted. The only way a version is
    ever removed."""
    if keep < 1:
        raise ConfigError(f"prune --keep {keep}: keep at least 1 version")
    model_dir = Path(model_dir)
    with locked(model_dir):
        present, now = numbers(model_dir), current_version(model_dir)
        doomed = [n for n in present[:-keep] if n != now]
        for n in doomed:
            # renamed away first, so no half-deleted folder ever carries a version number
            folder = _folder(model_dir, n)
            trash = folder.with_name(f".old-{folder.name}")
            os.rename(folder, trash)
            shutil.rmtree(trash)
        # what killed updates left: never read, safe to delete under the lock
        for leftover in (model_dir / VERSIONS).glob(".new-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    return doomed
