"""Bounded-memory fit (``max_memory``): features spill to an on-disk store; the bank equals the
in-memory fit's when the projection fits; a full disk fails in one line with nothing left; a
killed spilled CLI fit resumes from its store."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dualpatch import PatchCore
from dualpatch.bank import feature_store, spill
from dualpatch.cli.main import main
from dualpatch.errors import ConfigError, DataError
from tests.support.common import CountingExtractor, kill_when, spill_batches_done, tiny_params


@pytest.mark.parametrize("method", ["greedy", "approx"])
def test_spilled_fit_gives_the_in_memory_bank(method, tiny_normal, tmp_path, monkeypatch):
    # a small row budget, so that "approx" really narrows these few hundred patches
    monkeypatch.setattr("dualpatch.bank.memory.APPROX_SAMPLE", 100)
    params = {**tiny_params(coreset_method=method), "coreset_min": 20}
    in_memory = PatchCore(**params).fit(tiny_normal)
    spilled = PatchCore(**params, max_memory="4GiB", cache_dir=str(tmp_path / "c")).fit(tiny_normal)
    assert spilled.grid_ == in_memory.grid_
    torch.testing.assert_close(spilled.memory_.bank_, in_memory.memory_.bank_, rtol=0, atol=0)
    assert spilled.spill_["coreset_rows"] == spilled.spill_["rows"]
    assert Path(spilled.spill_["store"]).is_file()  # kept in the cache for resume and reuse

    # without a cache folder the store is temporary and gone afterwards
    temp = PatchCore(**params, max_memory="4GiB").fit(tiny_normal)
    torch.testing.assert_close(temp.memory_.bank_, in_memory.memory_.bank_, rtol=0, atol=0)
    assert not Path(temp.spill_["store"]).exists()


def test_spilled_fit_reads_back_from_the_store_without_extracting(tiny_normal, tmp_path):
    params = {**tiny_params(max_memory="4GiB", cache_dir=str(tmp_path / "c")), "coreset_min": 30}
    first = PatchCore(**params).fit(tiny_normal)
    shutil.rmtree(tmp_path / "c" / "banks")  # else the shared normal bank is all a refit reads
    again = PatchCore(**params)
    again._extractor = counting = CountingExtractor(first.extractor_)
    again.fit(tiny_normal)
    assert counting.images == 0 and again.spill_["resumed_images"] == len(tiny_normal)
    torch.testing.assert_close(again.memory_.bank_, first.memory_.bank_, rtol=0, atol=0)


def cap_holding(rows: int) -> int:
    """A ``max_memory`` whose projection share holds ``rows`` rows of the 128-d projection."""
    return int(spill.row_bytes(128) * rows / spill.PROJECTION_SHARE)


def test_projection_past_the_cap_runs_on_a_presample(tiny_normal):
    """A cap that holds only part of the projection: k-center on a seeded pre-sample of the rows
    the cap holds (the two-pass k-center), still a bank of the target size from the store."""
    model = PatchCore(**{**tiny_params(max_memory=cap_holding(100)), "coreset_min": 20})
    model.fit(tiny_normal)
    assert model.spill_["coreset_rows"] == 100 < model.spill_["rows"]
    assert model.memory_.bank_.shape == (20, 152)
    with pytest.raises(DataError, match="too small to select 20 of"):
        PatchCore(**{**tiny_params(max_memory=cap_holding(50)), "coreset_min": 20}).fit(tiny_normal)


def test_past_the_cap_bank_does_not_depend_on_the_memory_held(tiny_normal):
    """The pre-sample past the cap is sized from the cap alone: a second fit while the process
    holds 256 MiB more gives the same rows and the same bank, bit for bit."""
    params = {**tiny_params(max_memory=cap_holding(120)), "coreset_min": 20}
    first = PatchCore(**params).fit(tiny_normal)
    gc.collect()  # so that no earlier object is freed while the ballast is measured
    before = spill.rss_bytes()
    # a fresh anonymous mapping, written, so resident: heap memory freed by earlier tests could
    # otherwise be reused and hardly raise the resident size
    ballast = mmap.mmap(-1, 256 * 1024**2)
    np.frombuffer(ballast, dtype=np.uint8)[:] = 1
    assert spill.rss_bytes() - before > 200 * 1024**2
    again = PatchCore(**params).fit(tiny_normal)
    ballast.close()
    assert first.spill_["coreset_rows"] == again.spill_["coreset_rows"] == 120
    torch.testing.assert_close(again.memory_.bank_, first.memory_.bank_, rtol=0, atol=0)


@pytest.mark.parametrize("value", ["2 potatoes", "0GiB", "-1"])
def test_bad_max_memory_is_refused_before_any_work(value, tiny_normal):
    with pytest.raises(ConfigError, match="max_memory"):
        PatchCore(**tiny_params(max_memory=value)).fit(tiny_normal)


def test_parse_size():
    assert spill.parse_size("2GiB") == 2 * 1024**3
    assert spill.parse_size("1.5GB") == 1_500_000_000
    assert spill.parse_size(4096) == 4096


@pytest.mark.parametrize("where", ["allocate", "write"])
def test_full_disk_fails_in_one_line_and_leaves_nothing(where, tiny_normal, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    if where == "allocate":

        def full(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", full)
    else:
        calls = []

        def full(fd, data, offset):  # the second batch finds the disk full
            calls.append(1)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return os.pwrite(fd, data, offset)

        monkeypatch.setattr(feature_store, "write_rows", full)
    model = PatchCore(**tiny_params(max_memory="4GiB", cache_dir=str(cache), batch_size=2))
    with pytest.raises(DataError) as info:
        model.fit(tiny_normal)
    message = str(info.value)
    assert "\n" not in message and "no space left on device" in message
    assert message.startswith(str(cache / "spill")) and "features.bin" in message
    assert list((cache / "spill").iterdir()) == []  # the store is removed whole
    assert not hasattr(model, "memory_")


@pytest.mark.slow
def test_killed_spilled_fit_resumes_from_its_store(
    demo_root, demo_train, cli_env, tmp_path, monkeypatch
):
    cache, out = tmp_path / "cache", tmp_path / "model"
    command = [
        sys.executable,
        "-m",
        "dualpatch.cli",
        "fit",
        "--dataset",
        "demo",
        "--data",
        str(demo_root),
        "--out",
        str(out),
        "--image-size",
        "384",
        "160",
        "--coreset-ratio",
        "0.001",
        "--coreset-min",
        "50",
        "--bank",
        "single",
        "--max-memory",
        "3GiB",
        # every normal image in the bank, as in the in-memory fit it is compared with below
        "--threshold-holdout",
        "0",
    ]
    env = {**cli_env, "DUALPATCH_CACHE": str(cache)}
    n_images = len(demo_train.normal())

    def done() -> int:
        return spill_batches_done(cache / "spill")

    status = kill_when(command, env, tmp_path / "first.log", lambda: done() >= 8, "a full batch")
    assert status == -signal.SIGKILL
    assert not out.exists()
    before = done()
    assert 8 <= before < n_images, "killed too late to test a resume"

    # the rerun (in this process, so its backbone calls can be counted) extracts only the rest
    counted = []
    real_call = PatchCore.extractor_.fget

    def counting(self):
        ext = real_call(self)
        if not isinstance(ext, CountingExtractor):
            self._extractor = ext = CountingExtractor(ext)
            counted.append(ext)
        return ext

    monkeypatch.setattr(PatchCore, "extractor_", property(counting))
    monkeypatch.setenv("DUALPATCH_CACHE", str(cache))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr("sys.argv", ["dualpatch", *command[3:]])
    with pytest.raises(SystemExit) as status:
        main()
        raise SystemExit(0)
    assert status.value.code in (0, None)
    assert sum(c.images for c in counted) == n_images - before
    monkeypatch.undo()

    # the same scores as an uninterrupted in-memory fit
    fresh = PatchCore(
        image_size=(384, 160), coreset_ratio=0.001, coreset_min=50, progress=False
    ).fit(demo_train.normal())
    resumed = PatchCore.load(out)
    torch.testing.assert_close(resumed.memory_.bank_, fresh.memory_.bank_, rtol=0, atol=0)
    resumed.progress = False
    test = demo_train.normal()[:2] + demo_train.defective()[:2]
    np.testing.assert_array_equal(
        resumed.predict(test).image_scores, fresh.predict(test).image_scores
    )
