"""A hand-edited or damaged model card is refused at load by ``predict``, ``evaluate`` and
``serve`` alike: exit status 1, one ``error:`` line naming the file, nothing written."""

from __future__ import annotations

import copy
import math
import shutil
import socket
from pathlib import Path

import pytest

from tests.support.bad_input import error_line, make_folder, save, texture
from tests.support.model_files import edit_card, replace_bank


@pytest.fixture(scope="module")
def dual_dir(fitted_dual, tmp_path_factory) -> Path:
    """A dual model with a stored threshold (serve needs one), saved once; tests copy it."""
    model = copy.copy(fitted_dual)
    model.threshold_, model.threshold_rule_ = 1.0, "test"
    return model.save(tmp_path_factory.mktemp("card") / "model")


def _damage(folder: Path, how: str) -> tuple[Path, str]:
    """Damage the model in ``folder``; (the file the error names, a word it must say)."""
    card = folder / "model.json"
    if how == "threshold-text":
        return edit_card(folder, lambda m: m.update(threshold="0.5 or so")), "threshold"
    if how == "threshold-nan":
        return edit_card(folder, lambda m: m.update(threshold=math.nan)), "threshold"
    if how == "eps-text":
        return edit_card(folder, lambda m: m["params"].update(eps="1e-6")), "eps"
    if how == "eps-negative":
        return edit_card(folder, lambda m: m["params"].update(eps=-0.001)), "eps"
    if how == "image-size":
        return edit_card(folder, lambda m: m["params"].update(image_size=[96, 48])), "settings"
    if how == "k":
        return edit_card(folder, lambda m: m["params"].update(num_neighbors=3)), "settings"
    if how == "wrong-width":
        from safetensors.torch import load_file

        bank = load_file(str(folder / "model.safetensors"))["defect_bank"][:, :100].clone()
        replace_bank(folder, bank, "defect_bank")
        return folder / "model.safetensors", "bank width"
    raise ValueError(f"{how} (card {card})")


DAMAGE = ["threshold-text", "threshold-nan", "eps-text", "eps-negative", "image-size", "k",
          "wrong-width"]  # fmt: skip


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("how", DAMAGE)
def test_predict_and_evaluate_refuse_a_damaged_card(how, command, cli, dual_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(dual_dir, model)
    named, word = _damage(model, how)
    out = tmp_path / "out"
    if command == "predict":
        image = save(tmp_path / "a.png", texture(1))
        args = ("predict", image, "--model", model, "--out", out)
    else:
        data = make_folder(tmp_path / "data")
        args = ("evaluate", "--model", model, "--dataset", "folder", "--data", data, "--out", out)
    code, _, err = cli(*args)
    assert code == 1
    error_line(err, named, word)
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", DAMAGE)
def test_serve_refuses_a_damaged_card_before_serving(how, run_cli, dual_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(dual_dir, model)
    named, word = _damage(model, how)
    proc = run_cli("serve", "--model", model, "--port", _free_port(), timeout=120)
    assert proc.returncode == 1
    error_line(proc.stderr, named, word)
    assert "serving on" not in proc.stdout + proc.stderr


def test_predict_refuses_a_non_finite_score_naming_the_image(cli, dual_dir, tmp_path, monkeypatch):
    """Non-finite scores cannot come from a valid card and finite banks; should one appear
    anyway (a backbone gone wrong), it is refused, not written as a verdict."""
    import torch

    from dualpatch.models import DualPatchCore

    real = DualPatchCore._score_features  # the one scoring step of every predict batch

    def second_is_nan(self, feats):
        maps, scores = real(self, feats)
        scores = scores.clone()
        scores[1] = torch.nan
        return maps, scores

    monkeypatch.setattr(DualPatchCore, "_score_features", second_is_nan)
    images = [save(tmp_path / f"in/{i}.png", texture(i)) for i in range(2)]
    out = tmp_path / "pred"
    code, _, err = cli("predict", *images, "--model", dual_dir, "--out", out)
    assert code == 1
    error_line(err, images[1], "score is nan")
    assert not out.exists()


def test_exported_scorer_results_are_checked_too(tmp_path):
    """The exported-graph runtimes score through ``ScorerModel``, which refuses alike."""
    import numpy as np

    from dualpatch.data import Sample
    from dualpatch.errors import DataError
    from dualpatch.serving.runtime import ScorerModel

    class Broken:
        runtime, image_size, kind = "onnx", (64, 32), "single"

        def score_images(self, images):
            n = len(images)
            return np.array([0.5, np.inf], np.float32)[:n], np.zeros((n, 64, 32), np.float32)

    paths = [save(tmp_path / f"{i}.png", texture(i)) for i in range(2)]
    samples = [Sample(str(p), p, None, -1) for p in paths]
    with pytest.raises(DataError, match="score is inf") as err:
        ScorerModel(Broken(), None).predict(samples)
    assert str(err.value).startswith(f"{paths[1]}: ")
