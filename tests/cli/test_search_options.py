"""The faster-search options are one vocabulary (docs/search.md): estimator parameter = YAML key
= ``--set`` key = CLI option, saved in model.json and sealed like every score-changing field."""

from __future__ import annotations

import json

import pytest

from dualpatch import spec
from dualpatch.errors import ConfigError

NAMES = ("coreset_rows", "bank_dtype", "search_dim")


def test_each_option_is_a_parameter_a_yaml_key_and_a_flag():
    from dualpatch import DualPatchCore, PatchCore
    from dualpatch.experiment.config import load_config

    for name in NAMES:
        assert name in spec.MODEL_KEYS and name in PatchCore.PARAMS
        assert name in DualPatchCore().get_params()
    cfg = load_config(None, ["coreset_rows=500", "bank_dtype=float16", "search_dim=32"])
    assert (cfg["coreset_rows"], cfg["bank_dtype"], cfg["search_dim"]) == (500, "float16", 32)
    run = spec.RunSpec.of(cfg)
    params = run.estimator_kwargs()
    assert PatchCore(**run.estimator_kwargs("single")).bank_dtype == "float16"
    assert params["search_dim"] == 32 and params["coreset_rows"] == 500
    for bad in ("coreset_rows=0", "bank_dtype=int8", "search_dim=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])


@pytest.mark.slow
def test_fit_takes_the_options_and_saves_them(run_cli, demo_root, tmp_path):
    out = tmp_path / "model"
    r = run_cli(
        "fit", "--dataset", "demo", "--data", demo_root, "--out", out, "--image-size", "64", "32",
        "--coreset-min", "20", "--coreset-rows", "30", "--bank-dtype", "float16",
        "--search-dim", "8", "--threshold-holdout", "0",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "model.json").read_text())
    assert {k: meta["params"][k] for k in NAMES} == {
        "coreset_rows": 30, "bank_dtype": "float16", "search_dim": 8,
    }  # fmt: skip
    assert meta["tensors"]["normal_bank"][0] == 30
    header = (out / "model.safetensors").read_bytes()[:2000]
    assert b'"dtype":"F16"' in header
    # a hand edit of a search setting changes scores: refused by the seal at load
    meta["params"]["search_dim"] = 4
    (out / "model.json").write_text(json.dumps(meta))
    from dualpatch import PatchCore
    from dualpatch.errors import ModelFileError

    with pytest.raises(ModelFileError):
        PatchCore.load(out)
