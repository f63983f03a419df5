"""``predict --ray``: Ray Data scoring equals plain predict; a lost actor's batch is retried and
every image appears exactly once."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from dualpatch import PatchCore
from tests.support.common import tiny_params

ray = pytest.importorskip("ray", reason="Ray is the 'scale' extra")

from dualpatch.cluster.extract import expand_inputs, score_with_ray  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tiny_normal, tmp_path_factory):
    path = tmp_path_factory.mktemp("ray") / "model"
    PatchCore(**tiny_params()).fit(tiny_normal).save(path)
    return path


@pytest.mark.slow
def test_ray_predict_equals_plain_predict(local_ray, tiny_model, tiny_test, tmp_path, cli):
    folder = tmp_path / "images"
    folder.mkdir()
    for s in tiny_test:
        (folder / s.image_path.name).write_bytes(s.image_path.read_bytes())
    inputs = [folder, folder / tiny_test[0].image_path.name]  # an image twice: scored once
    cli("predict", *inputs, "--model", tiny_model, "--out", tmp_path / "plain")
    cli(
        "predict",
        *inputs,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "ray",
        "--ray",
        "local",
        "--ray-actors",
        "2",
    )
    plain = (tmp_path / "plain" / "scores.csv").read_text()
    assert (tmp_path / "ray" / "scores.csv").read_text() == plain
    assert len(plain.splitlines()) == 1 + len(tiny_test)
    maps = sorted(p.name for p in (tmp_path / "plain" / "maps").rglob("*.png"))
    assert len(maps) == len(tiny_test)
    assert sorted(p.name for p in (tmp_path / "ray" / "maps").rglob("*.png")) == maps
    for name in maps:
        assert (tmp_path / "ray" / "maps" / name).read_bytes() == (
            tmp_path / "plain" / "maps" / name
        ).read_bytes()
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "ray" / "scores.parquet").to_pydict()
    rows = list(csv.DictReader(plain.splitlines()))
    assert table["image"] == [r["image"] for r in rows]
    np.testing.assert_allclose(table["score"], [float(r["score"]) for r in rows], rtol=1e-7)


@pytest.mark.slow
def test_lost_actor_batch_is_retried_and_each_image_scored_once(
    local_ray, tiny_model, tiny_test, tmp_path
):
    files = [s.image_path for s in tiny_test]
    marker = tmp_path / "died"
    scores, maps = score_with_ray(tiny_model, files, batch_size=2, _exit_once=str(marker))
    assert marker.exists()  # an actor really died on its first batch
    model = PatchCore.load(tiny_model)
    model.progress = False
    from dualpatch.data import Sample

    want = model.predict([Sample(str(f), f, None, -1) for f in files])
    assert scores.shape == (len(files),) and maps.shape[0] == len(files)
    np.testing.assert_array_equal(scores, want.image_scores)
    np.testing.assert_array_equal(maps, want.anomaly_maps)


def test_expand_inputs_reads_globs_and_list_files(tiny_test, tmp_path):
    from dualpatch.errors import DataError

    folder = tiny_test[0].image_path.parent
    got = expand_inputs([folder / "*.png"])
    assert got and all(f.suffix == ".png" for f in got)
    with pytest.raises(DataError, match="pattern matches no images"):
        expand_inputs([tmp_path / "*.png"])
    bad = tmp_path / "l.txt"
    bad.write_text("missing.png\n")
    with pytest.raises(DataError, match="lists missing.png"):
        expand_inputs([bad])
