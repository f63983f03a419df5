"""Foreign frames: the right kinds, size, dtype and content, seeded, and readable as samples."""

from __future__ import annotations

import numpy as np
import pytest

from dualpatch.data.foreign import FOREIGN_KINDS, foreign_frames, other_dataset_frames, write_frames
from dualpatch.errors import DataError


def _reference(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # horizontal stripes: rotating them by 90 degrees must change the picture
    stripes = np.zeros((40, 24, 3), np.uint8)
    stripes[::4] = 200
    return [stripes + rng.integers(0, 20, stripes.shape, dtype=np.uint8)]


def test_kinds_size_and_content():
    frames = foreign_frames(_reference(), (32, 16), seed=0)
    assert tuple(frames) == FOREIGN_KINDS
    for image in frames.values():
        assert image.shape == (32, 16, 3) and image.dtype == np.uint8
    assert frames["black"].max() == 0 and frames["white"].min() == 255
    assert np.all(frames["grey"] == 128)
    assert frames["noise"].std() > 60  # uniform in [0, 255]: sd about 74
    # the blur removes the stripes' row-to-row contrast that the reference has
    sharp = np.abs(np.diff(_reference()[0][:32, :16].astype(float), axis=0)).mean()
    assert np.abs(np.diff(frames["blur"].astype(float), axis=0)).mean() < sharp / 10


def test_rotation_turns_the_part():
    frames = foreign_frames(_reference(), (40, 24))
    rotated = frames["rotated"].astype(float)
    # stripes ran along rows; turned 90 degrees they run along columns
    assert np.abs(np.diff(rotated, axis=1)).mean() > np.abs(np.diff(rotated, axis=0)).mean()


def test_seeded():
    a, b = foreign_frames(_reference(), (32, 16), 3), foreign_frames(_reference(), (32, 16), 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = foreign_frames(_reference(), (32, 16), 4)
    assert not np.array_equal(a["noise"], c["noise"])


def test_bad_input_is_refused():
    with pytest.raises(DataError, match="at least one"):
        foreign_frames([], (32, 16))
    with pytest.raises(DataError, match="uint8"):
        foreign_frames([np.zeros((8, 8, 3), np.float32)], (32, 16))
    with pytest.raises(DataError, match="no images"):
        other_dataset_frames([], (32, 16))


def test_written_frames_read_back_as_samples(tmp_path, tiny_normal):
    frames = foreign_frames([tiny_normal[0].image()], (32, 16))
    frames.update(other_dataset_frames(tiny_normal, (32, 16), n=2, prefix="demo/x"))
    samples = write_frames(frames, tmp_path)
    assert len(samples) == len(FOREIGN_KINDS) + 2
    for sample, image in zip(samples, frames.values(), strict=True):
        assert sample.label == 0 and sample.image_path.parent == tmp_path
        assert np.array_equal(sample.image(), image)
