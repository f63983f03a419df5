"""One-line errors of the large-data options: a bad ``--max-memory``, ``--knn faiss-*`` without
faiss, and a ``--ray`` address where no cluster answers; nothing is written."""

from __future__ import annotations

import sys
import warnings

import pytest

from dualpatch import PatchCore
from dualpatch.cli.main import main
from tests.support.common import tiny_params


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr("sys.argv", ["dualpatch", *map(str, args)])
    with pytest.raises(SystemExit) as status:
        main()
    return status.value.code, capsys.readouterr().err.strip()


def fit_args(demo_root, out, *extra) -> list:
    return ["fit", "--dataset", "demo", "--data", demo_root, "--out", out, "--bank", "single",
            "--image-size", "64", "32", *extra]  # fmt: skip


def test_bad_max_memory_on_the_command_line(demo_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model"
    code, err = run_cli(monkeypatch, capsys, *fit_args(demo_root, out, "--max-memory", "2 kg"))
    assert code == 1
    assert err == "error: max_memory '2 kg' is not a size like 2GiB or 512MiB"
    assert not out.exists()


def test_faiss_missing_fails_before_the_fit(demo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    out = tmp_path / "model"
    code, err = run_cli(monkeypatch, capsys, *fit_args(demo_root, out, "--knn", "faiss-ivf"))
    assert code == 1
    assert err == "error: knn 'faiss-ivf' needs faiss: pip install 'dualpatch[scale]' (faiss-cpu)"
    assert not out.exists()


@pytest.fixture(scope="module")
def saved_model(tiny_normal, tmp_path_factory):
    path = tmp_path_factory.mktemp("scale-errors") / "model"
    PatchCore(**tiny_params()).fit(tiny_normal).save(path)
    return path


def predict_on_ray(address, model, tiny_test, tmp_path, monkeypatch, capsys) -> tuple[int, str]:
    """``predict IMAGE --ray ADDRESS``: (exit status, stderr); no output folder may be left."""
    out = tmp_path / "pred"
    args = ["predict", tiny_test[0].image_path, "--model", model, "--out", out, "--ray", address]
    code, err = run_cli(monkeypatch, capsys, *args)
    assert not out.exists()
    return code, err


def another_ray_runs_here() -> bool:
    """Whether some process on this machine runs a Ray head (GCS), which ``--ray auto`` joins:
    Ray finds it by scanning processes, so a parallel job's local Ray breaks the premise."""
    from ray._private.services import find_gcs_addresses

    return bool(find_gcs_addresses())


@pytest.mark.parametrize(
    "address, says",
    [
        ("127.0.0.1:1", "--ray 127.0.0.1:1: no Ray cluster answers there (Connection refused)"),
        ("nowhere", "--ray nowhere: not local, auto or a cluster address like host:6379"),
        ("auto", "--ray auto: Could not find any running Ray instance"),
    ],
    ids=["refused", "malformed", "auto-without-cluster"],
)
def test_bad_ray_address_fails_in_one_line(
    address, says, saved_model, tiny_test, tmp_path, monkeypatch, capsys
):
    ray = pytest.importorskip("ray", reason="Ray is the 'scale' extra")
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if address == "auto" and another_ray_runs_here():
        pytest.skip("another process runs Ray on this machine: --ray auto would rightly join it")
    code, err = predict_on_ray(address, saved_model, tiny_test, tmp_path, monkeypatch, capsys)
    assert code == 1
    assert err.startswith(f"error: {says}") and "\n" not in err


def test_ray_missing_says_how_to_install_it(saved_model, tiny_test, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code, err = predict_on_ray("local", saved_model, tiny_test, tmp_path, monkeypatch, capsys)
    assert code == 1
    assert err == "error: --ray needs Ray: pip install 'dualpatch[scale]'"
