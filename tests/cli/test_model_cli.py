"""``dualpatch model``: add-normal (with the guard and --force), add-defects, history, rollback
and prune on a model folder; problems are one ``error:`` line naming the file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualpatch.cli.model import app
from dualpatch.models import versions
from tests.unit.models.online_support import painted, save_dual


@pytest.fixture
def folder(demo_train, tmp_path):
    return save_dual(demo_train, tmp_path / "model")


def model(*args):
    return CliRunner().invoke(app, list(map(str, args)))


def test_add_history_rollback_prune(folder, demo_test, demo_train):
    good = demo_test.normal()[0].image_path
    held = [s.image_path for s in demo_train.normal()[6:10]]
    args = ["add-normal", folder, good, "--by", "key:station-2"]
    r = model(*args, *[x for h in held for x in ("--held-out", h)])
    assert r.exit_code == 0, r.output
    assert "version 2: added 1 image(s), normal bank" in r.output
    assert "re-checked on 4 held-out normal images" in r.output
    bad = demo_test.defective()[0]
    r = model("add-defects", folder, bad.image_path, "--mask", bad.mask_path)
    assert r.exit_code == 0 and "version 3" in r.output and "defect bank" in r.output, r.output

    r = model("history", folder)
    lines = r.output.splitlines()
    assert r.exit_code == 0 and len(lines) == 3
    assert "key:station-2" in lines[1] and good.name in lines[1] and lines[2].startswith("*")

    r = model("rollback", folder, "--to", "1")
    assert r.exit_code == 0 and "version 4: restores version 1" in r.output
    records = json.loads(model("history", folder, "--json").output)
    assert [r["current"] for r in records] == [False, False, False, True]

    r = model("prune", folder, "--keep", "1")
    assert r.exit_code == 0 and "deleted 3 version(s): 1, 2, 3" in r.output
    assert versions.numbers(folder) == [4]


def test_guard_refuses_without_force(folder, demo_train, tmp_path):
    image = painted(demo_train.normal()[20], tmp_path)
    r = model("add-normal", folder, image)
    assert r.exit_code == 1 and not versions.is_versioned(folder)
    (line,) = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert "refused from the normal bank" in line and image.name in line and "force" in line
    r = model("add-normal", folder, image, "--force")
    assert r.exit_code == 0 and "version 2" in r.output
    assert versions.read_record(folder, 2)["added"][0]["forced"] is True


def test_problems_are_one_line_naming_the_file(folder, tmp_path):
    r = model("add-normal", folder, tmp_path / "missing.png")
    assert r.exit_code == 1 and "error:" in r.output and "missing.png" in r.output
    r = model("history", tmp_path)
    assert r.exit_code == 1 and f"{tmp_path}: not a model folder" in r.output
    r = model("rollback", folder, "--to", "2")
    assert r.exit_code == 1 and "has no versions" in r.output


def test_model_is_a_command_group_of_dualpatch(run_cli, folder):
    r = run_cli("model", "history", folder)
    assert r.returncode == 0 and "no versions" in r.stdout


def test_predict_reads_the_current_version(run_cli, folder, demo_test, tmp_path):
    import csv

    from dualpatch import PatchCore

    bad = demo_test.defective()[0]
    assert model("add-defects", folder, bad.image_path, "--mask", bad.mask_path).exit_code == 0
    images = [s.image_path for s in demo_test.defective()[:3]]
    r = run_cli("predict", *images, "--model", folder, "--out", tmp_path / "pred")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "pred" / "scores.csv") as f:
        got = [float(row["score"]) for row in csv.DictReader(f)]
    want = PatchCore.load(folder / "versions/0002").predict(demo_test.defective()[:3])
    old = PatchCore.load(folder / "versions/0001").predict(demo_test.defective()[:3])
    assert got == pytest.approx(want.image_scores.tolist(), rel=1e-6)
    assert got != pytest.approx(old.image_scores.tolist(), rel=1e-6)
