"""The few-shot runner's nested rule choice (``rule_selection: inner``): made on the training items
only (a test fold that cannot be read changes nothing), inner fits and their synthetic pools see
only the inner draw's n defects, the same seed gives the same choice, and the chosen rule is the
one the outer evaluation uses."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from dualpatch import DualPatchCore
from dualpatch.augment import read_manifest
from dualpatch.errors import ConfigError
from dualpatch.experiment.config import load_config, resolve_run
from dualpatch.experiment.crossval import prepare
from dualpatch.experiment.fewshot_rule import inner_draws, inner_rules, pick_rule
from dualpatch.experiment.fewshot_runner import draw_splits
from dualpatch.experiment.protocol import Split
from dualpatch.experiment.runner import Experiment
from dualpatch.scoring import DUAL_RULES
from tests.support.protocol_fixtures import make_folder

PASTE = "{name: dual+paste, bank: dual, augment: {method: paste, n: 3}}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("rule") / "data", n_good=8, n_bad_train=6)


def _config(data: Path, out: Path, *extra: str) -> dict:
    return load_config(
        None,
        [f"data={data}", f"out={out}", "dataset=folder", "image_size=[64, 32]", "coreset_min=20",
         "bootstrap=20", "threshold=none", f"cache_dir={out.parent / 'cache'}",
         f"runs=[{{name: dual, bank: dual}}, {PASTE}]", "defect_shots=[1, 2]", "defect_draws=2",
         "rule_selection=inner", *extra],
    )  # fmt: skip


class Untouchable:
    """A test fold that fails the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the rule choice read the test fold ({name})")

    def __iter__(self):
        raise AssertionError("the rule choice iterated the test fold")

    def __len__(self):
        raise AssertionError("the rule choice sized the test fold")


