"""Files that nothing can quietly change (issue 21: 1-4, 6, 11, 12, 18, 22, 23).

Each case is the CLI call a user would make (in this process through the ``cli`` fixture, or a
real process where two processes or a SIGKILL are the point), and checks the exit status, the one
``error:`` line and the files afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.bad_input import (
    box_mask,
    error_line,
    make_folder,
    save,
    snapshot,
    texture,
    warning_lines,
)
from tests.support.common import kill_when, spill_batches_done

FIT = ("--image-size", 64, 32, "--coreset-min", 20)


def fit(cli, data: Path, out: Path, *extra):
    # no threshold hold-out: these cases are about files, and the fixture's 3 normal images
    # are all needed in the bank (the spill store's checksum covers one batch of 3)
    return cli("fit", "--dataset", "folder", "--data", data, "--bank", "single", "--out", out,
               "--threshold-holdout", "0", *FIT, *extra)  # fmt: skip


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary, old, lock or spill entries a command left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def data(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


@pytest.fixture
def model(model_dir, tmp_path) -> Path:
    """A copy of the tiny saved model, free to damage."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


# ------------------------------------------------------------------------ 1: export --out


# an OpenVINO export writes NAME.xml and NAME.bin whatever the suffix given: never these files
@pytest.mark.parametrize("name", ["model.safetensors", "model.json"])
def test_export_refuses_to_overwrite_the_model_it_exports(name, model, cli, tmp_path):
    before = snapshot(model)
    code, _, err = cli("export", "--model", model, "--out", model / name)
    assert code == 1
    line = error_line(err, "part of the model being exported")
    assert str(model) in line
    assert snapshot(model) == before


def test_export_out_that_is_a_folder_names_it_not_a_temporary_file(model, cli, tmp_path):
    before = snapshot(model)
    for folder in (model, tmp_path / "exports"):
        folder.mkdir(exist_ok=True)
        code, _, err = cli("export", "--model", model, "--out", folder)
        assert code == 1
        line = error_line(err, folder, "is a folder", folder / "model.onnx")
        assert ".tmp" not in line
    assert snapshot(model) == before
    assert list((tmp_path / "exports").iterdir()) == []


