"""Reading images and masks with validation; every failure names the file in one line."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dualpatch.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

Size = tuple[int, int]  # (height, width)


def _open(path: Path) -> Image.Image:
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    return _decode(path, path)


class ImageTooLargeError(DataError):
    """An image refused from its header: more pixels, or more decoding memory, than allowed."""


class ImageFormatError(DataError):
    """An image in a format that the caller does not accept."""


@dataclass(frozen=True)
class DecodeLimits:
    """What one decode may cost, checked from the header: decoded pixels (None:
    ``DUALPATCH_MAX_PIXELS``), estimated peak decoding memory in bytes (None: no check), the
    accepted formats (Pillow's names; None: any), and how the message says to raise a limit."""

    max_pixels: int | None = None
    max_decode_bytes: int | None = None
    formats: frozenset[str] | None = None
    hint: str = "set DUALPATCH_MAX_PIXELS to raise it"


def _decode(source: Path | io.BytesIO, path: Path | str, limits: DecodeLimits = DecodeLimits()):
    # (no warnings.catch_warnings here to re-issue Pillow's warnings with the file name: it is
    # not thread-safe, and images are read from worker threads)
    try:
        img = Image.open(source)
        _check_header(img, path, limits)  # before decoding: the header says what it costs
        img.load()  # decode now so truncation surfaces here, not later
        # the picture as every viewer shows it: masks are drawn on that, so rotate both alike
        # (in place: otherwise Pillow copies every image that has no rotation to apply)
        ImageOps.exif_transpose(img, in_place=True)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image (unknown format or corrupt)") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own cap, above any of ours
        raise ImageTooLargeError(f"{path}: not a readable image ({_first_line(exc)})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({_first_line(exc)})") from exc
    return img


def decode_image_bytes(
    data: bytes, name: str, size: Size | None = None, limits: DecodeLimits = DecodeLimits()
) -> np.ndarray:
    """An image file's bytes (an upload) as ``read_image`` reads the file: the same header
    checks, EXIF rotation and colour handling; ``name`` names it in errors."""
    if not data:
        raise DataError(f"{name}: file is empty (0 bytes)")
    return image_to_rgb(_decode(io.BytesIO(data), name, limits), name, size)


#: modes whose channels are not (grey or) RGB: reading them as RGB would be silently wrong
_FOREIGN_COLOUR = {"LAB": "CIE L*a*b*", "HSV": "HSV"}


def _check_header(img: Image.Image, path: Path | str, limits: DecodeLimits) -> None:
    from dualpatch.limits import max_pixels

    if limits.formats is not None and img.format not in limits.formats:
        accepted = ", ".join(sorted(limits.formats))
        raise ImageFormatError(f"{path}: unsupported image format {img.format} ({accepted})")
    w, h = img.size
    budget = limits.max_pixels or max_pixels()
    if w * h > budget:
        raise ImageTooLargeError(
            f"{path}: image is {w}x{h} ({w * h / 1e6:.1f} megapixels), over the "
            f"{budget / 1e6:g} megapixel limit per image ({limits.hint})"
        )
    cost = w * h * decode_bytes_per_pixel(img.mode)
    if limits.max_decode_bytes is not None and cost > limits.max_decode_bytes:
        raise ImageTooLargeError(
            f"{path}: a {w}x{h} {img.mode} image takes about {cost / 2**20:.0f} MiB to decode, "
            f"over the {limits.max_decode_bytes / 2**20:g} MiB limit"
        )
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise DataError(
            f"{path}: holds {frames} pages or frames; save the one to score as its own file"
        )
    if img.mode in _FOREIGN_COLOUR:
        raise DataError(
            f"{path}: colours are {_FOREIGN_COLOUR[img.mode]}, not RGB or grey; convert it to RGB"
        )


#: peak bytes per pixel that decoding and ``image_to_rgb`` take for a mode (the decoded image
#: and the conversions alive at once): 8-bit modes are converted to RGB in uint8, 16/32-bit ones
#: go through float64
_BYTES_PER_PIXEL = {"L": 1, "RGB": 3, "1": 4, "CMYK": 8, "YCbCr": 8, "RGBA": 19, "LA": 19}


def decode_bytes_per_pixel(mode: str) -> int:
    """Peak memory per pixel of decoding an image of PIL ``mode`` (an estimate from measurement
    of the conversions; unknown and 16/32-bit modes count as float64 RGB planes)."""
    return _BYTES_PER_PIXEL.get(mode, 19 if mode in ("P", "PA") else 48)


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _to_float_array(img: Image.Image, path: Path) -> np.ndarray:
    """Return HxWxC float32 in [0, 1] whatever the bit depth or mode. Each type is scaled by its
    own range, never by an image's values (a per-image stretch makes a dark and a washed-out
    picture of one part look alike): 16-bit and 32-bit integers by 65535, floats as they are."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            sign = "negative " if arr.min() < 0 else ""
            raise DataError(
                f"{path}: holds {sign}pixel values ({_span(arr)}) outside 0..65535, the range "
                "32-bit integer images are read in (as 16-bit data); save it as 8- or 16-bit"
            )
        arr = (arr / 65535.0)[..., None]
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)[..., None]
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: image contains NaN or infinite values")
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise DataError(
                f"{path}: floating-point pixels span {_span(arr)}, outside 0..1; divide by the "
                "sensor's full scale to get 0..1, or save as 8- or 16-bit"
            )
    else:
        arr = np.asarray(img, dtype=np.float64) / 255.0
        if arr.ndim == 2:
            arr = arr[..., None]
    return arr.astype(np.float32)


def _span(arr: np.ndarray) -> str:
    return f"{float(arr.min()):.6g}..{float(arr.max()):.6g}"


#: 8-bit modes converted to RGB as 8-bit pixels (each conversion is exact, so a float round trip
#: would give the same bytes at several times the memory)
_EIGHT_BIT = ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1", "L;16")


def _to_rgb8(img: Image.Image, path: Path | str) -> Image.Image:
    if img.mode == "CMYK":
        warnings.warn(
            f"{path}: CMYK colours converted to RGB without a colour profile", stacklevel=3
        )
    img = img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB")
    if img.mode == "RGBA":
        # Transparent pixels carry no surface: composite on black, as a camera sees nothing.
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img).convert("RGB")
    return img


def read_image(path: str | os.PathLike[str], size: Size | None = None) -> np.ndarray:
    """Read any 8/16-bit gray, RGB or RGBA image as HxWx3 uint8 RGB, resized to (H, W) if given."""
    path = Path(path)
    return image_to_rgb(_open(path), path, size)


def image_to_rgb(img: Image.Image, path: Path | str, size: Size | None = None) -> np.ndarray:
    """A decoded PIL image as HxWx3 uint8 RGB, resized to (H, W) if given; ``path`` names it in
    errors."""
    if img.mode in _EIGHT_BIT:
        img = _to_rgb8(img, path)
    if img.mode in ("L", "RGB"):
        # 8-bit gray and RGB are already what the float path below would round back to: skip the
        # float64 round trip, and resize a gray image before it becomes three channels (PIL
        # resizes each channel alike, so the pixels are the same)
        if size is not None:
            img = img.resize((size[1], size[0]), Image.BILINEAR) if img.size != size[::-1] else img
        out = np.asarray(img)
        return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2)) if out.ndim == 2 else out
    arr = _to_float_array(img, Path(path))
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[..., :3]
    out = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    if size is not None:
        out = resize_image(out, size)
    return out


#: ``resize``'s interpolations. The PIL filters: PIL is dualpatch's one resize path (the feature
#: path reads images through it, so the golden scores pin it). "area" averages the source pixels
#: an output pixel covers when shrinking (PIL's BOX) and is bilinear when enlarging; "box" is BOX
#: either way.
RESAMPLING = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "box": Image.BOX,
}
#: Point-sampling resizes on OpenCV's grids, computed here bit for bit as ``cv2.resize`` does
#: (INTER_NEAREST, INTER_LINEAR; ``tests/unit/data/test_resize.py`` checks it): the synthetic
#: defects are placed with them (``augment.sources.Placement``), and PIL's filters would place
#: them elsewhere. PIL's NEAREST takes the source pixel under an output pixel's centre,
#: floor((i + 0.5) * scale); OpenCV's INTER_NEAREST takes floor(i * scale), up to one source pixel
#: up-left of it. Their bilinear filters differ too: PIL widens its kernel when shrinking
#: (antialiasing), OpenCV always mixes two pixels with 11-bit fixed-point weights.
OPENCV_GRID = ("opencv-nearest", "opencv-linear")


def resize(array: np.ndarray, size: Size, method: str = "bilinear") -> np.ndarray:
    """``array`` ((H, W) or (H, W, C); uint8, bool or float) resized to ``size`` = (H, W).

    ``method``: a name in ``RESAMPLING`` or "area" (PIL), or one of ``OPENCV_GRID`` (uint8 and
    bool only). Bool arrays (masks) are resized nearest-neighbour, whatever ``method`` says. uint8
    gray, RGB and RGBA go through PIL as they are; any other channel count or dtype channel by
    channel as 32-bit float (uint8 rounded back)."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    if method in OPENCV_GRID:
        return _resize_opencv_grid(array, (h, w), method)
    if array.dtype == bool:
        return resize(array.astype(np.uint8) * 255, size, "nearest") > 127
    if method == "area":
        method = "box" if h <= array.shape[0] and w <= array.shape[1] else "bilinear"
    resample = RESAMPLING[method]
    if array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] in (3, 4)):
        return np.asarray(Image.fromarray(array).resize((w, h), resample))
    planes = np.asarray(array, dtype=np.float32).reshape(*array.shape[:2], -1)
    out = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(planes[..., c])).resize((w, h), resample)
            )
            for c in range(planes.shape[2])
        ],
        axis=2,
    )
    if array.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255)
    return out.astype(array.dtype).reshape(h, w, *array.shape[2:])