def _splits(cfg: dict, poison: bool) -> tuple[Experiment, list[Split]]:
    """The experiment and its outer splits; ``poison``: each test fold fails when read."""
    exp = Experiment(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits, _ = prepare(exp)
    if poison:
        splits = [Split(s.name, s.train, Untouchable(), s.train_items, s.duplicates)
                  for s in splits]  # fmt: skip
    return exp, splits


def _choose(cfg: dict, run: int, shots, poison: bool = False) -> dict:
    """inner_rules for ``runs[run]`` at ``shots``, as the runner calls it."""
    exp, splits = _splits(cfg, poison)
    pairs = draw_splits(splits, [shots], cfg["defect_draws"], cfg["seed"])[str(shots)]
    settings = resolve_run(cfg, cfg["runs"][run])
    return inner_rules(exp, settings, splits, pairs, shots, cfg["defect_draws"])


def test_choice_never_reads_the_test_fold(data, tmp_path):
    rule_of, records = _choose(_config(data, tmp_path / "a"), 0, 1)
    poisoned_rule_of, poisoned = _choose(_config(data, tmp_path / "b"), 0, 1, poison=True)
    assert poisoned == records and poisoned_rule_of == rule_of
    (record,) = records.values()
    assert set(record["criterion"]) == set(DUAL_RULES)
    assert record["chosen"] == max(record["criterion"], key=record["criterion"].get)
    assert [d["draw"] for d in record["draws"]] == [0, 1]
    assert record["validation_defective"] >= 1


def test_inner_fits_and_pools_see_only_the_inner_draws_defects(data, tmp_path, monkeypatch):
    fits: list[list] = []
    real_fit = DualPatchCore.fit

    def recording_fit(self, normal, defects=()):
        fits.append(list(defects))
        return real_fit(self, normal, defects)

    monkeypatch.setattr(DualPatchCore, "fit", recording_fit)
    cfg = _config(data, tmp_path / "c")
    _, records = _choose(cfg, 1, 2)
    (record,) = records.values()
    split = prepare(Experiment(cfg))[0][0]
    allowed = [set(d.ids) for d in (i.draw for i in inner_draws(split.train, 2, 2, cfg["seed"]))]
    validation = {s.id for s in inner_draws(split.train, 2, 2, cfg["seed"])[0].validation}
    assert [set(d["defects"]) for d in record["draws"]] == allowed
    assert len(fits) == 2
    real_root = data.resolve()
    for defects, ids in zip(fits, allowed, strict=True):
        real = [d for d in defects if real_root in Path(d.image_path).resolve().parents]
        assert {d.id for d in real} == ids and len(real) == 2
        assert not ids & validation  # drawn from the inner training items only
        synthetic = [d for d in defects if d not in real]
        assert synthetic  # the paste pool was used
        real_masks = {Path(d.mask_path).resolve() for d in real}
        for folder in {Path(d.image_path).parent.parent for d in synthetic}:
            assert {Path(r.source_mask).resolve() for r in read_manifest(folder)} <= real_masks


def test_same_seed_same_choice(data, tmp_path):
    first = _choose(_config(data, tmp_path / "d"), 0, 2)
    again = _choose(_config(data, tmp_path / "e"), 0, 2)
    assert first == again


def test_chosen_rule_is_the_one_evaluated(data, tmp_path, monkeypatch):
    # force a choice other than the configured rule, so that "not applied" would show
    monkeypatch.setattr(
        "dualpatch.experiment.fewshot_rule.pick_rule", lambda rows, default: ("seed", {})
    )
    chosen = _run(_config(data, tmp_path / "f", "defect_shots=[1]", "runs=[{bank: dual}]"))
    plain = _run(_config(data, tmp_path / "g", "defect_shots=[1]", "runs=[{bank: dual}]",
                         "rule_selection=none", "rule=seed"))  # fmt: skip
    entry = chosen["dual n=1"]
    assert entry["rule"] == "inner: split seed"
    assert entry["rule_choice"]["split"]["chosen"] == "seed"
    for k in ("image_auroc", "image_ap", "pixel_aupro"):
        assert entry[k] == plain["dual n=1"][k]
    for folder in (tmp_path / "f" / "runs" / "dual_n_1").glob("*draw*"):
        assert DualPatchCore.load(folder / "model").rule == "seed"
    assert chosen["fewshot"]["1"]["rule"] == "inner: split seed"
    assert plain["dual n=1"]["rule"] == "seed" and "rule_choice" not in plain["dual n=1"]


def _run(cfg: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Experiment(cfg).run()
    return json.loads((Path(cfg["out"]) / "metrics.json").read_text())


def test_pick_rule_averages_draws_and_ties_go_to_the_configured_rule():
    rows = [{"patch": {"criterion": 0.9}, "weighted": {"criterion": 0.5}},
            {"patch": {"criterion": 0.1}, "weighted": {"criterion": 0.6}}]  # fmt: skip
    assert pick_rule(rows, "patch") == ("weighted", {"patch": 0.5, "weighted": 0.55})
    tie = [{"seed": {"criterion": 0.7}, "patch": {"criterion": 0.7}}]
    assert pick_rule(tie, "patch")[0] == "patch" and pick_rule(tie, "weighted")[0] == "seed"


def test_rule_selection_applies_to_every_run_and_takes_known_values_only():
    assert load_config(None, ["rule_selection=inner"])["rule_selection"] == "inner"
    with pytest.raises(ConfigError, match="rule_selection"):
        load_config(None, ["defect_shots=[1]", "rule_selection=validation"])


def _ordinary(data: Path, out: Path, *extra: str) -> dict:
    return load_config(
        None,
        [f"data={data}", f"out={out}", "dataset=folder", "image_size=[64, 32]", "coreset_min=20",
         "bootstrap=20", "threshold=none", f"cache_dir={out.parent / 'cache'}", "folds=2",
         "runs=[{bank: dual, rule: weighted}]", *extra],
    )  # fmt: skip


def _choose_ordinary(cfg: dict, poison: bool = False) -> tuple[dict, dict]:
    exp, splits = _splits(cfg, poison)
    settings = resolve_run(cfg, cfg["runs"][0])
    return inner_rules(exp, settings, splits, list(enumerate(splits)), None, 1)


def test_ordinary_run_chooses_per_fold_without_reading_the_test_fold(data, tmp_path):
    cfg = _ordinary(data, tmp_path / "h", "rule_selection=inner")
    rule_of, records = _choose_ordinary(cfg)
    again = _choose_ordinary(_ordinary(data, tmp_path / "i", "rule_selection=inner"), poison=True)
    assert again == (rule_of, records)
    assert set(rule_of) == {"fold0", "fold1"}  # each outer fold its own choice
    safe = {r for r, v in DUAL_RULES.items() if v.safe}
    for record in records.values():
        # the contract-keeping rules and the configured one, never an unasked unsafe rule
        assert set(record["criterion"]) == safe | {"weighted"}
        assert record["chosen"] == max(record["criterion"], key=record["criterion"].get)
        assert record["validation_defective"] >= 1 and len(record["draws"]) == 1


def test_ordinary_run_evaluates_the_chosen_rule(data, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "dualpatch.experiment.fewshot_rule.pick_rule", lambda rows, default: ("seed", {})
    )
    chosen = _run(_ordinary(data, tmp_path / "j", "rule_selection=inner"))
    plain = _run(_ordinary(data, tmp_path / "k", "runs=[{bank: dual, rule: seed}]"))
    entry = chosen["dual"]
    assert entry["rule"] == "inner: fold0 seed, fold1 seed"
    assert {r["chosen"] for r in entry["rule_choice"].values()} == {"seed"}
    for k in ("image_auroc", "image_ap", "pixel_aupro"):
        assert entry[k] == plain["dual"][k]
    assert "rule_choice" not in plain["dual"]


def test_a_choice_made_on_an_older_recipes_images_is_made_again(data, tmp_path, monkeypatch):
    # the saved choice is reused for the same settings, but not once the generator's images change
    from dualpatch import augment
    from dualpatch.experiment import fewshot_rule as module

    cfg = _config(data, tmp_path / "g")
    _choose(cfg, 1, 1)  # runs[1]: dual+paste
    made = []
    monkeypatch.setattr(module, "choose_rule", lambda *a, **k: made.append(1) or {
        "chosen": "patch", "criterion": {"patch": 1.0}})  # fmt: skip
    _choose(cfg, 1, 1)
    assert made == []  # reused
    monkeypatch.setitem(augment.RECIPES, "paste", augment.RECIPES["paste"] + 1)
    _choose(cfg, 1, 1)
    assert made == [1]


def test_no_folds_choice_sees_an_image_of_its_own_test_fold(data, tmp_path, monkeypatch):
    # a cross-fold leak (the pooled set, another fold's training set, a vote over folds) reads no
    # test object, so the poisoned fold above cannot see it: record what each choice fits and scores
    from dualpatch.experiment import fewshot_rule as module
    from dualpatch.experiment.runner import Experiment as Exp

    seen: list[set[str]] = []  # one set per choose_rule call, in fold order
    real_choose, real_fit, real_score = module.choose_rule, Exp.fit_model, module.score_rules

    def choose(*args, **kwargs):
        seen.append(set())
        return real_choose(*args, **kwargs)

    def fit(self, settings, train):
        seen[-1].update(s.id for s in train)
        return real_fit(self, settings, train)

    def score(model, validation, rules):
        seen[-1].update(s.id for s in validation)
        return real_score(model, validation, rules)

    monkeypatch.setattr(module, "choose_rule", choose)
    monkeypatch.setattr(Exp, "fit_model", fit)
    monkeypatch.setattr(module, "score_rules", score)
    cfg = _config(data, tmp_path / "h", "folds=3")
    rule_of, records = _choose(cfg, 0, 1)
    splits = prepare(Experiment(cfg))[0]
    assert len(seen) == len(splits) == len(records) == 3
    for split, ids in zip(splits, seen, strict=True):
        assert ids and not ids & {s.id for s in split.test}, split.name
        assert ids <= {s.id for s in split.train}
    # each outer (fold, draw) split evaluates its own fold's choice: no vote across folds
    assert {name.split("-draw")[0] for name in rule_of} == set(records)
    assert all(rule == records[name.split("-draw")[0]]["chosen"] for name, rule in rule_of.items())
