"""``fit --ray`` at an address where no Ray cluster answers: one line, exit 1, before any feature
is extracted; neither the model folder nor the temporary feature cache is left behind."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "address, says",
    [
        ("127.0.0.1:1", "--ray 127.0.0.1:1: no Ray cluster answers there (Connection refused)"),
        ("nowhere", "--ray nowhere: not local, auto or a cluster address like host:6379"),
    ],
    ids=["refused", "malformed"],
)
def test_fit_at_a_bad_ray_address_fails_in_one_line(
    address, says, cli, demo_root, tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray", reason="Ray is the 'scale' extra")
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "model"
    code, _, err = cli("fit", "--dataset", "demo", "--data", demo_root, "--out", out,
                       "--bank", "single", "--image-size", "64", "32", "--no-cache",
                       "--ray", address)  # fmt: skip
    assert code == 1
    assert err.startswith(f"error: {says}") and "\n" not in err.strip()
    assert list(work.iterdir()) == []  # no model, no temporary feature cache
