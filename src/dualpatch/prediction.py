"""The scorer contract and the one predict loop, in numpy only (no torch: the exported-graph
runtimes score through it without importing torch).

A scorer is anything with ``image_size`` (H, W) and ``score_images(images)``: a (B, H, W, 3)
uint8 RGB batch at ``image_size`` -> (image scores (B,) float32, anomaly maps (B, H, W) float32).
The fitted estimators and the torch, ONNX and OpenVINO runtimes (``serving.runtime``) all are.

``predict_batches`` is the one loop that scores a list of samples batch by batch, whatever scores
them: it takes a per-batch scoring function (``of_images(scorer)`` for any scorer; the estimators
pass their own, which reads cached features instead of images when they have a cache), refuses a
NaN or infinite score, and ``collect`` turns its batches into the one result type, ``Prediction``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dualpatch.errors import ConfigError, DataError


@runtime_checkable
class Scorer(Protocol):
    """What scores images: the estimators and every runtime of ``serving.runtime``."""

    image_size: tuple[int, int]

    def score_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


#: scores one batch of samples: (image scores (B,), anomaly maps (B, H, W))
BatchScore = Callable[[list[Any]], tuple[np.ndarray, np.ndarray]]

#: what ``predict_batches`` yields: (samples, image scores (B,) float64, maps (B, H, W) float32)
Batch = tuple[list[Any], np.ndarray, np.ndarray]


@dataclass
class Prediction:
    """Scores for a list of images: ``image_scores`` (N,), ``anomaly_maps`` (N, H, W) float32,
    and each image's id and label (-1: unknown) in the order scored."""

    ids: list[str]
    image_scores: np.ndarray
    anomaly_maps: np.ndarray
    labels: np.ndarray


def check_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``images`` as a contiguous (B, H, W, 3) uint8 batch at ``size`` (one (H, W, 3) image is a
    batch of one); ConfigError otherwise."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*size, 3):
        raise ConfigError(
            f"images must be (B, {size[0]}, {size[1]}, 3) uint8, got {images.shape} {images.dtype}"
        )
    return np.ascontiguousarray(images)


def of_images(scorer: Scorer) -> BatchScore:
    """Score a batch of samples with ``scorer``: their images, read and resized by the one decode
    path (``Sample.image``), at the scorer's input size."""
    size = (int(scorer.image_size[0]), int(scorer.image_size[1]))

    def score(batch: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return scorer.score_images(np.stack([s.image(size) for s in batch]))

    return score


def refuse_non_finite(samples: Sequence[Any], scores: np.ndarray) -> None:
    """DataError naming the first image whose score is NaN or infinite: such a score sorts
    anywhere and would pass or fail an image silently (every predict and evaluate scores through
    ``predict_batches``, which calls this)."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(scores, dtype=np.float64)))
    if bad.size:
        sample = samples[int(bad[0])]
        raise DataError(
            f"{getattr(sample, 'image_path', sample)}: score is {float(scores[bad[0]])} "
            f"({bad.size} of {len(scores)} images in the batch); the model gives no usable score"
        )


def batches(samples: Sequence[Any], batch_size: int) -> Iterator[list[Any]]:
    """``samples`` in consecutive batches of ``batch_size``; DataError if there are none."""
    if not samples:
        raise DataError("no images to score")
    for start in range(0, len(samples), batch_size):
        yield list(samples[start : start + batch_size])


def predict_batches(score: BatchScore, samples: Sequence[Any], batch_size: int) -> Iterator[Batch]:
    """(samples, image scores (B,) float64, anomaly maps (B, H, W) float32) batch by batch, each
    batch scored by ``score``: memory stays flat however many samples there are."""
    for batch in batches(samples, batch_size):
        scores, maps = score(batch)
        refuse_non_finite(batch, scores)
        yield batch, np.asarray(scores).astype(np.float64), np.asarray(maps).astype(np.float32)


def collect(scored: Iterable[Batch]) -> Prediction:
    """One ``Prediction`` of the batches ``predict_batches`` yields."""
    samples: list[Any] = []
    scores, maps = [], []
    for batch, batch_scores, batch_maps in scored:
        samples += batch
        scores.append(batch_scores)
        maps.append(batch_maps)
    return Prediction(
        [s.id for s in samples],
        np.concatenate(scores),
        np.concatenate(maps),
        np.array([s.label for s in samples]),
    )
