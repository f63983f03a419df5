"""Atomic outputs and resume: a killed ``dualpatch fit`` leaves no model, and a rerun reuses the
features it had cached; a damaged cache entry is recomputed, never trusted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dualpatch import PatchCore
from dualpatch.bank.feature_cache import load_cached
from dualpatch.cli.main import main
from dualpatch.fileio import MARKER
from tests.support.common import CountingExtractor, kill_when, tiny_params

#: large enough that extracting the demo set's 72 training images takes seconds on one thread
SIZE = ("384", "160")
ENTRY = re.compile(r"[0-9a-f]{64}\.safetensors")
TEMPORARY = re.compile(r"\..+\.tmp")


def entries(cache: Path) -> dict[str, tuple[int, int]]:
    """Complete cache entries by name, with (inode, mtime_ns): a rewritten entry changes both."""
    out = {}
    for p in cache.iterdir() if cache.is_dir() else ():
        if ENTRY.fullmatch(p.name):
            st = p.stat()
            out[p.name] = (st.st_ino, st.st_mtime_ns)
    return out


def fit_command(demo_root: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "dualpatch.cli", "fit", "--dataset", "demo", "--data", str(demo_root),
        "--out", str(out), "--image-size", *SIZE, "--coreset-ratio", "0.001", "--coreset-min", "50",
    ]


def run_fit(demo_root: Path, out: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(fit_command(demo_root, out), env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_killed_fit_resumes_from_its_cache(demo_root, demo_train, cli_env, tmp_path, monkeypatch):
    n_images = len(demo_train)  # normal and defective training images each get one entry
    cache, out = tmp_path / "cache", tmp_path / "model"
    env = {**cli_env, "DUALPATCH_CACHE": str(cache)}

    # 1. start a fit and kill it (SIGKILL: no clean-up code runs) once a batch is cached
    status = kill_when(fit_command(demo_root, out), env, tmp_path / "first.log",
                       lambda: len(entries(cache)) >= 8, "a cache entry")
    assert status == -signal.SIGKILL

    # 2. nothing final is half-written: no model folder; in the cache only complete entries, each
    #    one loadable with matching values, and at most hidden *.tmp files the cache never reads
    assert not out.exists()
    before = entries(cache)
    assert 8 <= len(before) < n_images, "killed too late to test a resume"
    for name in os.listdir(cache):
        assert ENTRY.fullmatch(name) or TEMPORARY.fullmatch(name), name
    for name in before:
        assert load_cached(cache / name) is not None, f"{name}: a damaged entry was left"

    # one entry is damaged on top, as a crash in the middle of its write could have left it
    damaged = sorted(before)[0]
    data = (cache / damaged).read_bytes()
    (cache / damaged).write_bytes(data[: len(data) // 2])
    before = entries(cache)

    # 3. the same command again completes, reusing every intact entry and recomputing the rest
    resumed = run_fit(demo_root, out, env)
    assert resumed.returncode == 0, resumed.stderr
    # no temporary left; the marker names the command that wrote the folder
    assert sorted(os.listdir(out)) == [MARKER, "model.json", "model.safetensors"]
    after = entries(cache)
    assert len(after) == n_images
    kept = [name for name in before if name != damaged]
    assert all(after[name] == before[name] for name in kept), "an intact entry was recomputed"
    assert after[damaged] != before[damaged], "the damaged entry was trusted"
    assert load_cached(cache / damaged) is not None

    # 4. an uninterrupted run in a fresh cache gives the same model and the same scores
    #    (run in this process, through the same entry point: it saves a second start-up)
    fresh_out = tmp_path / "fresh"
    monkeypatch.setenv("DUALPATCH_CACHE", str(tmp_path / "c2"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    monkeypatch.setattr("sys.argv", ["dualpatch", *fit_command(demo_root, fresh_out)[3:]])
    with pytest.raises(SystemExit) as status:
        main()
        raise SystemExit(0)
    assert status.value.code in (0, None)
    assert len(entries(tmp_path / "c2")) == n_images
    a, b = PatchCore.load(out), PatchCore.load(fresh_out)
    assert type(a) is type(b) and a.kind == "dual"
    torch.testing.assert_close(a.memory_.bank_, b.memory_.bank_)
    torch.testing.assert_close(a.defect_memory_.bank_, b.defect_memory_.bank_)
    a.progress = b.progress = False
    test = demo_train.normal()[:2] + demo_train.defective()[:2]
    np.testing.assert_allclose(a.predict(test).image_scores, b.predict(test).image_scores,
                               rtol=1e-5)


# -- damaged cache entries, at the library level ---------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero-bytes":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\x00" * 8 + b"not a safetensors file")
    elif how == "flipped-value":  # still a valid safetensors file: only the checksum tells
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x40]))
    elif how == "no-checksum":  # an entry from before checksums, or from another tool
        from safetensors.torch import load_file, save_file

        save_file(load_file(str(path)), str(path))
    elif how == "other-shape":
        from safetensors.torch import save_file

        save_file({"features": torch.zeros(2, 2)}, str(path), metadata={"sha256": "0" * 64})
    else:
        raise ValueError(how)


@pytest.mark.parametrize(
    "how", ["truncated", "zero-bytes", "garbage", "flipped-value", "no-checksum", "other-shape"]
)
def test_damaged_cache_entry_is_recomputed(how, tiny_normal, tmp_path):
    cache = tmp_path / "cache"
    images = tiny_normal[:3]
    first = PatchCore(**tiny_params(cache_dir=str(cache)))
    reference = first.image_features(images)
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 3
    target = cache / f"{first._cache_key(images[1])}.safetensors"
    _damage(target, how)

    again = PatchCore(**tiny_params(cache_dir=str(cache)))
    again._extractor = counting = CountingExtractor(first.extractor_)
    feats = again.image_features(images)
    assert counting.images == 1  # only the damaged entry went through the backbone again
    torch.testing.assert_close(feats, reference, rtol=0, atol=0)
    assert load_cached(target) is not None  # rewritten whole

    third = PatchCore(**tiny_params(cache_dir=str(cache)))
    third._extractor = counting = CountingExtractor(first.extractor_)
    third.image_features(images)
    assert counting.images == 0  # and trusted from then on


# -- every output appears by a rename --------------------------------------------------------------


def test_every_output_appears_by_rename(demo_root, tmp_path, monkeypatch):
    """fit, evaluate, predict and run (models, cli, experiment, report) write each output file to
    a temporary name and rename it into place (dualpatch.fileio): no reader ever sees half a file.
    The one exception is run.log, a log that must survive a crash to be of any use."""
    replaced: list[Path] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        replaced.append(Path(dst).resolve())
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    monkeypatch.setenv("DUALPATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)

    def cli(*args) -> None:
        monkeypatch.setattr("sys.argv", ["dualpatch", *map(str, args)])
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None), args

    small = ("--image-size", "64", "32", "--coreset-min", "20")
    model = tmp_path / "model"
    cli("fit", "--dataset", "demo", "--data", demo_root, "--out", model, *small)
    cli("evaluate", "--model", model, "--dataset", "demo", "--data", demo_root,
        "--out", tmp_path / "evaluation")
    cli("predict", demo_root / "test", "--model", model, "--out", tmp_path / "prediction")
    cli("run", "--set", "dataset=demo", "--set", f"data={demo_root}", "--set",
        "image_size=[64, 32]", "--set", "coreset_min=20", "--set", "runs=[{bank: single}]",
        "--out", tmp_path / "experiment")

    def atomic(path: Path) -> bool:  # renamed itself, or inside a folder that was renamed whole
        return any(p in replaced for p in (path, *path.parents))

    outputs = [p.resolve() for folder in ("model", "evaluation", "prediction", "experiment")
               for p in (tmp_path / folder).rglob("*") if p.is_file()]
    assert len(outputs) > 40  # models, metrics, maps, curves, report pages...
    written_in_place = [p for p in outputs if not atomic(p) and p.name != "run.log"]
    assert written_in_place == []
    assert not [p for p in outputs if p.name.endswith(".tmp")]  # no temporary left behind
