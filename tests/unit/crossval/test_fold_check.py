"""The fold check of ``run --folds K`` (``crossval.check_folds``), below the CLI; the CLI cases are
rows F16 and F17 of docs/bad-input.md (tests/bad_input/test_files_and_cache.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from dualpatch.experiment import crossval, fewshot_rule


def samples(folder: Path, normal: int, defective: int) -> list:
    """Images of their own groups: distinct files (the groups join equal bytes), no shared item."""
    out = []
    for i in range(normal + defective):
        path = folder / f"img{i}.png"
        path.write_bytes(f"image {i}".encode())
        out.append(SimpleNamespace(label=int(i >= normal), image_path=str(path), id=f"img{i}"))
    return out


def test_fewshot_inner_folds_match_the_rule_choice():
    # checking a config imports no fewshot code: the constant is repeated
    assert crossval.FEWSHOT_INNER_FOLDS == fewshot_rule.INNER_FOLDS


def test_inner_folds_follow_the_threshold_and_the_rule_choice():
    base = {"threshold": "validation", "defect_shots": None, "rule_selection": "none"}
    assert crossval.inner_folds(base) == [4]
    assert crossval.inner_folds({**base, "threshold": "none"}) == []
    fewshot = {**base, "threshold": "none", "defect_shots": [1], "rule_selection": "inner"}
    assert crossval.inner_folds(fewshot) == [3]
    # an ordinary run's rule choice splits its folds the same way
    assert crossval.inner_folds({**base, "threshold": "none", "rule_selection": "inner"}) == [3]


def test_fold_problem_names_what_is_missing(tmp_path):
    (tmp_path / "many").mkdir()
    (tmp_path / "few").mkdir()
    many = samples(tmp_path / "many", 10, 6)
    assert crossval.fold_problem(many, 6, 0, [4]) is None
    assert "lack defective" in crossval.fold_problem(many, 7, 0, [4])
    assert "cannot be split 17 ways" in crossval.fold_problem(many, 17, 0, [])
    few = samples(tmp_path / "few", 5, 3)
    assert "inner validation split" in crossval.fold_problem(few, 2, 0, [4])
    assert crossval.fold_problem(few, 2, 0, []) is None