def _resize_opencv_grid(array: np.ndarray, size: Size, method: str) -> np.ndarray:
    h, w = size
    if method == "opencv-nearest" or array.dtype == bool:
        rows, cols = _nearest_index(array.shape[0], h), _nearest_index(array.shape[1], w)
        return np.ascontiguousarray(array[rows][:, cols])
    if array.dtype != np.uint8:
        raise ValueError(f"{method} resizes uint8 or bool arrays, not {array.dtype}")
    return _linear_u8(array, h, w).astype(np.uint8).reshape(h, w, *array.shape[2:])


def _nearest_index(n_src: int, n_dst: int) -> np.ndarray:
    """OpenCV's INTER_NEAREST source index of each output index: floor(i * n_src / n_dst), with
    the same double arithmetic (the scale is the reciprocal of n_dst / n_src)."""
    step = 1.0 / (n_dst / n_src)
    return np.minimum(np.floor(np.arange(n_dst) * step).astype(np.intp), n_src - 1)


#: OpenCV's fixed-point scale of INTER_LINEAR weights (INTER_RESIZE_COEF_SCALE, 11 bits)
_ONE = 2048


def _linear_taps(n_src: int, n_dst: int, clamp: bool) -> tuple[np.ndarray, ...]:
    """(first source index, its weight, the next index's weight) of each output index for
    OpenCV's INTER_LINEAR: pixel centres, offsets in float32, weights rounded to 1/2048.
    ``clamp``: an output past an edge takes the edge pixel whole (OpenCV does so along a row;
    along a column it clamps only the index and keeps both weights)."""
    step = 1.0 / (n_dst / n_src)
    pos = ((np.arange(n_dst) + 0.5) * step - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.intp)
    frac = pos - first.astype(np.float32)
    if clamp:
        frac[(first < 0) | (first >= n_src - 1)] = 0
        first = np.clip(first, 0, n_src - 1)
    one = np.float32(_ONE)
    return first, np.rint((1 - frac) * one).astype(np.int64), np.rint(frac * one).astype(np.int64)


