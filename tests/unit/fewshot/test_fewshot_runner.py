"""The few-shot runner (``defect_shots``): per-n metrics, exactly n real defects in each dual fit,
synthetic sources that see only those n, reproducible draws, and bad values refused."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from dualpatch import DualPatchCore
from dualpatch.augment import read_manifest
from dualpatch.errors import ConfigError
from dualpatch.experiment.config import load_config
from dualpatch.experiment.runner import Experiment
from tests.support.protocol_fixtures import make_folder

RUNS = (
    "runs=[{name: single, bank: single}, {name: dual, bank: dual},"
    " {name: dual+paste, bank: dual, augment: {method: paste, n: 3}},"
    " {name: dual+feature, bank: dual, defect_feature_augment: {method: interpolate}}]"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("fs") / "data", n_good=8, n_bad_train=4)


def _config(data: Path, out: Path, *extra: str) -> dict:
    return load_config(
        None,
        [f"data={data}", f"out={out}", "dataset=folder", "image_size=[64, 32]", "coreset_min=20",
         "bootstrap=20", "threshold=none", f"cache={out.parent / 'cache'}", RUNS,
         "defect_shots=[1, 2, all]", "defect_draws=2", *extra],
    )  # fmt: skip


def _run(cfg: dict, monkeypatch=None, fits: list | None = None) -> dict:
    if monkeypatch is not None:
        real_fit = DualPatchCore.fit

        def recording_fit(self, normal, defects=()):
            defects = list(defects)
            fits.append(defects)
            return real_fit(self, normal, defects)

        monkeypatch.setattr(DualPatchCore, "fit", recording_fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Experiment(cfg).run()
    return json.loads((Path(cfg["out"]) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def first(data, tmp_path_factory):
    fits: list[list] = []
    mp = pytest.MonkeyPatch()
    try:
        out = tmp_path_factory.mktemp("run") / "a"
        metrics = _run(_config(data, out), mp, fits)
    finally:
        mp.undo()
    return out, metrics, fits


def test_metrics_per_run_and_n(first):
    out, metrics, _ = first
    advice = metrics.pop("fewshot")
    expected = {"single"} | {
        f"{run} n={n}" for run in ("dual", "dual+paste", "dual+feature") for n in (1, 2, "all")
    }
    assert set(metrics) == expected
    assert metrics["dual n=2"]["n_evaluations"] == 2  # one split x one seed x two draws
    assert metrics["dual n=all"]["n_evaluations"] == 1  # every defect: one draw only
    assert metrics["dual+paste n=1"]["comparisons"]["image_auroc"]["against"] == "dual n=1"
    assert metrics["dual n=1"]["against_single"]["image_ap"]["against"] == "single"
    assert set(advice) == {"1", "2", "all"}
    assert advice["1"]["use"] in metrics
    csv = (out / "metrics.csv").read_text().splitlines()
    assert csv[0].startswith("run,defect_shots,image_auroc,")
    assert "dual+feature,2," in "\n".join(csv)
    page = (out / "report.html").read_text()
    assert "Few real defects" in page and (out / "curves" / "fewshot.png").is_file()
    # the advice is read from test-fold comparisons: the JSON and the page say so
    assert all(a["chosen_on"].startswith("test folds, uncorrected") for a in advice.values())
    assert 'id="fewshot-advice-evidence">Read from the test folds, uncorrected' in page


def test_each_dual_fit_gets_exactly_n_real_defects_and_only_their_copies(first, data):
    out, _, fits = first
    real_root = data.resolve()
    counts = []
    for defects in fits:
        real = [d for d in defects if real_root in Path(d.image_path).resolve().parents]
        synthetic = [d for d in defects if d not in real]
        counts.append(len(real))
        real_masks = {Path(d.mask_path).resolve() for d in real}
        for folder in {Path(d.image_path).parent.parent for d in synthetic}:
            sources = {Path(r.source_mask).resolve() for r in read_manifest(folder)}
            assert sources <= real_masks  # the pool saw only this fit's drawn defects
    # 3 dual runs x (2 draws at n=1, 2 at n=2, 1 at all = 4 defects); rules share no fit here
    assert sorted(counts) == sorted([1, 1, 2, 2, 4] * 3)


def test_same_seed_same_figures(first, tmp_path):
    _, metrics, _ = first
    again = _run(_config(_data_of(first), tmp_path / "b"))
    for name in ("dual n=1", "dual+paste n=2", "dual+feature n=all", "single"):
        for k in ("image_auroc", "image_ap", "pixel_aupro"):
            assert again[name][k] == metrics[name][k], (name, k)


def _data_of(first) -> Path:
    out = first[0]
    return Path(json.loads((out / "dataset.json").read_text())["data"])


def test_another_draw_seed_draws_other_defects(first, tmp_path):
    _, metrics, _ = first
    other = _run(_config(_data_of(first), tmp_path / "c", "seed=5"))
    assert any(
        other[f"dual n={n}"]["image_ap"] != metrics[f"dual n={n}"]["image_ap"]
        or other[f"dual n={n}"]["pixel_aupro"] != metrics[f"dual n={n}"]["pixel_aupro"]
        for n in (1, 2)
    )


@pytest.mark.parametrize(
    "value", ["[0]", "[1, 1]", "some", "[1.5]", "[true]", "[]", "[-2]", "{a: 1}"]
)
def test_bad_defect_shots_refused_in_one_line(value, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"defect_shots={value}"])
    message = str(err.value)
    assert "\n" not in message and message.startswith("config: defect_shots is ")


def test_more_shots_than_defects_refused_before_any_fit(data, tmp_path, monkeypatch):
    fits: list = []
    with pytest.raises(ConfigError, match="defect_shots: 9 asked, but the training split has 4"):
        _run(_config(data, tmp_path / "d", "defect_shots=[1, 9]"), monkeypatch, fits)
    assert fits == []


def test_run_keys_need_the_experiment_setting():
    with pytest.raises(ConfigError, match="has no defect_shots"):
        load_config(None, ["runs=[{name: dual, bank: dual, defect_shots: [1]}]"])
    with pytest.raises(ConfigError, match="defect_feature_augment: unknown method"):
        load_config(None, ["runs=[{bank: dual, defect_feature_augment: {method: blur}}]"])
    cfg = load_config(None, ["defect_shots=5"])
    assert cfg["defect_shots"] == [5]


def test_sdxl_without_weights_is_skipped_with_a_line(data, tmp_path, caplog):
    cfg = _config(data, tmp_path / "e", "defect_shots=[1]", "defect_draws=1",
                  "runs=[{name: dual, bank: dual}, {name: dual+sdxl, bank: dual,"
                  " augment: {method: sdxl, n: 2}}]")  # fmt: skip
    with caplog.at_level("WARNING", logger="dualpatch.experiment.runner"):
        metrics = _run(cfg)
    assert "dual+sdxl n=1" not in metrics and "dual n=1" in metrics
    assert any("dual+sdxl: skipped: no SDXL weights" in r.getMessage() for r in caplog.records)


def test_cli_flag_sets_and_checks_defect_shots(run_cli, tmp_path):
    ok = run_cli("run", "--defect-shots", "1,2,all", "--defect-draws", "2", "--check",
                 "--out", tmp_path / "ok")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("run", "--defect-shots", "0,2", "--check", "--out", tmp_path / "bad")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: config: defect_shots is [0, 2]; expected null or a list of distinct whole numbers"
        " >= 1 and/or all, e.g. [1, 2, 5, 10, all]"
    ]


def test_folds_keep_one_folder_per_fold_and_draw(data, tmp_path):
    cfg = _config(data, tmp_path / "f", "folds=2", "defect_shots=[1]", "defect_draws=1",
                  "runs=[{name: single, bank: single}, {name: dual, bank: dual}]")  # fmt: skip
    metrics = _run(cfg)
    runs = tmp_path / "f" / "runs"
    assert sorted(p.name for p in (runs / "single").glob("fold*")) == ["fold0-seed0", "fold1-seed0"]
    assert sorted(p.name for p in (runs / "dual_n_1").glob("fold*")) == [
        "fold0-draw0-seed0",
        "fold1-draw0-seed0",
    ]
    assert metrics["single"]["n_evaluations"] == 2 and metrics["dual n=1"]["n_evaluations"] == 2


def _advice_case(paste_verdict: str) -> dict:
    """goal_and_advice on hand-made figures at n = 1 where only the test-fold verdict of
    dual+paste against dual differs."""
    from dualpatch.experiment.fewshot_runner import goal_and_advice

    entries = [
        {"name": "single", "run": "single", "shots": None, "bank": "single", "real_only": False},
        {"name": "dual n=1", "run": "dual", "shots": 1, "bank": "dual", "real_only": True},
        {"name": "dual+paste n=1", "run": "dual+paste", "shots": 1, "bank": "dual",
         "real_only": False},
    ]  # fmt: skip
    verdict = {"verdict": paste_verdict}
    metrics = {
        "single": {"image_auroc": 0.80, "image_ap": 0.60},
        "dual n=1": {"image_auroc": 0.90, "image_ap": 0.80, "rule": "patch"},
        "dual+paste n=1": {"image_auroc": 0.91, "image_ap": 0.81, "rule": "patch",
                           "comparisons": {"image_auroc": verdict, "image_ap": verdict}},
    }  # fmt: skip
    return goal_and_advice(metrics, entries)["1"]


def test_advice_read_from_test_fold_verdicts_says_so():
    # the same means, only the test-fold verdict differs: the advice follows it, so it is a test
    # reading and must carry the mark (an unmarked pick from test folds fails here)
    won, noise = _advice_case("dual+paste n=1 wins"), _advice_case("within noise")
    assert won["use"] == "dual+paste n=1" and noise["use"] == "dual n=1"
    for advice in (won, noise):
        assert advice["chosen_on"].startswith("test folds, uncorrected")
        assert "no correction for multiple comparisons" in advice["chosen_on"]
