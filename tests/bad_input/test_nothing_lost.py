"""Nothing lost: no command deletes, mixes or overwrites what it did not write (issue 10, 1-5).

Each case is the CLI call a user would make, and checks the exit status, the one ``error:`` line,
and the folder afterwards: the user's files byte for byte, no temporary or half-written output.
"""

from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pytest

from tests.support.bad_input import (
    error_line,
    make_folder,
    snapshot,
)
from tests.support.ksdd2_fixture import make_ksdd2_zip

# the shared fixtures ``cli`` (the CLI in this process) and ``model_dir`` (a tiny saved model)
# come from tests/bad_input/conftest.py


def user_file(folder: Path, name: str = "notes.txt", text: str = "my own notes\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary or old folders a command left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".tmp", ".old")))


# ------------------------------------------------------------------ 1: data download, prepare


@pytest.fixture
def ksdd2_zip(tmp_path) -> Path:
    return make_ksdd2_zip(tmp_path / "k2.zip", 2, 2)


@pytest.mark.parametrize("command", ["download", "prepare"])
def test_out_with_unrelated_files_is_refused(command, ksdd2_zip, cli, tmp_path):
    out = tmp_path / "DIR"
    mine = user_file(out)
    source = ("--archive" if command == "download" else "--src", ksdd2_zip)
    code, _, err = cli("data", command, "ksdd2", *source, "--out", out)
    assert code == 1
    error_line(err, out, "notes.txt", "--force")
    assert snapshot(out) == {"notes.txt": mine.read_bytes()}
    assert leftovers(tmp_path) == []


def test_download_force_replaces_and_a_rerun_replaces_its_own_output(ksdd2_zip, cli, tmp_path):
    out = tmp_path / "DIR"
    user_file(out)
    code, _, err = cli("data", "download", "ksdd2", "--archive", ksdd2_zip, "--out", out, "--force")
    assert code == 0, err
    assert (out / "train").is_dir() and not (out / "notes.txt").exists()
    # its own output: replaced without --force
    code, _, err = cli("data", "prepare", "ksdd2", "--src", out, "--out", tmp_path / "P",
                       "--image-size", "32", "64")  # fmt: skip
    assert code == 0, err
    code, _, err = cli("data", "prepare", "ksdd2", "--src", out, "--out", tmp_path / "P",
                       "--image-size", "32", "64")  # fmt: skip
    assert code == 0, err
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_archive_inside_out_is_never_replaced(force, cli, tmp_path):
    out = tmp_path / "DIR"
    out.mkdir()
    archive = make_ksdd2_zip(out / "KolektorSDD2.zip", 2, 2)
    before = archive.read_bytes()
    args = ("data", "download", "ksdd2", "--archive", archive, "--out", out)
    code, _, err = cli(*args, *(["--force"] if force else []))
    assert code == 1
    error_line(err, archive, "inside --out")
    assert archive.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [
        "KolektorSDD2.zip"
    ]


@pytest.mark.parametrize("command", ["download", "prepare"])
def test_out_that_is_a_file_is_refused(command, ksdd2_zip, cli, tmp_path):
    out = user_file(tmp_path, "DIR")
    source = ("--archive" if command == "download" else "--src", ksdd2_zip)
    code, _, err = cli("data", command, "ksdd2", *source, "--out", out, "--force")
    assert code == 1
    error_line(err, out, "not a folder")
    assert out.read_text() == "my own notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "k2.zip"]  # no .DIR.old


# ----------------------------------------------------------------------------- 2-3: augment


@pytest.fixture
def data(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


def paste(cli, data, out, *extra):
    return cli("augment", "paste", "--dataset", "folder", "--data", data, "--n", 3, "--out", out,
               *extra)  # fmt: skip


def test_augment_refuses_a_folder_with_the_users_images(cli, data, tmp_path):
    out = tmp_path / "synth"
    mine = user_file(out / "imgs", "my-defect.png", "not really a png")
    user_file(out / "masks", "my-defect.png", "not really a png either")
    before = snapshot(out)
    code, _, err = paste(cli, data, out)
    assert code == 1
    error_line(err, out, "imgs", "--force")
    assert snapshot(out) == before and mine.exists()
    code, _, err = paste(cli, data, out, "--force")
    assert code == 0, err
    assert not mine.exists() and len(list((out / "imgs").iterdir())) == 3


def test_augment_rerun_replaces_its_own_output(cli, data, tmp_path):
    out = tmp_path / "synth"
    assert paste(cli, data, out)[0] == 0
    code, _, err = paste(cli, data, out)
    assert code == 0, err
    assert len((out / "manifest.csv").read_text().splitlines()) == 4
    assert leftovers(tmp_path) == []


def test_augment_input_inside_out_is_refused(cli, data, tmp_path):
    code, _, err = paste(cli, data, data.parent, "--force")
    assert code == 1
    error_line(err, data, "inside --out")
    assert (data / "train/good/g0.png").is_file()


def test_ctrl_c_during_augment_keeps_the_old_output_usable(cli, data, tmp_path, monkeypatch):
    from dualpatch.augment.manifest import OutputWriter

    out = tmp_path / "synth"
    assert paste(cli, data, out)[0] == 0
    before = snapshot(out)
    real_add = OutputWriter.add

    def add_then_interrupt(self, *args, **kwargs):
        if len(self.rows) == 2:
            raise KeyboardInterrupt
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(OutputWriter, "add", add_then_interrupt)
    code, _, err = cli("augment", "paste", "--dataset", "folder", "--data", data, "--n", 5,
                       "--out", out, "--seed", 7)  # fmt: skip
    assert code == 130 and "aborted" in err
    assert snapshot(out) == before  # manifest.csv included: the old output is whole
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    code, _, err = cli("fit", "--dataset", "folder", "--data", data, "--bank", "dual",
                       "--augmented", out, "--image-size", 64, 32, "--coreset-min", 20,
                       "--out", tmp_path / "model")  # fmt: skip
    assert code == 0, err


# ----------------------------------------------------------------------------- 4: run --out


def test_run_never_overwrites_the_users_config(cli, tmp_path):
    folder = tmp_path / "project"
    config = user_file(folder, "config.yaml", "# my notes\ndataset: demo\n")
    before = snapshot(folder)
    for extra in ([], ["--force"]):
        code, _, err = cli("run", "--config", config, "--out", folder, *extra)
        assert code == 1
        error_line(err, config)
        assert snapshot(folder) == before


def test_run_refuses_a_foreign_results_folder(cli, tmp_path):
    out = tmp_path / "results"
    user_file(out, "metrics.json", "{}")
    code, _, err = cli("run", "--set", "dataset=demo", "--out", out, "--check")
    assert code == 1
    error_line(err, out, "metrics.json", "--force")
    assert (out / "metrics.json").read_text() == "{}"


# ----------------------------------------------------------------------------- 5: predict


@pytest.fixture
def images(tmp_path) -> Path:
    folder = make_folder(tmp_path / "data") / "test" / "good"
    return folder


@pytest.fixture
def old_prediction(cli, model_dir, images, tmp_path) -> Path:
    out = tmp_path / "pred"
    code, _, err = cli("predict", images, "--model", model_dir, "--out", out)
    assert code == 0, err
    return out


def test_predict_interrupted_leaves_the_old_output(
    cli, model_dir, images, old_prediction, monkeypatch
):
    from dualpatch.serving.predict_io import PredictionWriter

    before = snapshot(old_prediction)

    def interrupt(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(PredictionWriter, "write_batch", interrupt)
    code, _, err = cli("predict", images, "--model", model_dir, "--out", old_prediction)
    assert code == 130
    assert snapshot(old_prediction) == before
    assert leftovers(old_prediction.parent) == []


def test_predict_on_a_full_disk_names_the_path_and_keeps_the_old_output(
    cli, model_dir, images, old_prediction, monkeypatch
):
    from PIL import Image

    before = snapshot(old_prediction)
    real_save = Image.Image.save
    calls = []

    def full_disk(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    code, _, err = cli("predict", images, "--model", model_dir, "--out", old_prediction)
    assert code == 1
    # the first image's grey map was written; its overlay (the second file) hit the full disk
    error_line(err, old_prediction / "overlays" / "tg0.jpg", "No space left")
    assert snapshot(old_prediction) == before
    assert leftovers(old_prediction.parent) == []


def test_predict_refuses_foreign_out_and_inputs_inside_out(cli, model_dir, images, tmp_path):
    out = tmp_path / "mine"
    user_file(out)
    code, _, err = cli("predict", images, "--model", model_dir, "--out", out)
    assert code == 1
    error_line(err, out, "notes.txt")
    code, _, err = cli("predict", images, "--model", model_dir, "--out", images, "--force")
    assert code == 1
    error_line(err, "inside --out")
    assert len(list(images.iterdir())) == 2


def test_predict_scores_csv_records_each_map(cli, model_dir, old_prediction):
    with (old_prediction / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["image"]).name for r in rows] == ["tg0.png", "tg1.png"]
    assert all((old_prediction / r["map"]).is_file() for r in rows)
    record = json.loads((old_prediction / "provenance.json").read_text())
    assert record["model"] == str(model_dir.resolve()) and record["images"] == 2


def test_download_never_deletes_a_user_file_where_the_zip_would_go(cli, tmp_path):
    out = tmp_path / "ksdd2"
    mine = user_file(tmp_path, "ksdd2.zip", "my notes, not a zip\n")
    code, _, err = cli("data", "download", "ksdd2", "--out", out, "--url", "http://127.0.0.1:9/x")
    assert code == 1
    error_line(err, mine, "not a zip")
    assert mine.read_text() == "my notes, not a zip\n" and not out.exists()