def _linear_u8(array: np.ndarray, h: int, w: int) -> np.ndarray:
    """``cv2.resize(array, (w, h), interpolation=INTER_LINEAR)`` of uint8 data, as (h, w, C) int."""
    n_rows, n_cols = array.shape[:2]
    src = array.reshape(n_rows, n_cols, -1).astype(np.int64)
    if (n_rows, n_cols) == (2 * h, 2 * w):  # OpenCV averages 2x2 blocks for an exact halving
        quad = src[0::2, 0::2] + src[0::2, 1::2] + src[1::2, 0::2] + src[1::2, 1::2]
        return (quad + 2) >> 2
    x, a0, a1 = _linear_taps(n_cols, w, clamp=True)
    rows = src[:, x] * a0[:, None] + src[:, np.minimum(x + 1, n_cols - 1)] * a1[:, None]
    y, b0, b1 = _linear_taps(n_rows, h, clamp=False)
    top, bottom = rows[np.clip(y, 0, n_rows - 1)], rows[np.clip(y + 1, 0, n_rows - 1)]
    # the vertical mix rounded as OpenCV's vector code does: 16-bit products, then 2 bits
    mix = ((top >> 4) * b0[:, None, None] >> 16) + ((bottom >> 4) * b1[:, None, None] >> 16)
    return np.clip((mix + 2) >> 2, 0, 255)


