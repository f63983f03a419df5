"""The report's pictures: ROC/PR curves (matplotlib) and anomaly-map overlays (PNG)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.fileio import write_bytes
from dualpatch.report.data import RunResult, slug

MASK_COLOUR = (255, 0, 255)  # magenta: a hue the jet colour map never produces


# --------------------------------------------------------------------------- curves


def _figure_png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # Agg canvas directly: no pyplot state, no GUI backend
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def plot_curves(runs: Sequence[RunResult], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``roc.png`` and ``pr.png`` (image level, all runs on one plot each) to ``out_dir``."""
    from matplotlib.figure import Figure
    from sklearn.metrics import (
        auc,
        average_precision_score,
        precision_recall_curve,
        roc_curve,
    )

    out_dir = Path(out_dir)
    roc_fig, pr_fig = Figure(figsize=(5, 4.4)), Figure(figsize=(5, 4.4))
    roc, pr = roc_fig.add_subplot(), pr_fig.add_subplot()
    roc.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    for run in runs:
        y, s = run.labels, run.scores
        if y.min(initial=0) == y.max(initial=0):  # one class only: both curves are undefined
            roc.plot([], [], label=f"{run.name} (n/a: one class)")
            pr.plot([], [], label=f"{run.name} (n/a: one class)")
            continue
        fpr, tpr, _ = roc_curve(y, s)
        roc.plot(fpr, tpr, lw=1.5, label=f"{run.name} (AUROC {auc(fpr, tpr):.3f})")
        prec, rec, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        pr.step(rec, prec, where="post", lw=1.5, label=f"{run.name} (AP {ap:.3f})")
    if runs:
        prevalence = float(np.mean(runs[0].labels))
        pr.axhline(prevalence, ls=":", c="grey", lw=1, label=f"chance ({prevalence:.3f})")
    for ax, title, xl, yl in (
        (roc, "ROC (image level)", "False positive rate", "True positive rate"),
        (pr, "Precision-recall (image level)", "Recall", "Precision"),
    ):
        ax.set(title=title, xlabel=xl, ylabel=yl, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc else "lower left", fontsize=8)
    paths = {"roc": out_dir / "roc.png", "pr": out_dir / "pr.png"}
    for fig, key in ((roc_fig, "roc"), (pr_fig, "pr")):
        fig.tight_layout()
        write_bytes(paths[key], _figure_png(fig))
    return paths


# --------------------------------------------------------------------------- overlays


def map_range(run: RunResult) -> tuple[float, float]:
    """The colour scale of a run's overlays: ``run.map_range``, else min/max over all its maps."""
    if run.map_range is not None:
        return float(run.map_range[0]), float(run.map_range[1])
    lo, hi = math.inf, -math.inf
    for i in range(len(run.ids)):
        m = run.map(i)
        if m is not None and m.size:
            finite = m[np.isfinite(m)]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (0.0, 1.0) if lo > hi else (lo, hi)


def _resize(a: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    from dualpatch.data.images import resize

    # area averaging when shrinking avoids aliasing the image's fine texture
    return resize(a, hw, "nearest" if nearest else "area")


def render_overlay(
    image: np.ndarray | None,
    amap: np.ndarray,
    mask: np.ndarray | None,
    vrange: tuple[float, float],
    max_side: int | None = None,
) -> np.ndarray:
    """Blend the jet-coloured map (scaled by ``vrange``) onto the image; outline the mask.

    The output has the image's height and width (the map's when there is no image), shrunk with
    the aspect ratio kept when the longer side exceeds ``max_side``.
    """
    from matplotlib import colormaps

    h, w = image.shape[:2] if image is not None else amap.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    amap = _resize(np.nan_to_num(amap.astype(np.float32)), (h, w))
    lo, hi = vrange
    norm = np.clip((amap - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(amap)
    heat = colormaps["jet"](norm)[..., :3]
    if image is None:
        base = np.full((h, w, 3), 0.5)
    else:
        base = _resize(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2), (h, w))
        base = base[..., :3].astype(np.float64) / 255.0
    # Cold regions stay mostly image so the surface remains readable; hot ones are mostly colour.
    alpha = (0.3 + 0.4 * norm)[..., None]
    out = np.clip(np.rint((base * (1 - alpha) + heat * alpha) * 255), 0, 255).astype(np.uint8)
    if mask is not None and mask.any():
        out[_contour(_resize(mask.astype(np.uint8), (h, w), nearest=True) > 0)] = MASK_COLOUR
    return out


def _contour(mask: np.ndarray) -> np.ndarray:
    """The mask outline as a band about 2 px wide (dilation minus erosion), visible when shrunk."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, border_value=0)
    outer = ndimage.binary_dilation(mask)
    return outer & ~inner


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_overlays(
    run: RunResult,
    out_dir: str | os.PathLike[str],
    indices: Iterable[int] | None = None,
    max_side: int | None = 480,
) -> dict[int, Path]:
    """Write one overlay PNG per image (``indices``, default all) into ``out_dir``.

    One colour scale for the whole run (``map_range``), so heat means the same in every image.
    Overlays keep the image's aspect; the longer side is shrunk to ``max_side`` to keep PNGs small.
    Returns ``{image index: path}``; nothing is written when the run has no maps.
    """
    out_dir = Path(out_dir)
    if run.maps is None:
        return {}
    vrange = map_range(run)
    paths = {}
    for i in range(len(run.ids)) if indices is None else indices:
        path = out_dir / f"{i:05d}_{slug(run.ids[i])}.png"
        overlay = render_overlay(run.image(i), run.map(i), run.mask(i), vrange, max_side)
        write_bytes(path, _png(overlay))
        paths[i] = path
    return paths
