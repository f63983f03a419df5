"""Renamed options and keys keep working: the old spelling gives the same result as the new one,
with one ``warning:`` line saying what to write instead. Sizes are H W everywhere; the old
width-first ``data prepare --size W H`` is converted."""

from __future__ import annotations

from PIL import Image

from tests.support.ksdd2_fixture import make_ksdd2_folder

H, W = 64, 32


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def _renamed(err: str) -> list[str]:
    return [line for line in _warnings(err) if "renamed" in line]


def test_data_prepare_old_width_first_size_equals_the_new_option(tmp_path, run_cli):
    raw = tmp_path / "raw"
    make_ksdd2_folder(raw, 4, 2, 1, 1, with_copy_pair=False)
    new = run_cli("data", "prepare", "ksdd2", "--src", raw, "--out", tmp_path / "new",
                  "--image-size", H, W)  # fmt: skip
    old = run_cli("data", "prepare", "ksdd2", "--src", raw, "--out", tmp_path / "old",
                  "--size", W, H)  # fmt: skip
    assert new.returncode == 0 and old.returncode == 0, old.stderr + new.stderr
    assert not _renamed(new.stderr)
    (line,) = _renamed(old.stderr)
    assert "--size W H is renamed --image-size H W" in line and f"{H} {W}" in line
    for split, name in (("train", "10000.png"), ("test", "20000.png")):
        a, b = (tmp_path / d / split / name for d in ("new", "old"))
        assert Image.open(a).size == (W, H)  # PIL sizes are (W, H)
        assert a.read_bytes() == b.read_bytes()


def test_data_crops_size_is_renamed_image_size(tmp_path, run_cli, demo_root):
    args = ["data", "crops", "--dataset", "demo", "--data", demo_root]
    new = run_cli(*args, "--out", tmp_path / "new", "--image-size", H, W)
    old = run_cli(*args, "--out", tmp_path / "old", "--size", H, W)  # same order: H W
    assert new.returncode == 0 and old.returncode == 0, old.stderr + new.stderr
    assert not _renamed(new.stderr) and len(_renamed(old.stderr)) == 1
    assert (tmp_path / "new" / "crops.csv").read_bytes() == (
        tmp_path / "old" / "crops.csv"
    ).read_bytes()
    bad = run_cli(*args, "--out", tmp_path / "bad", "--image-size", 4, 4)
    assert bad.returncode == 1 and "error: --image-size 4 4: each side needs at least" in bad.stderr


def test_fit_old_options_fit_the_same_model_with_one_warning_each(tmp_path, run_cli, demo_root):
    args = ["fit", "--dataset", "demo", "--data", demo_root, "--bank", "single",
            "--coreset-min", 20]  # fmt: skip
    new = run_cli(*args, "--image-size", H, W, "--coreset-ratio", 0.05,
                  "--cache-dir", tmp_path / "cache", "--out", tmp_path / "new")  # fmt: skip
    old = run_cli(*args, "--size", H, W, "--coreset", 0.05,
                  "--cache", tmp_path / "cache", "--out", tmp_path / "old")  # fmt: skip
    assert new.returncode == 0 and old.returncode == 0, old.stderr + new.stderr
    assert not _renamed(new.stderr)
    lines = _renamed(old.stderr)
    assert len(lines) == 3, old.stderr
    for flag, to in (("--size", "--image-size"), ("--coreset", "--coreset-ratio"),
                     ("--cache", "--cache-dir")):  # fmt: skip
        assert sum(f"{flag} is renamed {to}" in line for line in lines) == 1
    same = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("new", "old")]
    assert same[0] == same[1]