#: how every image is resized to a model's size before its features are taken (recorded in exports,
#: whose graphs take images already at that size)
FEATURE_RESIZE = "bilinear"


def resize_image(image: np.ndarray, size: Size) -> np.ndarray:
    """An RGB uint8 image resized bilinearly to ``size`` = (H, W) (the features' input path)."""
    return resize(image, size, FEATURE_RESIZE)


def resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    """A mask as bool, resized nearest-neighbour to ``size`` = (H, W)."""
    return resize(np.asarray(mask).astype(bool), size)


def read_mask(
    path: str | os.PathLike[str],
    image_shape: Size | None = None,
    size: Size | None = None,
    nonbinary: str = "warn",
) -> np.ndarray:
    """Read a label mask as bool (non-zero = defect).

    ``image_shape`` is the original image's (H, W): a mask of another size is an error, because it
    would mark the wrong pixels. Masks that are not binary are binarised (non-zero = defect);
    ``nonbinary`` says whether that is silent (``"ok"``, for datasets whose labels are multi-valued
    by design), a warning (``"warn"``) or an error (``"error"``); ``"threshold"`` (JPEG masks)
    takes values above half the range as defect, silently (the dataset warns once).
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("P", "PA", "LA", "La"):
        img = img.convert("L")  # palette colours, not indices; an alpha channel is not a label
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{path}: mask contains NaN or infinite values")
    if image_shape is not None and tuple(arr.shape[:2]) != tuple(image_shape):
        raise DataError(
            f"{path}: mask is {arr.shape[1]}x{arr.shape[0]} but its image is "
            f"{image_shape[1]}x{image_shape[0]} (WxH)"
        )
    if nonbinary == "threshold":  # JPEG: compression blurs 0/255, so half range is the cut
        top = np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1.0
        mask = arr > top / 2
        return resize_mask(mask, size) if size is not None else mask
    values = np.unique(arr)
    if nonbinary != "ok" and (len(values) > 2 or (len(values) == 2 and values[0] != 0)):
        msg = (
            f"{path}: mask is not binary ({len(values)} distinct values); "
            "non-zero is taken as defect"
        )
        if nonbinary == "error":
            raise DataError(msg)
        warnings.warn(msg, stacklevel=2)
    mask = arr > 0
    if size is not None:
        mask = resize_mask(mask, size)
    return mask


def image_shape(path: str | os.PathLike[str]) -> Size:
    """(H, W) of an image without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: a quarter turn
                w, h = h, w
            return h, w
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image (unknown format or corrupt)") from exc
    except (OSError, Image.DecompressionBombError) as exc:
        if not path.exists():
            raise DataError(f"{path}: file not found") from exc
        raise DataError(f"{path}: not a readable image ({_first_line(exc)})") from exc


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
