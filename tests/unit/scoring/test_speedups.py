"""Speed-ups of the scoring path change no result: each is checked against the code it replaced."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur as torchvision_blur

from dualpatch.scoring import anomaly_map


@pytest.mark.parametrize("size", [(64, 32), (320, 128)])
@pytest.mark.parametrize("sigma", [4.0, 1.5])
def test_separable_blur_equals_torchvision_2d_blur(size, sigma):
    gen = torch.Generator().manual_seed(0)
    patches = torch.rand(3, size[0] // 8, size[1] // 8, generator=gen) * 5
    up = torch.nn.functional.interpolate(
        patches[:, None], size=size, mode="bilinear", align_corners=False
    )
    kernel = min(2 * int(4 * sigma + 0.5) + 1, 2 * min(size) - 1)
    expected = torchvision_blur(up, [kernel, kernel], [sigma, sigma])[:, 0]
    got = anomaly_map(patches, size, sigma)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # and it is a blur: the map is smoother than its input
    assert got.diff(dim=1).abs().mean() < up[:, 0].diff(dim=1).abs().mean()


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("size", [None, (40, 24), (30, 50)])
def test_8bit_fast_read_equals_float_path(tmp_path, mode, size):
    """Gray and RGB 8-bit images skip the float64 round trip; the pixels stay the same."""
    import numpy as np
    from PIL import Image

    from dualpatch.data.images import _to_float_array, read_image, resize_image

    rng = np.random.default_rng(0)
    shape = (37, 23) if mode == "L" else (37, 23, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / f"img-{mode}.png"
    Image.fromarray(pixels, mode).save(path)
    # the general path, as read_image did it for every mode
    arr = _to_float_array(Image.open(path), path)
    arr = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr
    expected = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if size is not None:
        expected = resize_image(expected, size)
    got = read_image(path, size)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("size", [(64, 32), (320, 128)])
def test_map_without_blur_is_bilinear_upsampling(size):
    """sigma 0: the upsampling matrices alone equal F.interpolate's bilinear upsampling."""
    patches = torch.rand(2, size[0] // 8, size[1] // 8, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.interpolate(
        patches[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(anomaly_map(patches, size, 0.0), expected, rtol=1e-5, atol=1e-6)
