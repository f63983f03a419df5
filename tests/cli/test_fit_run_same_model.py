"""Settings -> fitted model is one function (``experiment.build.build_model``): one config fitted
by ``dualpatch fit`` and by ``dualpatch run`` gives the same model, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

#: a dual model whose defect bank is cut into crops (the crops' source images are recorded as
#: provenance, which only ``fit`` did before the one build function)
SETTINGS = {"image_size": [64, 32], "coreset_min": 20, "defects": "crop", "seed": 3}


@pytest.fixture(scope="module")
def both(run_cli, demo_root, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("same")
    cache = tmp / "cache"
    fitted = tmp / "fit"
    r = run_cli(
        "fit", "--dataset", "demo", "--data", demo_root, "--out", fitted, "--image-size", "64",
        "32", "--coreset-min", "20", "--defects", "crop", "--seed", "3",
        "--threshold-holdout", "0", "--cache-dir", cache,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    config = {
        "name": "same", "dataset": "demo", "data": str(demo_root), "out": str(tmp / "run"),
        "cache_dir": str(cache), "threshold": "none", "bootstrap": 10, **SETTINGS,
        "runs": [{"name": "dual", "bank": "dual"}],
    }  # fmt: skip
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    r = run_cli("run", "--config", tmp / "config.yaml")
    assert r.returncode == 0, r.stderr
    return fitted, tmp / "run" / "runs" / "dual" / "model"


def test_fit_and_run_save_byte_identical_banks(both):
    fitted, run = both
    assert (fitted / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()


def test_fit_and_run_write_the_same_model_card(both):
    """model.json is equal field by field, the crops' provenance included."""
    fitted, run = both
    a, b = (json.loads((p / "model.json").read_text()) for p in both)
    assert a["train_sha256"] and a["params"]["seed"] == 3
    assert a == b
