"""``features.to_tensor``: pixels in, the backbone's input out, whatever the array's flags."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from dualpatch.features.extractor import to_tensor


def test_read_only_pixels_convert_without_a_warning_and_stay_untouched():
    pixels = np.arange(2 * 2 * 4 * 3, dtype=np.uint8).reshape(2, 2, 4, 3) % 24
    pixels.flags.writeable = False  # as a decoded or memory-mapped batch can be
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's non-writable-array warning would fail here
        out = to_tensor(pixels)
    assert out.shape == (2, 3, 2, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 1, 3], torch.tensor([21, 22, 23]) / 255.0)
    assert not pixels.flags.writeable
