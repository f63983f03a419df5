"""The results report: ROC/PR curves, heatmap overlays, per-image scores and a static HTML page.

Everything is written atomically (``dualpatch.fileio``); ``report.html`` needs no server, no
JavaScript and no network: images are relative files inside the results folder, or inline.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .fileio import write_bytes, write_text

#: A per-image array source: an (N, ...) array, a list of arrays, or ``i -> array`` (lazy loading).
ArraySource = np.ndarray | Sequence[np.ndarray] | Callable[[int], np.ndarray]

#: Metric key -> (column header, direction: +1 higher is better, -1 lower is better, 0 neither).
METRICS: dict[str, tuple[str, int]] = {
    "image_auroc": ("Image AUROC", 1),
    "pixel_auroc": ("Pixel AUROC", 1),
    "image_ap": ("Image AP", 1),
    "pixel_aupro": ("Pixel AUPRO", 1),
    "f1_max": ("Oracle F1 max", 1),
    "f1_at_threshold": ("F1 at threshold", 1),
    "f1_threshold": ("Oracle F1 threshold", 0),
    "threshold": ("Threshold", 0),
    "fit_seconds": ("Fit s", -1),
    "images_per_second": ("Images/s", 1),
    "peak_rss_mb": ("Peak RSS MB", -1),
}

MASK_COLOUR = (255, 0, 255)  # magenta: a hue the jet colour map never produces
KINDS = ("FP", "FN", "TP", "TN")
KIND_TITLES = {
    "FP": "False positives (normal, score ≥ threshold), highest score first",
    "FN": "False negatives (defective, score < threshold), lowest score first",
    "TP": "True positives, lowest score first",
    "TN": "True negatives, highest score first",
}


@dataclass
class RunResult:
    """One evaluated model on one test set.

    ``scores[i]`` is the image score of ``ids[i]``; an image counts as defective when
    ``score >= threshold``. ``maps``, ``images`` and ``masks`` are optional per-image sources
    (anomaly map HxW float at any resolution, image HxWx3 uint8, ground truth HxW bool); callables
    are called once per image, so the runner can load lazily. ``map_range`` fixes the colour scale
    (default: min and max over all maps of the run).
    """

    name: str
    metrics: Mapping[str, float | None]
    ids: Sequence[str]
    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    maps: ArraySource | None = None
    images: ArraySource | None = None
    masks: ArraySource | None = None
    map_range: tuple[float, float] | None = None
    #: what the threshold is, shown beside it (e.g. where it was fitted)
    threshold_label: str = "threshold"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.ids)
        if len(self.labels) != n or len(self.scores) != n:
            raise ValueError(
                f"run {self.name!r}: {n} ids, {len(self.labels)} labels, {len(self.scores)} scores"
            )
        if not np.isfinite(self.scores).all():
            raise ValueError(f"run {self.name!r}: scores contain NaN or infinite values")
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError(f"run {self.name!r}: labels must be 0 (normal) or 1 (defective)")

    def map(self, i: int) -> np.ndarray | None:
        return None if self.maps is None else np.asarray(_get(self.maps, i), dtype=np.float32)

    def image(self, i: int) -> np.ndarray | None:
        return None if self.images is None else np.asarray(_get(self.images, i))

    def mask(self, i: int) -> np.ndarray | None:
        return None if self.masks is None else np.asarray(_get(self.masks, i)).astype(bool)


def _get(source: ArraySource, i: int) -> np.ndarray:
    return source(i) if callable(source) else source[i]


def slug(text: str) -> str:
    """A file-name-safe form of an id or run name (``test/10000`` -> ``test_10000``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def metric_value(value: Any) -> float | None:
    """A metric as a finite float, or None when missing or NaN (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metrics_dict(runs: Sequence[RunResult]) -> dict[str, dict[str, float | None]]:
    """``{run: {metric: value}}`` with NaN as None: what metrics.json holds and the table shows.

    Spreads (``<metric>_std``) and intervals (``<metric>_ci``) are shown inside their metric's
    cell, and text entries (rules, comparisons) are left out of the table.
    """
    return {
        r.name: {
            k: metric_value(v)
            for k, v in r.metrics.items()
            if isinstance(v, int | float) and not k.endswith("_std") and k != "n_evaluations"
        }
        for r in runs
    }


def _spread(m: Mapping[str, Any], k: str) -> str:
    """`` ± std [lo, hi]`` of metric ``k`` when the run has them."""
    out = ""
    std, ci = m.get(f"{k}_std"), m.get(f"{k}_ci")
    if isinstance(std, int | float) and m.get("n_evaluations", 1) > 1:
        out += f" ± {std:.3f}"
    if isinstance(ci, list | tuple) and len(ci) == 2:
        out += f' <span class="ci">[{ci[0]:.3f}, {ci[1]:.3f}]</span>'
    return out


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
    import cv2

    if a.shape[:2] == hw:
        return a
    if nearest:
        interp = cv2.INTER_NEAREST
    else:  # area averaging when shrinking avoids aliasing the image's fine texture
        interp = cv2.INTER_AREA if a.shape[0] > hw[0] else cv2.INTER_LINEAR
    return cv2.resize(a, (hw[1], hw[0]), interpolation=interp)


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


# --------------------------------------------------------------------------- scores


def write_scores_csv(run: RunResult, path: str | os.PathLike[str]) -> Path:
    """``id,label,score`` per image, in the run's order, scores at full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "label", "score"])
    for i, label, score in zip(run.ids, run.labels, run.scores, strict=True):
        writer.writerow([i, int(label), repr(float(score))])
    write_text(path, buf.getvalue())
    return Path(path)


def gallery_order(run: RunResult) -> list[tuple[int, str]]:
    """``(index, kind)`` for every image, hardest first: FP, FN, TP, TN.

    Worst false positives (highest-scoring normals) and worst false negatives (lowest-scoring
    defects) lead; correct images follow nearest-the-threshold first. Ties keep the input order.
    """
    pred = run.scores >= run.threshold
    order: list[tuple[int, str]] = []
    for kind, label, predicted, sign in (
        ("FP", 0, True, -1),
        ("FN", 1, False, 1),
        ("TP", 1, True, 1),
        ("TN", 0, False, -1),
    ):
        idx = np.flatnonzero((run.labels == label) & (pred == predicted))
        idx = idx[np.argsort(sign * run.scores[idx], kind="stable")]
        order += [(int(i), kind) for i in idx]
    return order


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1400px;
padding:16px 24px;color:#1d232b;background:#fafbfc}
h1{font-size:22px;margin:4px 0 2px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dde3}
h3{font-size:14px;margin:16px 0 6px;color:#3b4450}
.sub{color:#5b6673;margin:0 0 12px}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #d8dde3;padding:4px 8px}
th{background:#eef1f4;text-align:left;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{font-weight:700;background:#e8f5e9}
td.na{color:#98a1ab;text-align:center}
.curves{display:flex;flex-wrap:wrap;gap:16px}
.curves img{border:1px solid #d8dde3;background:#fff;max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #d8dde3;border-radius:4px;padding:4px}
figure.FP,figure.FN{border:2px solid #d32f2f}
figure img{display:block;height:240px;width:auto}
figcaption{font-size:12px;line-height:1.3;margin-top:3px;max-width:160px;overflow-wrap:anywhere}
.tag{display:inline-block;font-size:11px;font-weight:700;padding:0 4px;border-radius:3px;
color:#fff;background:#607d8b}
.tag.FP,.tag.FN{background:#d32f2f}.tag.TP{background:#2e7d32}
.scale{display:inline-block;width:160px;height:10px;vertical-align:middle;border:1px solid #999;
background:linear-gradient(90deg,#00008f,#0000ff,#00ffff,#ffff00,#ff0000,#800000)}
.swatch{display:inline-block;width:10px;height:10px;border:2px solid rgb(255,0,255);
vertical-align:middle}
table.kv td:first-child{font-weight:600;white-space:nowrap;vertical-align:top}
table.kv table.kv{margin:0;border:0}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
.more{color:#5b6673;font-style:italic}
.ci{color:#5b6673;font-size:12px}
"""

# The page may load nothing but its own folder's files and data: URIs, and runs no script.
CSP = "default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'"

E = html.escape  # quote=True: safe in text and in double-quoted attributes


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _metrics_table(runs: Sequence[RunResult]) -> str:
    table = metrics_dict(runs)
    keys = list(METRICS) + sorted({k for m in table.values() for k in m} - set(METRICS))
    keys = [k for k in keys if any(k in m for m in table.values())]
    best: dict[str, float] = {}
    for k in keys:
        direction = METRICS.get(k, ("", 0))[1]
        values = [v for m in table.values() if (v := m.get(k)) is not None]
        if direction and len(values) > 1:
            best[k] = max(values) if direction > 0 else min(values)
    head = "".join(f'<th title="{E(k)}">{E(METRICS.get(k, (k, 0))[0])}</th>' for k in keys)
    rows = []
    for name, m in table.items():
        cells = []
        for k in keys:
            v = m.get(k)
            attrs = f'data-run="{E(name)}" data-metric="{E(k)}"'
            if v is None:
                cells.append(f'<td class="na" {attrs} data-value="">—</td>')
            else:
                cls = "num best" if best.get(k) == v else "num"
                spread = _spread(next(r.metrics for r in runs if r.name == name), k)
                cells.append(f'<td class="{cls}" {attrs} data-value="{v!r}">{v:.3f}{spread}</td>')
        rows.append(f"<tr><th>{E(name)}</th>{''.join(cells)}</tr>")
    return (
        f'<table id="metrics"><thead><tr><th>Run</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        '<p class="sub">Bold: best per column. Image-level AUROC/AP and F1 from image scores; '
        "pixel-level from anomaly maps; times in seconds. Where a run was evaluated on several "
        "folds or seeds: mean ± std over them, and [95% bootstrap interval]. F1 max is the "
        "oracle F1-max (threshold fitted on test labels); F1 at threshold uses the threshold "
        "fitted on a validation split of the training data.</p>" + _comparisons(runs)
    )


def _comparisons(runs: Sequence[RunResult]) -> str:
    """Each run against the baseline: a win only when the paired bootstrap interval says so."""
    rows = []
    for r in runs:
        for metric, c in (r.metrics.get("comparisons") or {}).items():
            lo, hi = c["ci"]
            rows.append(
                f"<tr><th>{E(r.name)}</th><td>{E(c['against'])}</td>"
                f"<td>{E(METRICS.get(metric, (metric, 0))[0])}</td>"
                f'<td class="num">{c["difference"]:+.3f} [{lo:+.3f}, {hi:+.3f}]</td>'
                f"<td>{E(c['verdict'])}</td></tr>"
            )
    if not rows:
        return ""
    return (
        "<h3>Differences against the baseline (paired bootstrap, 95% interval)</h3>"
        '<table id="comparisons"><thead><tr><th>Run</th><th>Against</th><th>Metric</th>'
        f"<th>Difference</th><th>Verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _kv(value: Any) -> str:
    """Provenance as nested key/value tables; every key and value escaped."""
    if isinstance(value, Mapping):
        if not value:
            return "<code>{}</code>"
        rows = "".join(f"<tr><td>{E(str(k))}</td><td>{_kv(v)}</td></tr>" for k, v in value.items())
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, list | tuple):
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            return f"<code>{E(', '.join(_fmt(v) for v in value))}</code>"
        return "".join(_kv(v) for v in value)
    return f"<code>{E(_fmt(value))}</code>"


def _src(path: Path, out_dir: Path, inline: bool) -> str:
    if inline:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return E("/".join(quote(part) for part in path.relative_to(out_dir).parts))


def _img(path: Path, out_dir: Path, inline: bool, alt: str) -> str:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return f'<img src="{_src(path, out_dir, inline)}" width="{w}" height="{h}" alt="{E(alt)}">'


def _gallery(run: RunResult, rdir: Path, out_dir: Path, limit: int | None, inline: bool) -> str:
    order = gallery_order(run)
    counts = {k: sum(1 for _, kind in order if kind == k) for k in KINDS}
    summary = (
        f'<p class="sub">{len(order)} images ({int(run.labels.sum())} defective) · threshold '
        f"<b>{run.threshold:.4g}</b>: {E(run.threshold_label)} "
        "(defective when score ≥ threshold) · " + " · ".join(f"{k} {counts[k]}" for k in KINDS)
    )
    if run.maps is None:
        return summary + " · no anomaly maps, so no overlays.</p>"
    lo, hi = map_range(run)
    summary += (
        f' · colour scale <span class="scale"></span> {lo:.4g} to {hi:.4g} for every image'
        ' · <span class="swatch"></span> ground-truth outline</p>'
    )
    shown = [
        [(i, k) for i, k in order if k == kind][: limit if limit is not None else None]
        for kind in KINDS
    ]
    paths = write_overlays(run, rdir / "overlays", [i for group in shown for i, _ in group])
    csv_path = rdir / "scores.csv"
    parts = [summary]
    for kind, group in zip(KINDS, shown, strict=True):
        if not counts[kind]:
            continue
        parts.append(f'<h3>{E(KIND_TITLES[kind])}: {counts[kind]}</h3><div class="gallery">')
        for i, _ in group:
            parts.append(
                f'<figure class="{kind}">{_img(paths[i], out_dir, inline, run.ids[i])}'
                f'<figcaption><span class="tag {kind}">{kind}</span> {E(run.ids[i])}<br>'
                f"score <b>{run.scores[i]:.4g}</b> · thr {run.threshold:.4g}</figcaption></figure>"
            )
        parts.append("</div>")
        if len(group) < counts[kind]:
            parts.append(
                f'<p class="more">{counts[kind] - len(group)} more {kind} not shown; '
                f'every score is in <a href="{_src(csv_path, out_dir, False)}">scores.csv</a>.</p>'
            )
    return "".join(parts)


def write_html_report(
    out_dir: str | os.PathLike[str],
    runs: Sequence[RunResult],
    provenance: Mapping[str, Any],
    title: str = "dualpatch results",
    gallery_limit: int | None = 24,
    inline_images: bool = False,
    sections: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/report.html`` and everything it shows; return the page's path.

    Writes ``curves/roc.png``, ``curves/pr.png`` and per run ``runs/<k>_<name>/scores.csv`` and
    ``overlays/*.png`` (the first ``gallery_limit`` images of each of FP/FN/TP/TN, hardest first;
    None: all). ``inline_images`` embeds the PNGs so the page is a single portable file.
    ``provenance`` (config, versions, dataset hash, seeds...) is shown as nested tables;
    ``sections``: more HTML shown after the curves (e.g. ``report_fewshot.fewshot_section``).
    """
    out_dir = Path(out_dir)
    names = [r.name for r in runs]
    if len({slug(n) for n in names}) != len(names):
        raise ValueError(f"run names must be unique, also as file names: {names}")
    curves = plot_curves(runs, out_dir / "curves")
    body = [
        f"<h1>{E(title)}</h1>",
        f'<p class="sub">{len(runs)} run(s): {E(", ".join(names))}</p>',
        "<h2>Metrics</h2>",
        _metrics_table(runs),
        '<h2>Curves</h2><div class="curves">',
        _img(curves["roc"], out_dir, inline_images, "ROC curves"),
        _img(curves["pr"], out_dir, inline_images, "Precision-recall curves"),
        "</div>",
        *sections,
    ]
    for k, run in enumerate(runs):
        rdir = out_dir / "runs" / slug(run.name)
        write_scores_csv(run, rdir / "scores.csv")
        body.append(f'<h2 id="run-{k}">Gallery: {E(run.name)}</h2>')
        body.append(_gallery(run, rdir, out_dir, gallery_limit, inline_images))
    body += ["<h2>Provenance</h2>", _kv(dict(provenance))]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{E(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{E(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = out_dir / "report.html"
    write_text(path, page)
    return path
