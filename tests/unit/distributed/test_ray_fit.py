"""``fit --ray``: features extracted on Ray Data into the feature cache give the plain fit's banks
and scores, the fit then extracts nothing itself, and a lost actor's batch is retried with each
image's cache entry written exactly once."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dualpatch import DualPatchCore, PatchCore, events
from dualpatch.bank import feature_cache
from dualpatch.errors import ConfigError
from tests.support.common import tiny_params

pytest.importorskip("ray", reason="Ray is the 'scale' extra")

from dualpatch.cluster.fit import extract_to_cache, fit_on_ray  # noqa: E402


def no_local_extraction(monkeypatch) -> None:
    """From here on, this process may not run the backbone (Ray's actors are other processes)."""

    def refuse(model, samples):
        raise AssertionError(f"the fit extracted {len(samples)} images itself")

    monkeypatch.setattr(feature_cache, "extract", refuse)


@pytest.mark.slow
@pytest.mark.parametrize("max_memory", [None, "8GiB"], ids=["in-memory", "spilled"])
def test_ray_fit_equals_plain_fit_and_reads_every_feature_from_the_cache(
    max_memory, local_ray, tiny_normal, tiny_test, tmp_path, monkeypatch
):
    plain = PatchCore(**tiny_params()).fit(tiny_normal)
    model = PatchCore(**tiny_params(max_memory=max_memory), cache_dir=str(tmp_path / "cache"))
    assert extract_to_cache(model, tiny_normal, actors=2) == len(tiny_normal)
    no_local_extraction(monkeypatch)
    model.fit(tiny_normal)
    torch.testing.assert_close(model.memory_.bank_, plain.memory_.bank_, rtol=0, atol=0)
    assert model.map_scale_ == plain.map_scale_
    monkeypatch.undo()  # scoring the test images extracts them here
    np.testing.assert_array_equal(
        model.predict(tiny_test).image_scores, plain.predict(tiny_test).image_scores
    )


@pytest.mark.slow
def test_dual_ray_fit_without_a_cache_uses_a_temporary_one(
    local_ray, tiny_normal, demo_train, tiny_test, tmp_path
):
    defects = demo_train.defective()[:3]
    plain = DualPatchCore(**tiny_params()).fit(tiny_normal, defects)
    scratch = tmp_path / "scratch"
    model = fit_on_ray(DualPatchCore(**tiny_params()), tiny_normal, defects, scratch=scratch)
    torch.testing.assert_close(model.memory_.bank_, plain.memory_.bank_, rtol=0, atol=0)
    torch.testing.assert_close(
        model.defect_memory_.bank_, plain.defect_memory_.bank_, rtol=0, atol=0
    )
    assert model.cache_dir is None and list(scratch.iterdir()) == []  # removed after the fit
    np.testing.assert_array_equal(
        model.predict(tiny_test).image_scores, plain.predict(tiny_test).image_scores
    )


@pytest.mark.slow
def test_lost_actor_batch_is_retried_and_each_entry_written_once(
    local_ray, tiny_normal, tmp_path, monkeypatch
):
    writes: Counter[str] = Counter()
    save = feature_cache.save_cached

    def counted(path, features):
        writes[path.name] += 1
        return save(path, features)

    monkeypatch.setattr(feature_cache, "save_cached", counted)
    model = PatchCore(**tiny_params(batch_size=2), cache_dir=str(tmp_path / "cache"))
    model.progress = True  # the stage's events
    marker = tmp_path / "died"
    images = [*tiny_normal, tiny_normal[0]]  # an image listed twice: one entry
    seen: list = []
    with events.subscribe(seen.append):
        done = extract_to_cache(model, images, actors=2, _exit_once=str(marker))
    assert done == len(tiny_normal)
    assert marker.exists()  # an actor really died on its first batch
    stage = [e for e in seen if e.name == "features on Ray"]
    assert isinstance(stage[0], events.StageStarted) and stage[0].total == len(tiny_normal)
    assert isinstance(stage[-1], events.StageFinished)
    advanced = [e for e in stage if isinstance(e, events.StageAdvanced)]
    assert advanced[-1].done == len(tiny_normal)  # the retried batch counted once
    entries = sorted(p.name for p in (tmp_path / "cache").glob("*.safetensors"))
    assert len(entries) == len(tiny_normal)
    assert set(writes) == set(entries) and set(writes.values()) == {1}
    want = PatchCore(**tiny_params()).image_features(tiny_normal, None)
    for sample, features in zip(tiny_normal, want, strict=True):
        entry = tmp_path / "cache" / f"{model._cache_key(sample)}.safetensors"
        got = feature_cache.load_cached(entry)  # None unless its digest checks out
        assert got is not None
        torch.testing.assert_close(got, features, rtol=0, atol=0)


def test_cached_images_start_no_ray_job(tiny_normal, tmp_path):
    model = PatchCore(**tiny_params(), cache_dir=str(tmp_path / "cache"))
    model.image_features(tiny_normal, None)  # every entry written by a plain extraction
    # an address where nothing listens: fine, since nothing is left to extract
    assert extract_to_cache(model, tiny_normal, address="127.0.0.1:1") == 0


def test_extraction_on_ray_needs_a_cache(tiny_normal):
    with pytest.raises(ConfigError, match="set cache_dir"):
        extract_to_cache(PatchCore(**tiny_params()), tiny_normal)


@pytest.mark.slow
def test_cli_fit_on_ray_saves_the_plain_fit_model(local_ray, demo_root, tmp_path, cli):
    args = ["fit", "--dataset", "demo", "--data", demo_root, "--bank", "single",
            "--image-size", "64", "32", "--coreset-ratio", "0.01"]  # fmt: skip
    cli(*args, "--out", tmp_path / "plain", "--no-cache")
    ray_args = ["--ray", "local", "--ray-actors", "2", "--max-memory", "8GiB"]
    cli(*args, "--out", tmp_path / "ray", "--no-cache", *ray_args)
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    on_ray = load_file(tmp_path / "ray" / "model.safetensors")
    assert plain.keys() == on_ray.keys()
    for name, tensor in plain.items():
        torch.testing.assert_close(on_ray[name], tensor, rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "ray"]  # no cache left over
