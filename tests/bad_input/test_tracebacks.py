"""One line, never a traceback: the inputs issue 10 saw reach the user as tracebacks, and a
property test over config values and ``--set`` expressions."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.bad_input import (
    error_line,
    make_folder,
    save,
    texture,
)
from tests.support.ksdd2_fixture import make_ksdd2_zip

# the shared fixtures ``cli`` (the CLI in this process) and ``model_dir`` (a tiny saved model)
# come from tests/bad_input/conftest.py


def nothing_left(tmp_path: Path, *keep: str) -> None:
    """Only the test's own inputs remain: no results folder, config.yaml, dataset.json, run.log."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


# ----------------------------------------------------------------------------- config files

CONFIG_FILES = {
    "non-utf8": b"name: caf\xe9\n",
    "int-key": b"1: 2\n",
    "data-5": b"data: 5\n",
    "out-list": b"out: [1, 2]\n",
    "cache-dir-5": b"cache_dir: 5\n",
    "cache-5": b"cache: 5\n",  # the old name of cache_dir
    "run-name-123": b"runs: [{bank: single, name: 123}]\n",
    "run-name-null": b"runs: [{bank: single, name: null}]\n",
    "augment-n-abc": b"runs: [{bank: dual, augment: {method: paste, n: abc}}]\n",
    "weights-5": b"weights: 5\n",
    "empty": b"",
    "only-a-comment": b"# nothing here\n",
    "train-items-huge": b"train_items: 1-1000000000\n",
    "image-size-huge": b"image_size: [100000, 100000]\n",
    "seed-negative": b"seed: -1\n",
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_config_file_values(name, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default results folder would be ./runs/experiment
    config = tmp_path / "config.yaml"
    config.write_bytes(CONFIG_FILES[name])
    code, _, err = cli("run", "--config", config)
    assert code == 1
    error_line(err)
    nothing_left(tmp_path, "config.yaml")
    assert config.read_bytes() == CONFIG_FILES[name]


@pytest.mark.parametrize(
    "assignment",
    ["data=", "out=", "runs.0.bank.x=1", "data.x=1", "cache_dir=5", "cache=5", "weights=5",
     "runs=true"],  # fmt: skip
)
def test_set_expressions(assignment, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default results folder would be ./runs/experiment
    code, _, err = cli("run", "--set", assignment)
    assert code == 1
    error_line(err, assignment.partition("=")[0].partition(".")[0])
    nothing_left(tmp_path)


@pytest.mark.parametrize("command", ["fit", "augment"])
def test_negative_seed(command, cli, tmp_path):
    """numpy's generators refuse negative seeds: caught as a usage error, before any work."""
    data = make_folder(tmp_path / "data")
    head = ("fit",) if command == "fit" else ("augment", "paste", "--n", 1)
    code, _, err = cli(*head, "--dataset", "folder", "--data", data, "--seed", -1,
                       "--out", tmp_path / "out")  # fmt: skip
    assert code == 2
    error_line(err, "--seed")
    nothing_left(tmp_path, "data")


# ----------------------------------------------------------------------------- data commands


def test_prepare_negative_workers(cli, tmp_path):
    archive = make_ksdd2_zip(tmp_path / "k2.zip", 2, 2)
    code, _, err = cli("data", "prepare", "ksdd2", "--src", archive, "--out", tmp_path / "out",
                       "--workers", -1)  # fmt: skip
    assert code == 1
    error_line(err, "--workers -1")
    nothing_left(tmp_path, "k2.zip")


def test_download_bad_url(cli, tmp_path):
    code, _, err = cli("data", "download", "ksdd2", "--url", "not a url", "--out", tmp_path / "o")
    assert code == 1
    error_line(err, "not a url")
    nothing_left(tmp_path)


@pytest.mark.parametrize("kind", ["folder", "dev-zero", "fifo"])
def test_archive_that_is_not_a_file(kind, cli, tmp_path):
    if kind == "folder":
        archive, what = tmp_path / "k2.zip", "is a folder"
        archive.mkdir()
    elif kind == "dev-zero":
        archive, what = Path("/dev/zero"), "not a regular file"
    else:
        archive, what = tmp_path / "pipe", "not a regular file"
        os.mkfifo(archive)
    code, _, err = cli("data", "download", "ksdd2", "--archive", archive, "--out", tmp_path / "o")
    assert code == 1
    error_line(err, archive, what)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- augment ddpm


@pytest.mark.parametrize(
    ("option", "code_", "what"),
    [
        (("--device", "x"), 1, "--device 'x'"),
        (("--device", "cuda"), 1, "no CUDA GPU"),
        (("--channels", "7,9"), 1, "multiple of 7"),
        (("--steps", "0"), 2, "--steps"),
    ],
    ids=["device-x", "device-cuda", "channels-7-9", "steps-0"],
)
def test_ddpm_options(option, code_, what, cli, tmp_path):
    if option == ("--device", "cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    data = make_folder(tmp_path / "data")
    code, _, err = cli("augment", "ddpm", "--dataset", "folder", "--data", data, "--n", 1,
                       "--steps", option[1] if option[0] == "--steps" else 1,
                       *(option if option[0] != "--steps" else ()),
                       "--out", tmp_path / "synth")  # fmt: skip
    assert code == code_
    error_line(err, what)
    nothing_left(tmp_path, "data")


# ----------------------------------------------------------------------------- model.json


@pytest.mark.parametrize(
    ("key", "value"),
    [("batch_size", 0), ("image_size", [4, 4]), ("image_size", [64]), ("coreset_min", "many")],
    ids=["batch_size-0", "image_size-4-4", "image_size-64", "coreset_min-text"],
)
def test_hand_edited_model_json(key, value, cli, model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    meta = json.loads((model / "model.json").read_text())
    meta["params"][key] = value
    (model / "model.json").write_text(json.dumps(meta))
    image = save(tmp_path / "a.png", texture(1))
    code, _, err = cli("predict", image, "--model", model, "--out", tmp_path / "p")
    assert code == 1
    error_line(err, model / "model.json", key)
    nothing_left(tmp_path, "model", "a.png")


# ----------------------------------------------------------------------------- property test

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.just([]) | st.just({})
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, min_size=1, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, min_size=1, max_size=3),
    max_leaves=6,
)  # fmt: skip
keys = st.sampled_from(
    ["name", "dataset", "data", "out", "train_items", "backbone", "image_size", "normalization",
     "weights", "normal_coreset", "defect_coreset", "coreset_min", "rule", "defects", "reweight",
     "seed", "cache", "inline_images", "coreset_ratio", "cache_dir", "runs", "runs.0",
     "runs.0.bank", "runs.0.name", "runs.0.augment", "runs.1.rule", "bogus", "data.x", ""]
)  # fmt: skip
assignments = st.builds(lambda k, v: f"{k}={json.dumps(v)}", keys, values) | st.text(max_size=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    overrides=st.lists(assignments, max_size=3),
    file_values=st.dictionaries(keys, values, max_size=3),
)
def test_load_config_accepts_or_says_one_line(overrides, file_values, tmp_path_factory):
    """Any config file and ``--set`` list: a validated config, or one ConfigError line."""
    from dualpatch.errors import ConfigError
    from dualpatch.experiment.config import load_config

    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "c.yaml"
    path.write_text(json.dumps({k: v for k, v in file_values.items() if "." not in k}))
    try:
        cfg = load_config(path, overrides)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(cfg["runs"], list) and all(isinstance(r["name"], str) for r in cfg["runs"])
    assert isinstance(cfg["data"], str) and isinstance(cfg["out"], str)


SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=25, deadline=None, suppress_health_check=SLOW_OK)
@given(overrides=st.lists(assignments, max_size=2))
def test_run_check_exit_status_and_nothing_left(overrides, cli, tmp_path_factory):
    """``run --check --set ...``: exit 0, or one line and exit 1 or 2; nothing written."""
    folder = tmp_path_factory.mktemp("run")
    args = [a for o in overrides for a in ("--set", o)]
    code, _, err = cli("run", "--check", *args, "--out", folder / "results")
    assert "Traceback" not in err
    if code != 0:
        assert code in (1, 2)
        assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1, err
    assert list(folder.iterdir()) == []
