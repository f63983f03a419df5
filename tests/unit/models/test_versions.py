"""Versioned model folders (models/versions.py): every change is a new version beside the old
ones, one atomic pointer picks the current one, rollback and prune; a folder without versions is
read as before; a process killed mid-update leaves the previous version serving."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dualpatch import PatchCore
from dualpatch.card import resolve_model_dir
from dualpatch.errors import ConfigError, DataError
from dualpatch.fileio import sha256_file
from dualpatch.models import versions
from dualpatch.models.online import update_folder
from tests.support.common import kill_when

from .online_support import held_out, painted, save_dual


@pytest.fixture(scope="module")
def plain(demo_train, tmp_path_factory):
    """A model folder as fit writes it (no versions); tests copy it before changing it."""
    return save_dual(demo_train, tmp_path_factory.mktemp("versions") / "model")


@pytest.fixture
def folder(plain, tmp_path):
    import shutil

    return Path(shutil.copytree(plain, tmp_path / "model"))


def scores(model_dir: Path, samples) -> np.ndarray:
    return PatchCore.load(model_dir).predict(samples).image_scores


def test_a_folder_without_versions_reads_as_before(plain):
    assert resolve_model_dir(plain) == plain and not versions.is_versioned(plain)
    assert versions.history(plain) == []
    assert PatchCore.load(plain).memory_.bank_.shape[0] > 0


def test_each_change_is_a_new_version_and_nothing_is_replaced(folder, demo_test):
    original = {n: sha256_file(folder / n) for n in versions.MODEL_FILES}
    good = demo_test.normal()[0]
    first, update = update_folder(folder, "normal", [good.image_path], by="key:line-3")
    assert first == 2 and versions.current_version(folder) == 2
    second, _ = update_folder(folder, "normal", [demo_test.normal()[1].image_path])
    assert second == 3
    # version 1 holds the fit's bytes, untouched by the two changes after it
    for name, digest in original.items():
        assert sha256_file(folder / "versions/0001" / name) == digest
    record = versions.read_record(folder, 2)
    assert record["action"] == "add_normal" and record["by"] == "key:line-3"
    assert record["parent"] == 1 and record["created"]
    assert record["added"][0]["file"] == str(good.image_path)
    assert record["added"][0]["sha256"] == sha256_file(good.image_path)
    assert record["rows_after"] == update.rows_after
    # readers that open DIR/model.json directly see the current version's pair
    meta = json.loads((folder / "model.json").read_text())
    assert meta["safetensors_sha256"] == sha256_file(folder / "model.safetensors")
    assert (
        PatchCore.load(folder).memory_.bank_.shape[0]
        == versions.read_record(folder, 3)["rows_after"]
    )


def test_history_lists_every_version_and_marks_the_current(folder, demo_test):
    update_folder(folder, "normal", [demo_test.normal()[0].image_path])
    listed = versions.history(folder)
    assert [(r["version"], r["action"], r["current"]) for r in listed] == [
        (1, "fit", False),
        (2, "add_normal", True),
    ]


def test_rollback_restores_a_version_as_a_new_one(folder, demo_test):
    samples = demo_test.normal()[:2] + demo_test.defective()[:2]
    before = scores(folder, samples)
    bad = demo_test.defective()[0]
    update_folder(folder, "defect", [bad.image_path], masks=[bad.mask_path], by="ann")
    assert not np.array_equal(scores(folder, samples), before)  # the change changed scores
    number = versions.rollback(folder, 1, by="bob")
    assert number == 3 and versions.read_record(folder, 3)["restores"] == 1
    np.testing.assert_array_equal(scores(folder, samples), before)
    assert versions.numbers(folder) == [1, 2, 3]  # nothing deleted
    with pytest.raises(ConfigError, match="no version 9"):
        versions.rollback(folder, 9)


def test_prune_deletes_only_on_request_and_keeps_the_current(folder, demo_test):
    for s in demo_test.normal()[:3]:
        update_folder(folder, "normal", [s.image_path])
    versions.rollback(folder, 2)  # current: 5, which restores 2
    assert versions.prune(folder, keep=2) == [1, 2, 3]
    assert versions.numbers(folder) == [4, 5] and versions.current_version(folder) == 5
    PatchCore.load(folder)
    with pytest.raises(ConfigError, match="keep at least 1"):
        versions.prune(folder, keep=0)


def test_held_out_normals_are_recorded_and_reused(folder, demo_train, demo_test):
    held = [s.image_path for s in held_out(demo_train)]
    _, first = update_folder(folder, "normal", [demo_test.normal()[0].image_path], held_out=held)
    assert first.threshold["checked"]
    assert [e["file"] for e in versions.read_record(folder, 2)["held_out"]] == list(map(str, held))
    _, later = update_folder(folder, "normal", [demo_test.normal()[1].image_path])
    assert later.threshold["checked"] and later.threshold["held_out"] == len(held)


def test_a_refused_update_writes_no_version(folder, demo_train, tmp_path):
    image = painted(demo_train.normal()[20], tmp_path)
    with pytest.raises(DataError, match="refused"):
        update_folder(folder, "normal", [image])
    assert not versions.is_versioned(folder) and versions.numbers(folder) == []


STALL = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from dualpatch.models import persistence, versions
from dualpatch.models.online import update_folder
folder, image, marker, where = sys.argv[1:5]

def stall():
    Path(marker).touch()
    time.sleep(600)

if where == "saving":  # killed while the new version's files are being written
    save = persistence.save_model
    def slow_save(model, path):
        out = save(model, path)
        stall()
        return out
    persistence.save_model = slow_save
else:  # killed with the new version complete but not yet current
    versions._switch = lambda *args: stall()
update_folder(folder, "normal", [image])
"""


@pytest.mark.parametrize("where", ["saving", "switching"])
def test_a_killed_update_leaves_the_previous_version_serving(
    folder, demo_test, cli_env, tmp_path, where
):
    samples = demo_test.normal()[:2] + demo_test.defective()[:2]
    update_folder(folder, "normal", [demo_test.normal()[3].image_path])  # version 2 is current
    before = scores(folder, samples)
    marker = tmp_path / "stalled"
    command = [sys.executable, "-c", STALL, str(folder), str(demo_test.normal()[4].image_path),
               str(marker), where]  # fmt: skip
    env = {**cli_env, "PYTHONPATH": os.pathsep.join(sys.path)}
    status = kill_when(command, env, tmp_path / "update.log", marker.exists, "the stalled update")
    assert status == -signal.SIGKILL
    assert versions.current_version(folder) == 2
    leftovers = list((folder / "versions").glob(".new-*"))
    assert bool(leftovers) == (where == "saving")  # a temporary folder, which no reader opens
    np.testing.assert_array_equal(scores(folder, samples), before)
    # the lock died with the process: the next update goes through
    number, _ = update_folder(folder, "normal", [demo_test.normal()[4].image_path])
    assert versions.current_version(folder) == number
    assert not torch.equal(
        PatchCore.load(folder).memory_.bank_, PatchCore.load(folder / "versions/0002").memory_.bank_
    )
    versions.prune(folder, keep=10)
    assert not list((folder / "versions").glob(".new-*"))
