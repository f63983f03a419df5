"""``decode_image_bytes`` (serve's uploads) reads bytes exactly as ``read_image`` reads the file,
and checks what a decode may cost from the header."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dualpatch.data.images import (
    DecodeLimits,
    ImageFormatError,
    ImageTooLargeError,
    decode_image_bytes,
    read_image,
)
from dualpatch.errors import DataError


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _cases() -> dict[str, tuple[Image.Image, str, dict]]:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "EXIF-rotated JPEG": (Image.fromarray(rgba[..., :3].copy()), "JPEG", {"exif": exif}),
        "RGBA PNG": (Image.fromarray(rgba, "RGBA"), "PNG", {}),
        "16-bit PNG": (Image.fromarray(rgba[..., 0].astype(np.uint16) * 257), "PNG", {}),
        "palette PNG": (Image.fromarray(rgba[..., :3].copy()).convert("P"), "PNG", {}),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("size", [None, (32, 24)])
def test_bytes_decode_like_the_file(tmp_path, case, size):
    img, fmt, kw = _cases()[case]
    data = _encoded(img, fmt, **kw)
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(data)
    assert np.array_equal(decode_image_bytes(data, "upload", size), read_image(path, size))


def test_decode_cost_counts_the_mode():
    """Same pixels, different cost: RGBA is refused under a budget that RGB fits."""
    limits = DecodeLimits(max_decode_bytes=2**20)  # 1 MiB
    rgb = _encoded(Image.new("RGB", (400, 400)), "PNG")  # 0.46 MiB to decode
    rgba = _encoded(Image.new("RGBA", (400, 400)), "PNG")  # about 2.9 MiB
    assert decode_image_bytes(rgb, "upload", None, limits).shape == (400, 400, 3)
    with pytest.raises(ImageTooLargeError, match=r"upload: a 400x400 RGBA image takes about 3 MiB"):
        decode_image_bytes(rgba, "upload", None, limits)


def test_pixel_cap_format_and_empty_bytes():
    small = DecodeLimits(max_pixels=100, hint="serve --max-pixels")
    data = _encoded(Image.new("L", (20, 20)), "PNG")
    with pytest.raises(ImageTooLargeError, match=r"over the 0.0001 megapixel.*serve --max-pixels"):
        decode_image_bytes(data, "upload", None, small)
    gif = _encoded(Image.new("L", (4, 4)), "GIF")
    with pytest.raises(ImageFormatError, match="unsupported image format GIF"):
        decode_image_bytes(gif, "upload", None, DecodeLimits(formats=frozenset({"PNG"})))
    with pytest.raises(DataError, match=r"upload: file is empty"):
        decode_image_bytes(b"", "upload")
