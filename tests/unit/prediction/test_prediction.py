"""The one predict loop (``dualpatch.prediction``): batches, dtypes, the refusal of a NaN or
infinite score naming its file, the one result type, and the image batches it hands a scorer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from dualpatch.errors import ConfigError, DataError
from dualpatch.prediction import (
    Prediction,
    Scorer,
    check_images,
    collect,
    of_images,
    predict_batches,
)

SIZE = (6, 4)


@dataclass
class FakeSample:
    """What the loop reads of a sample: its id, label, path and image at a size."""

    id: str
    label: int
    image_path: str

    def image(self, size: tuple[int, int]) -> np.ndarray:
        return np.full((*size, 3), int(self.id), np.uint8)


def _samples(n: int) -> list[FakeSample]:
    return [FakeSample(str(i), i % 2, f"/in/{i}.png") for i in range(n)]


def _by_id(batch: list[FakeSample]) -> tuple[np.ndarray, np.ndarray]:
    """Scores: each sample's id as float32; maps: filled with it."""
    ids = np.array([float(s.id) for s in batch], np.float32)
    return ids, np.broadcast_to(ids[:, None, None], (len(batch), *SIZE)).copy()


def test_batches_of_batch_size_in_order_with_float64_scores_and_float32_maps():
    seen: list[int] = []

    def score(batch):
        seen.append(len(batch))
        return _by_id(batch)

    out = list(predict_batches(score, _samples(7), 3))
    assert seen == [3, 3, 1]
    assert [s.id for batch, _, _ in out for s in batch] == [str(i) for i in range(7)]
    for batch, scores, maps in out:
        assert scores.dtype == np.float64 and maps.dtype == np.float32
        assert scores.tolist() == [float(s.id) for s in batch]
        assert maps.shape == (len(batch), *SIZE)


def test_collect_gives_one_prediction_with_ids_labels_scores_and_maps():
    samples = _samples(5)
    pred = collect(predict_batches(_by_id, samples, 2))
    assert type(pred) is Prediction
    assert pred.ids == ["0", "1", "2", "3", "4"]
    assert pred.labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(pred.image_scores, np.arange(5.0))
    assert pred.anomaly_maps.shape == (5, *SIZE) and pred.anomaly_maps[3].max() == 3.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_score_is_refused_naming_its_file(bad):
    def score(batch):
        scores, maps = _by_id(batch)
        scores[np.array([s.id == "4" for s in batch])] = bad
        return scores, maps

    batches = predict_batches(score, _samples(6), 3)
    next(batches)  # the first batch is fine and is yielded
    with pytest.raises(DataError) as err:
        next(batches)
    assert str(err.value).startswith("/in/4.png: score is ") and "\n" not in str(err.value)


def test_no_samples_is_refused():
    with pytest.raises(DataError, match="no images to score"):
        list(predict_batches(_by_id, [], 4))


class RecordingScorer:
    """A scorer that records the batches it is handed."""

    image_size = SIZE

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def score_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(images)
        return images[:, 0, 0, 0].astype(np.float32), images[..., 0].astype(np.float32)


def test_of_images_hands_the_scorer_uint8_batches_at_its_size():
    scorer = RecordingScorer()
    assert isinstance(scorer, Scorer)
    pred = collect(predict_batches(of_images(scorer), _samples(5), 2))
    assert [b.shape for b in scorer.batches] == [(2, *SIZE, 3), (2, *SIZE, 3), (1, *SIZE, 3)]
    assert all(b.dtype == np.uint8 for b in scorer.batches)
    np.testing.assert_array_equal(pred.image_scores, np.arange(5.0))


def test_check_images_takes_one_image_as_a_batch_and_refuses_other_shapes():
    one = np.zeros((*SIZE, 3), np.uint8)
    assert check_images(one, SIZE).shape == (1, *SIZE, 3)
    for bad in (one.astype(np.float32), np.zeros((1, 5, 4, 3), np.uint8), one[..., :1]):
        with pytest.raises(ConfigError, match=r"images must be \(B, 6, 4, 3\) uint8"):
            check_images(bad, SIZE)
