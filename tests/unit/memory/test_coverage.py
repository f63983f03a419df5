"""The image-level check (``bank.coverage``) on hand-made features with known answers: an image
whose every patch is a normal patch, but which lacks a kind of patch every normal image holds,
has missing content equal to the distance of that kind to what it holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualpatch.bank.coverage import (
    _nearest_patch,
    leave_image_out,
    missing_content,
    summarise,
    summarise_image,
    summary_images,
)
from dualpatch.scoring import gated_scores

D = 4


def image(*kinds: tuple[np.ndarray, int], shape=(4, 4)) -> torch.Tensor:
    """(1, h, w, D) features: each kind a row vector repeated ``count`` times, in order."""
    rows = [np.repeat(v[None], n, axis=0) for v, n in kinds]
    flat = np.concatenate(rows)[: shape[0] * shape[1]]
    return torch.tensor(flat, dtype=torch.float32).reshape(1, *shape, D)


PLAIN = np.array([0.0, 0, 0, 0])
EDGE = np.array([3.0, 4, 0, 0])  # 5 away from PLAIN
SPECK = np.array([0.0, 0, 1, 0])  # 1 away from PLAIN


@pytest.fixture
def training():
    """Three normal images: mostly plain surface, each with an edge and a speck."""
    return torch.cat([image((PLAIN, 14), (EDGE, 1), (SPECK, 1)) for _ in range(3)])


def test_an_image_lacking_the_edge_misses_exactly_its_distance(training):
    summaries = summarise(training)
    blank = image((PLAIN, 15), (SPECK, 1))
    # each of its patches is in the training images: a patch score would be 0
    assert float(missing_content(blank, summaries)[0]) == pytest.approx(5.0, abs=1e-5)
    only_plain = image((PLAIN, 16))
    assert float(missing_content(only_plain, summaries)[0]) == pytest.approx(5.0, abs=1e-5)


def test_a_normal_image_misses_nothing(training):
    summaries = summarise(training)
    normal = image((SPECK, 2), (PLAIN, 12), (EDGE, 2))
    assert float(missing_content(normal, summaries)[0]) == pytest.approx(0.0, abs=1e-4)


def test_summaries_read_in_batches_match(training, monkeypatch):
    import dualpatch.bank.coverage as coverage

    whole = summarise(training)
    monkeypatch.setattr(coverage, "READ_BATCH", 2)
    torch.testing.assert_close(summarise(training), whole)


def test_leave_image_out_measures_each_against_the_others(training):
    values = leave_image_out(training, summarise(training))
    assert values.shape == (3,)
    np.testing.assert_allclose(values, 0.0, atol=1e-4)
    odd = torch.cat([training, image((PLAIN, 16))])  # one training image without edge or speck
    values = leave_image_out(odd, summarise(odd))
    assert values[-1] == pytest.approx(5.0, abs=1e-5) and values[:3].max() < 1e-4


def test_leave_image_out_probes_evenly_spaced_images(training, monkeypatch):
    import dualpatch.bank.coverage as coverage

    monkeypatch.setattr(coverage, "LEAVE_OUT_IMAGES", 2)
    odd = torch.cat([training, image((PLAIN, 16))])
    values = leave_image_out(odd, summarise(odd))
    assert values.shape == (2,) and values[-1] == pytest.approx(5.0, abs=1e-5)  # first and last


def test_summary_is_greedy_k_center_from_the_farthest_patch():
    patches = torch.tensor([[0.0, 0], [0.1, 0], [10, 0], [0, 5]])
    picked = summarise_image(patches, count=2)
    # mean (2.525, 1.25): the farthest patch is (10, 0); then the one farthest from it
    assert picked.tolist() == [[10.0, 0.0], [0.0, 5.0]]
    assert summarise_image(patches, count=9).shape == (4, 2)  # fewer patches than asked: all


def test_summary_images_are_capped_and_evenly_spaced(monkeypatch):
    import dualpatch.bank.coverage as coverage

    monkeypatch.setattr(coverage, "SUMMARY_IMAGES", 3)
    assert summary_images(2) == [0, 1]
    assert summary_images(9) == [0, 4, 8]


def test_gated_scores_keep_the_larger_and_map_the_level_to_the_scale():
    scores = torch.tensor([1.0, 0.2, 0.2])
    missing = torch.tensor([0.0, 2.0, 6.0])
    gated = gated_scores(scores, missing, level=2.0, scale=0.5)
    # at the level: the patch score unchanged; three times the level -> three times the scale
    assert gated.tolist() == pytest.approx([1.0, 0.2, 1.5])
    beyond = gated_scores(scores, torch.tensor([0.0, 2.2, 0.0]), level=2.0, scale=0.5)
    assert beyond.tolist() == pytest.approx([1.0, 0.55, 0.2])


def test_missing_content_blocks_give_the_same_answer(training, monkeypatch):
    import dualpatch.bank.coverage as coverage

    summaries = summarise(training)
    query = torch.cat([image((PLAIN, 16)), image((EDGE, 8), (PLAIN, 8))])
    whole = missing_content(query, summaries)
    monkeypatch.setattr(coverage, "SUMMARY_BLOCK", 5)  # not a multiple of R: blocks split images
    torch.testing.assert_close(missing_content(query, summaries), whole)


def _nearest_patch_one_expression(flat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The expression ``_nearest_patch`` computed before it worked in place (and still traces)."""
    sq = (
        (rows * rows).sum(1)[None, :, None]
        + (flat * flat).sum(2)[:, None, :]
        - 2 * torch.einsum("sd,bpd->bsp", rows, flat)
    )
    return sq.clamp_min(0).amin(2).sqrt()


@pytest.mark.parametrize("b,p,s,d", [(1, 5, 7, 3), (3, 100, 300, 16), (8, 640, 512, 152)])
def test_nearest_patch_in_place_gives_the_same_bits(b, p, s, d):
    gen = torch.Generator().manual_seed(b * 1000 + s)
    flat = torch.randn(b, p, d, generator=gen) * 3 + 1
    rows = torch.randn(s, d, generator=gen) * 3 + 1
    rows[0] = flat[0, 0]  # an exact match: a distance that cancels to zero (the clamp)
    assert torch.equal(_nearest_patch(flat, rows), _nearest_patch_one_expression(flat, rows))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace, as the export uses
@pytest.mark.parametrize("block", [4096, 7])
def test_the_traced_check_matches_the_eager_one(training, block):
    """The exported graph's expression (one matrix product with |p|^2 folded in, traced) gives
    the eager in-place computation's missing content, in one block or several."""
    summaries = summarise(training)
    query = torch.cat([image((PLAIN, 16)), image((EDGE, 8), (PLAIN, 8)), training[:2]])
    traced = torch.jit.trace(lambda f: missing_content(f, summaries, block), (query,))
    torch.testing.assert_close(traced(query), missing_content(query, summaries), atol=1e-4, rtol=0)