def test_export_refuses_the_users_files(model, cli, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    code, _, err = cli("export", "--model", model, "--out", notes)
    assert code == 1
    error_line(err, notes, "not written by 'dualpatch export'")
    assert notes.read_text() == "my notes\n"
    # an unrelated scorer.bin beside the .xml target of an OpenVINO export
    scorer_bin = tmp_path / "scorer.bin"
    scorer_bin.write_bytes(b"someone else's weights")
    code, _, err = cli("export", "--model", model, "--format", "openvino",
                       "--out", tmp_path / "scorer.xml")  # fmt: skip
    assert code == 1
    error_line(err, scorer_bin, "not written by 'dualpatch export'")
    assert scorer_bin.read_bytes() == b"someone else's weights"
    assert not (tmp_path / "scorer.xml").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_export_replaces_its_own_earlier_file(model, cli, tmp_path):
    target = tmp_path / "scorer.onnx"
    for _ in range(2):
        code, out, err = cli("export", "--model", model, "--out", target)
        assert code == 0, err
        assert "exported onnx scorer" in out
    assert target.stat().st_size > 0
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------- 2: a rerun into its own output


def test_rerun_refuses_the_users_files_added_to_its_output(data, cli, tmp_path):
    out = tmp_path / "model"
    code, _, err = fit(cli, data, out)
    assert code == 0, err
    (out / "notes.txt").write_text("my notes\n")
    (out / "model.onnx").write_bytes(b"an exported scorer")
    before = snapshot(out)
    code, _, err = fit(cli, data, out)
    assert code == 1
    error_line(err, out, "2 entries that 'dualpatch fit' did not write", "model.onnx",
               "notes.txt", "--force")  # fmt: skip
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_force_deletes_the_users_files_with_a_warning_that_names_them(data, cli, tmp_path):
    out = tmp_path / "model"
    assert fit(cli, data, out)[0] == 0
    (out / "notes.txt").write_text("my notes\n")
    code, _, err = fit(cli, data, out, "--force")
    assert code == 0, err
    (warning,) = [w for w in warning_lines(err) if "--force" in w]
    assert str(out) in warning and "deletes 1 entry" in warning and "notes.txt" in warning
    assert not (out / "notes.txt").exists() and (out / "model.json").is_file()
    # the folder is its own again: a plain rerun replaces it
    assert fit(cli, data, out)[0] == 0
    assert leftovers(tmp_path) == []


def test_rerun_of_its_own_output_without_user_files_needs_no_force(data, cli, tmp_path):
    out = tmp_path / "model"
    assert fit(cli, data, out)[0] == 0
    code, _, err = fit(cli, data, out)
    assert code == 0, err
    assert "warning" not in err


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_cache_dir_inside_out_is_refused(force, data, cli, tmp_path):
    out = tmp_path / "model"
    assert fit(cli, data, out)[0] == 0
    before = snapshot(out)
    cache = out / "cache"
    code, _, err = fit(cli, data, out, "--cache-dir", cache, *(["--force"] if force else []))
    assert code == 1
    error_line(err, cache, "inside --out")
    assert snapshot(out) == before


# ----------------------------------------------------------------- 3: two fits, one --out

#: large enough that extracting the demo set takes seconds on one thread
SLOW_FIT = ("--image-size", "384", "160", "--coreset-ratio", "0.001", "--coreset-min", "50",
            "--bank", "single")  # fmt: skip


def fit_command(demo_root: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "dualpatch.cli", "fit", "--dataset", "demo",
            "--data", str(demo_root), "--out", str(out), *SLOW_FIT, *map(str, extra)]  # fmt: skip


@pytest.mark.slow
def test_a_second_fit_into_the_same_out_is_refused_while_the_first_runs(
    demo_root, cli_env, tmp_path
):
    out = tmp_path / "model"
    lock = tmp_path / ".model.lock"
    env = {**cli_env, "DUALPATCH_CACHE": str(tmp_path / "cache")}
    first = subprocess.Popen(fit_command(demo_root, out), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not lock.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first fit never took the lock"
            time.sleep(0.02)
        second = subprocess.run(fit_command(demo_root, out), env=env, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert first.poll() is None, "the first fit ended too soon to test the lock"
        assert second.returncode == 1
        error_line(second.stderr, out, "another dualpatch command is writing it", lock)
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    assert (out / "model.json").is_file()
    assert leftovers(tmp_path) == []  # the lock is gone too


# -------------------------------------------------------- 4: a killed fit without a cache


@pytest.mark.slow
def test_killed_fit_without_cache_leaves_its_spill_beside_out_and_the_rerun_clears_it(
    demo_root, cli_env, tmp_path
):
    out, scratch = tmp_path / "model", tmp_path / "tmp"
    scratch.mkdir()
    spill = tmp_path / ".model.spill"
    env = {**cli_env, "TMPDIR": str(scratch)}
    command = fit_command(demo_root, out, "--max-memory", "3GiB", "--no-cache")

    def done() -> int:
        return spill_batches_done(spill)

    status = kill_when(command, env, tmp_path / "first.log", lambda: done() >= 8, "a full batch")
    assert status == -signal.SIGKILL
    assert not out.exists() and done() >= 8
    assert list(scratch.iterdir()) == []  # nothing in the temporary folder, where no run looks
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "model.json").is_file()
    assert not spill.exists()  # resumed, then removed
    assert list(scratch.iterdir()) == []
    assert leftovers(tmp_path) == []


def test_stale_spill_store_of_other_settings_is_removed(data, cli, tmp_path):
    out = tmp_path / "model"
    stale = tmp_path / ".model.spill" / ("0" * 32)
    stale.mkdir(parents=True)
    (stale / "features.bin").write_bytes(b"\0" * 1024)
    code, _, err = fit(cli, data, out, "--max-memory", "2GiB", "--no-cache")
    assert code == 0, err
    assert not (tmp_path / ".model.spill").exists()
    assert (out / "model.json").is_file()


# --------------------------------------------------------------- 12: the spill's checksums


def test_damaged_spill_chunk_is_refused_in_one_line(data, cli, tmp_path):
    cache = tmp_path / "cache"
    args = ("--max-memory", "2GiB", "--cache-dir", cache)
    assert fit(cli, data, tmp_path / "first", *args)[0] == 0
    (store,) = (cache / "spill").glob("*/features.bin")
    meta = json.loads((store.parent / "meta.json").read_text())
    assert meta["chunks"] == [[0, 3, meta["chunks"][0][2]]]  # one batch of 3 images, its SHA-256
    assert len(meta["chunks"][0][2]) == 64
    raw = bytearray(store.read_bytes())
    raw[len(raw) // 2 :] = bytes(len(raw) - len(raw) // 2)  # zero the second half
    store.write_bytes(bytes(raw))
    shutil.rmtree(cache / "banks", ignore_errors=True)  # else the shared bank is read instead
    code, _, err = fit(cli, data, tmp_path / "second", *args)
    assert code == 1
    error_line(err, store, "chunk 1 of 1 (images 1 to 3)", "does not match its checksum",
               store.parent)  # fmt: skip
    assert not (tmp_path / "second").exists()


def test_disk_full_names_the_real_size_and_the_current_option(data, cli, tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    for extra, option in ((("--cache-dir", tmp_path / "cache"), "--cache-dir"),
                          (("--no-cache",), "--out")):  # fmt: skip
        code, _, err = fit(cli, data, tmp_path / "model", "--max-memory", "2GiB", *extra)
        assert code == 1
        line = error_line(err, "no space left on device", f"point {option} at a larger disk")
        assert "0.00" not in line and "KiB needed" in line  # 3 images of 8x4 patches
        assert "--cache " not in line
    assert not (tmp_path / "model").exists() and not (tmp_path / ".model.spill").exists()


# ---------------------------------------------------------------------- 6: feature cache


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.safetensors"))


def test_entry_copied_onto_another_images_key_is_recomputed(data, cli, tmp_path):
    cache = tmp_path / "cache"
    assert fit(cli, data, tmp_path / "clean", "--no-cache")[0] == 0
    assert fit(cli, data, tmp_path / "first", "--cache-dir", cache)[0] == 0
    found = entries(cache)
    assert len(found) >= 3
    # the poisoning of the issue: one image's features written over the others' entries
    for victim in found[1:]:
        shutil.copyfile(found[0], victim)
    shutil.rmtree(cache / "banks", ignore_errors=True)  # else the shared bank is read instead
    code, _, err = fit(cli, data, tmp_path / "second", "--cache-dir", cache)
    assert code == 0, err
    clean = (tmp_path / "clean" / "model.safetensors").read_bytes()
    assert (tmp_path / "second" / "model.safetensors").read_bytes() == clean


def test_verify_cache_refuses_a_forged_entry(data, cli, tmp_path):
    from safetensors.torch import load_file, save_file

    from dualpatch.bank.feature_cache import tensor_digest

    cache = tmp_path / "cache"
    assert fit(cli, data, tmp_path / "first", "--cache-dir", cache)[0] == 0
    # a forgery that knows the format: consistent digest, wrong values
    forged = entries(cache)[0]
    features = load_file(str(forged))["features"] * 0.5
    meta = {"sha256": tensor_digest(features, forged.stem), "key": forged.stem}
    save_file({"features": features}, str(forged), metadata=meta)
    code, out, err = fit(cli, data, tmp_path / "second", "--cache-dir", cache,
                         "--verify-cache", 100)  # fmt: skip
    assert code == 1
    error_line(err, forged, "differ from a re-extraction", cache)
    assert not (tmp_path / "second").exists()
    # an honest cache passes and says how much it checked
    forged.unlink()
    code, out, err = fit(cli, data, tmp_path / "third", "--cache-dir", cache,
                         "--verify-cache", 2)  # fmt: skip
    assert code == 0, err
    assert "verified 2 feature cache entries" in out


def test_new_cache_is_private_and_a_shared_one_warns(data, cli, tmp_path):
    cache = tmp_path / "new" / "cache"
    code, _, err = fit(cli, data, tmp_path / "first", "--cache-dir", cache)
    assert code == 0, err
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    code, _, err = fit(cli, data, tmp_path / "second", "--cache-dir", shared)
    assert code == 0, err
    (warning,) = [w for w in warning_lines(err) if "writable by other users" in w]
    assert str(shared) in warning and "777" in warning and "chmod 700" in warning


# ------------------------------------------------------------------- 11, 18: seeds, folds


def folds_data(root: Path) -> Path:
    """16 images in the MVTec layout, 6 of them defective (each image its own group)."""
    for i in range(6):
        save(root / "train/good" / f"g{i}.png", texture(i))
    for i in range(4):
        save(root / "test/good" / f"tg{i}.png", texture(20 + i))
    for split, name, first in (("train", "t", 10), ("test", "c", 30)):
        for i in range(3):
            save(root / split / "crack" / f"{name}{i}.png", texture(first + i))
            save(root / "ground_truth/crack" / f"{name}{i}_mask.png", box_mask())
    return root


def run_args(data: Path, out: Path, *extra) -> list:
    return ["run", "--dataset", "folder", "--data", data, "--out", out, *FIT, *extra]


def test_duplicate_seeds_are_refused(cli, tmp_path):
    data, out = folds_data(tmp_path / "data"), tmp_path / "results"
    code, _, err = cli(*run_args(data, out, "--seeds", "0,0,1"))
    assert code == 1
    error_line(err, "seeds", "[0, 0, 1]", "distinct")
    assert not out.exists()


@pytest.mark.slow
def test_impossible_folds_are_refused_before_any_work_and_the_advised_k_runs(cli, tmp_path):
    data, out = folds_data(tmp_path / "data"), tmp_path / "results"
    for k in (7, 16, 40):
        code, _, err = cli(*run_args(data, out, "--folds", k))
        assert code == 1
        line = error_line(err, f"folds is {k}", "use --folds 6 or fewer")
        assert "Traceback" not in err and "warning" not in err
        assert line
        assert not out.exists()
    code, stdout, err = cli(*run_args(data, out, "--folds", 6))
    assert code == 0, err
    assert (out / "metrics.json").is_file()


def test_folds_on_data_too_small_for_any_split_are_refused(cli, tmp_path):
    data, out = make_folder(tmp_path / "data"), tmp_path / "results"
    code, _, err = cli(*run_args(data, out, "--folds", 2))
    assert code == 1
    error_line(err, "folds is 2", "no K works for this data", "threshold: none")
    assert not out.exists()


# ------------------------------------------------------------------------------- 22: crops


def crops_folder(root: Path, n: int = 2) -> Path:
    for i in range(n):
        save(root / f"c{i}.png", texture(40 + i, 24, 16))
        save(root / f"c{i}_GT.png", box_mask(24, 16))
    return root


def fit_dual(cli, data, crops, out):
    return cli("fit", "--dataset", "folder", "--data", data, "--bank", "dual", "--defects", "crop",
               "--crops", crops, "--out", out, *FIT)  # fmt: skip


def test_mask_without_its_crop_is_named(data, cli, tmp_path):
    crops = crops_folder(tmp_path / "crops")
    orphan = save(crops / "lost_GT.png", box_mask(24, 16))
    code, _, err = fit_dual(cli, data, crops, tmp_path / "model")
    assert code == 1
    error_line(err, orphan, "no crop lost.* beside it")
    assert not (tmp_path / "model").exists()


def test_crops_csv_with_a_byte_order_mark_is_read(data, cli, tmp_path):
    crops = crops_folder(tmp_path / "crops")
    (crops / "crops.csv").write_text("crop,mask\nc0.png,c0_GT.png\nc1.png,c1_GT.png\n",
                                     encoding="utf-8-sig")  # fmt: skip
    assert (crops / "crops.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    code, _, err = fit_dual(cli, data, crops, tmp_path / "model")
    assert code == 0, err
    assert (tmp_path / "model" / "model.json").is_file()


def test_append_with_the_same_seed_is_refused(data, cli, tmp_path):
    out = tmp_path / "synth"

    def paste(*extra):
        return cli("augment", "paste", "--dataset", "folder", "--data", data, "--n", 2,
                   "--out", out, "--as-crops", "--crop-size", 64, 32, *extra)  # fmt: skip

    code, _, err = paste()
    assert code == 0, err
    code, _, err = paste("--append", "--seed", 5)
    assert code == 0, err
    before = snapshot(out)
    code, _, err = paste("--append", "--seed", 5)
    assert code == 1
    error_line(err, out, "--append would add", "identical to its", "another --seed")
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ 23: messages


def test_text_feature_dim_is_named(model, cli, tmp_path):
    meta = json.loads((model / "model.json").read_text())
    meta["feature_dim"] = str(meta["feature_dim"])
    (model / "model.json").write_text(json.dumps(meta))
    image = save(tmp_path / "a.png", texture(1))
    code, _, err = cli("predict", "--model", model, image, "--out", tmp_path / "pred")
    assert code == 1
    line = error_line(err, model / "model.json")
    assert "does not match" not in line
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_f1_is_na_for_every_run_without_test_defects(cli, tmp_path):
    data = make_folder(tmp_path / "data", train_defects=4)
    shutil.rmtree(data / "test/crack")
    for mask in (data / "ground_truth/crack").glob("c*"):
        mask.unlink()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"name: nodefects\ndataset: folder\ndata: {data}\nout: {tmp_path / 'results'}\n"
        "image_size: [64, 32]\ncoreset_min: 20\n"
        "runs:\n  - {name: single, bank: single}\n  - {name: dual, bank: dual}\n"
    )
    code, stdout, err = cli("run", "--config", config)
    assert code == 0, err
    metrics = json.loads((tmp_path / "results/metrics.json").read_text())
    runs = metrics.get("runs", metrics)
    for name in ("single", "dual"):
        assert runs[name]["f1_at_threshold"] is None, runs[name]
    rows = [line for line in stdout.splitlines() if line.strip("│ ").startswith(("single", "dual"))]
    assert len(rows) == 2 and all(row.count("n/a") == rows[0].count("n/a") for row in rows)
