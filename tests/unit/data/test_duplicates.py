"""Leak detection: exact copies across and within the train and test splits."""

from __future__ import annotations

import shutil
import warnings

import pytest

from dualpatch.data import MVTecFolder
from dualpatch.data.duplicates import check_splits, near_duplicates
from dualpatch.errors import DataError
from tests.support.protocol_fixtures import make_folder


@pytest.fixture
def leaky(tmp_path):
    """A folder dataset where test/good/test000.png copies train/good/train003.png and
    train/good/train005.png copies train/good/train001.png."""
    root = make_folder(tmp_path / "data")
    shutil.copy(root / "train/good/train003.png", root / "test/good/test000.png")
    shutil.copy(root / "train/good/train001.png", root / "train/good/train005.png")
    return root


def _open(root):
    return MVTecFolder(root, "train"), MVTecFolder(root, "test")


def test_copy_across_splits_gives_one_line_naming_both_files(leaky):
    train, test = _open(leaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept, report = check_splits(train, test, "warn")
    lines = [str(w.message) for w in caught]
    across = [m for m in lines if "exact copy" in m]
    assert len(across) == 1
    assert "test/good/test000.png" in across[0] and "train/good/train003.png" in across[0]
    assert len(kept) == len(test)  # warn keeps the image
    assert [(a.id, b.id) for a, b in report.across] == [
        ("train/good/train003", "test/good/test000")
    ]


def test_copies_within_a_split_are_reported_once(leaky, tmp_path):
    shutil.copy(leaky / "train/good/train002.png", leaky / "train/good/train006.png")
    train, test = _open(leaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_splits(train, test, "warn")
    within = [str(w.message) for w in caught if "identical images" in str(w.message)]
    assert len(within) == 1
    assert "2 group(s)" in within[0]
    assert "train/good/train001 = train/good/train005" in within[0]


def test_drop_removes_the_test_copy_only(leaky):
    train, test = _open(leaky)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept, report = check_splits(train, test, "drop")
    assert [s.id for s in test if s not in kept.samples] == ["test/good/test000"]
    assert len(kept) == len(test) - 1 and len(train) == len(MVTecFolder(leaky, "train"))
    assert report.dropped == [str(leaky / "test/good/test000.png")]


def test_error_names_both_files(leaky):
    train, test = _open(leaky)
    with pytest.raises(DataError, match=r"test000\.png.*exact copy.*train003\.png"):
        check_splits(train, test, "error")


def test_clean_data_gives_no_warning(tmp_path):
    train, test = _open(make_folder(tmp_path / "clean"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept, report = check_splits(train, test, "error")
    assert report.groups == [] and len(kept) == len(test)


def _reencode(root):
    """test/good/test001 becomes train004 saved as JPEG: other bytes, same content."""
    from PIL import Image

    Image.open(root / "train/good/train004.png").save(root / "test/good/test001.jpg")
    (root / "test/good/test001.png").unlink()


def test_near_duplicate_found_after_reencoding(leaky, tmp_path):
    _reencode(leaky)
    train, test = _open(leaky)
    found = {(a.id, b.id) for a, b, _ in near_duplicates(list(train), list(test))}
    assert ("train/good/train004", "test/good/test001") in found
    # exact copies are not near duplicates (they are reported as exact ones)
    assert ("train/good/train003", "test/good/test000") not in found
    assert len(found) == 1


def test_dataset_json_lists_the_groups(leaky, tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli(
        "run", "--set", "dataset=folder", "--set", f"data={leaky}", "--set", f"out={out}",
        "--set", "image_size=[64, 32]", "--set", "coreset_min=20", "--set", "bootstrap=20",
        "--set", "runs=[{name: single, bank: single}]", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    info = json.loads((out / "dataset.json").read_text())
    groups = [sorted(m["id"] for m in g) for g in info["duplicates"]["exact_groups"]]
    assert sorted(groups) == [
        ["test/good/test000", "train/good/train003"],
        ["train/good/train001", "train/good/train005"],
    ]
    assert info["duplicates"]["across_splits"] == 1
    assert info["duplicates"]["near_copies"]["checked"] is False  # off by default, and says so
    assert info["protocol"]["near_duplicates"] is None
    warn_lines = [ln for ln in r.stderr.splitlines() if "exact copy" in ln]
    assert len(warn_lines) == 1 and warn_lines[0].startswith("warning: ")


def test_run_refuses_a_leak_under_error(leaky, tmp_path, run_cli):
    out = tmp_path / "refused"
    r = run_cli(
        "run", "--set", "dataset=folder", "--set", f"data={leaky}", "--set", f"out={out}",
        "--on-duplicates", "error",
    )  # fmt: skip
    assert r.returncode == 1
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "test000.png" in line and "train003.png" in line
    assert not out.exists()


@pytest.mark.parametrize("policy", ["warn", "drop"])
def test_near_copies_follow_the_duplicate_policy_when_asked(leaky, policy):
    _reencode(leaky)
    train, test = _open(leaky)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        off_kept, off = check_splits(train, test, policy)
        kept, report = check_splits(train, test, policy, near_bits=8)
    assert off.near == [] and off.near_json() == {
        "checked": False, "why": "off by default (near_duplicates: null)"}  # fmt: skip
    assert [(a.id, b.id) for a, b, _ in report.near] == [
        ("train/good/train004", "test/good/test001")
    ]
    near = report.to_json()["near_copies"]
    assert near["checked"] and near["max_bits"] == 8 and near["across_splits"] == 1
    lines = [str(w.message) for w in caught if "near copies" in str(w.message)]
    assert len(lines) == 1 and "test001.jpg" in lines[0] and "train004.png" in lines[0]
    dropped = {s.id for s in test} - {s.id for s in kept}
    if policy == "drop":  # the exact copy and the near copy both leave the test set
        assert dropped == {"test/good/test000", "test/good/test001"}
        assert len(off_kept) == len(test) - 1
    else:
        assert dropped == set()


def test_near_copy_under_error_names_both_files(leaky):
    _reencode(leaky)
    (leaky / "test/good/test000.png").unlink()  # no exact copy left: the near one must stop it
    train, test = _open(leaky)
    check_splits(train, test, "error")  # off: passes
    with pytest.raises(DataError, match=r"test001\.jpg.*near copy.*train004\.png"):
        check_splits(train, test, "error", near_bits=8)


def test_run_counts_near_copies_in_dataset_json(leaky, tmp_path, run_cli):
    import json

    _reencode(leaky)
    out = tmp_path / "near"
    r = run_cli(
        "run", "--set", "dataset=folder", "--set", f"data={leaky}", "--set", f"out={out}",
        "--set", "image_size=[64, 32]", "--set", "coreset_min=20", "--set", "bootstrap=20",
        "--set", "runs=[{name: single, bank: single}]", "--set", "threshold=none",
        "--near-duplicates", "8", "--on-duplicates", "drop", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "dataset.json").read_text())
    near = info["duplicates"]["near_copies"]
    assert near["checked"] and near["across_splits"] == 1
    assert near["pairs"][0]["test"].endswith("test001.jpg")
    assert str(leaky / "test/good/test001.jpg") in info["duplicates"]["dropped_from_test"]
    assert "1 train/test pair(s) within 8 hash bits" in (out / "report.html").read_text()


def test_folds_record_each_folds_near_copies_and_their_total(leaky, tmp_path):
    from dualpatch.experiment.config import load_config
    from dualpatch.experiment.crossval import prepare
    from dualpatch.experiment.runner import Experiment

    _reencode(leaky)
    cfg = load_config(None, ["dataset=folder", f"data={leaky}", f"out={tmp_path / 'f'}",
                             "folds=3", "near_duplicates=8"])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits, info = prepare(Experiment(cfg))
    near = info["duplicates"]["near_copies"]
    assert near["checked"] and set(near["folds"]) == {s.name for s in splits}
    for s in splits:  # each fold's pairs are exactly what the check finds between its two sides
        pairs = {(a.id, b.id) for a, b, _ in near_duplicates(list(s.train), list(s.test), 8)}
        assert {(a.id, b.id) for a, b, _ in s.duplicates.near} == pairs
        assert near["folds"][s.name]["across_splits"] == len(pairs)
    assert near["across_splits"] == sum(f["across_splits"] for f in near["folds"].values())
    assert near["across_splits"] >= 1  # the re-encoded copy straddles at least one fold


@pytest.mark.parametrize("value", ["300", "-1", "abc", "true"])
def test_near_duplicates_out_of_range_is_refused(value):
    from dualpatch.errors import ConfigError
    from dualpatch.experiment.config import load_config

    with pytest.raises(ConfigError, match=r"near_duplicates is .*expected null or a whole number"):
        load_config(None, [f"near_duplicates={value}"])
