"""The fast DDPM sampler (tight crop, feathered blend, rejection) and the learned placement."""

from __future__ import annotations

import numpy as np
import pytest

from dualpatch.augment.ddpm import (
    Inpainter,
    feather_weights,
    mask_contrast,
    sample_ddpm,
    train_ddpm,
)
from dualpatch.augment.manifest import read_manifest
from dualpatch.augment.sources import DefectShape, Placement, PlacementPrior
from dualpatch.data import Sample
from tests.support.ddpm import check_outputs, tiny


@pytest.fixture(scope="module")
def model(demo_train, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddpm") / "model"
    train_ddpm(demo_train, folder, steps=1, cfg=tiny(), progress=False)
    return folder


def images(out) -> list[bytes]:
    return [(out / r.image).read_bytes() for r in read_manifest(out)]


def test_fast_sampler_keeps_outside_pixels_and_is_deterministic(model, demo_train, tmp_path):
    kw = dict(progress=False, min_contrast=50.0, tries=2)  # unreachable: every sample retried
    for out, seed in (("a", 0), ("b", 0), ("c", 1)):
        sample_ddpm(model, demo_train, 3, tmp_path / out, seed=seed, **kw)
    rows = check_outputs(tmp_path / "a", 3)  # outside the mask: the normal image, byte for byte
    assert images(tmp_path / "a") == images(tmp_path / "b")
    assert images(tmp_path / "a") != images(tmp_path / "c")
    for r in rows:
        assert r.placement.startswith("near training defect")
        assert "contrast" in r.placement and "min 50.00" in r.placement


def test_first_sampler_is_still_there_and_differs(model, demo_train, tmp_path):
    first = dict(context=None, feather=0.0, placement="source", sample_steps=3)
    sample_ddpm(model, demo_train, 2, tmp_path / "old", progress=False, **first)
    sample_ddpm(model, demo_train, 2, tmp_path / "new", progress=False, sample_steps=3)
    rows = check_outputs(tmp_path / "old", 2)
    assert all(r.placement.startswith("source defect") for r in rows)
    assert images(tmp_path / "old") != images(tmp_path / "new")


def test_tight_context_crops_less(model):
    mask = np.zeros((200, 100), bool)
    mask[90:100, 30:70] = True
    tight, wide = Inpainter(model, context=4), Inpainter(model, context=None)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert area(tight.window(mask)) < area(wide.window(mask))
    y0, x0, y1, x1 = tight.window(mask)
    assert y0 <= 90 and x0 <= 30 and y1 >= 100 and x1 >= 70  # the mask always fits


def test_feather_weights_and_contrast():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    w = feather_weights(mask, 1.0)
    assert (w[~mask] == 0).all()
    assert w[2, 4] == pytest.approx(0.5) and w[4, 4] == 1.0  # edge half, centre whole
    assert (feather_weights(mask, 0) == mask).all()
    flat = np.full((9, 9, 1), 100, np.uint8)
    assert mask_contrast(flat, mask) == 0.0
    dark = flat.copy()
    dark[mask] = 40
    assert mask_contrast(dark, mask) == pytest.approx(60.0)  # ring std 0: |40 - 100| / (0 + 1)


def test_learned_placement_avoids_the_background(tmp_path):
    # Left half background (black), right half part (gray 150); one training centre on each.
    image = np.zeros((100, 100, 1), np.uint8)
    image[:, 50:] = 150
    prior = PlacementPrior(((0.5, 0.2), (0.5, 0.8)), ("bg", "part"), lo=100, hi=200)
    shape = DefectShape(
        np.ones((6, 10), bool), (0, 0, 6, 10), (100, 100), Sample("s", tmp_path, None, 1)
    )
    rng = np.random.default_rng(0)
    reasons = []
    for _ in range(30):
        where, why = prior.place(rng, shape, image)
        assert isinstance(where, Placement)
        assert prior.on_part(image[..., 0].astype(np.float32), where) >= 0.9
        reasons.append(why)
    assert all("training defect part" in r and "on part" in r for r in reasons)
    # With no part anywhere, the best position is kept and the reason says so.
    _, why = prior.place(rng, shape, np.zeros_like(image), tries=5)
    assert "none on part" in why


def test_prior_learns_centres_and_gray_levels_from_the_training_masks(demo_train):
    from dualpatch.augment.sources import defect_shapes

    shapes = defect_shapes(demo_train.defective())
    prior = PlacementPrior.learn(shapes)
    assert len(prior.centres) == len(shapes)
    assert all(0 <= y <= 1 and 0 <= x <= 1 for y, x in prior.centres)
    assert 0 <= prior.lo < prior.hi <= 255


def test_manifests_without_the_placement_column_still_read(tmp_path):
    from dualpatch.augment.manifest import COLUMNS, MANIFEST

    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "imgs/0.png").write_bytes(b"")
    (tmp_path / "masks/0.png").write_bytes(b"")
    old = [c for c in COLUMNS if c != "placement"]
    (tmp_path / MANIFEST).write_text(",".join(old) + "\nimgs/0.png,masks/0.png,a,b,3,\n")
    (row,) = read_manifest(tmp_path)
    assert row.placement == "" and row.seed == 3
