"""Helpers that rewrite saved model folders the way an older dualpatch (or a person) would."""

from __future__ import annotations

import json
from pathlib import Path


def as_saved_before_the_seal(folder: Path) -> None:
    """Rewrite ``folder``'s tensor file without the card's seal, as dualpatch wrote it before the
    seal existed, and record the new file's SHA-256 in model.json."""
    from safetensors.torch import load_file, save_file

    from dualpatch.fileio import sha256_file

    tensors = folder / "model.safetensors"
    save_file(load_file(str(tensors)), str(tensors))
    card = json.loads((folder / "model.json").read_text())
    card["safetensors_sha256"] = sha256_file(tensors)
    (folder / "model.json").write_text(json.dumps(card))


def edit_card(folder: Path, change) -> Path:
    """Apply ``change`` to the dict of ``folder``'s model.json as a person editing the file
    would (Python's json writes NaN literally); return the file's path."""
    path = folder / "model.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return path


def replace_bank(folder: Path, bank, name: str = "normal_bank") -> None:
    """Rewrite the tensor file with ``bank`` as ``name`` and a matching digest, shapes and seal:
    what a damaged fit would have written."""
    from safetensors.torch import load_file, save_file

    from dualpatch.card import SEAL_KEY, seal_of
    from dualpatch.fileio import sha256_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name] = bank
    meta = json.loads((folder / "model.json").read_text())
    meta["tensors"][name] = list(bank.shape)
    save_file(tensors, str(folder / "model.safetensors"), {SEAL_KEY: seal_of(meta)})
    meta["safetensors_sha256"] = sha256_file(folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps(meta))
