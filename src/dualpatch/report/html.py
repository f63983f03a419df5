"""The results report: ROC/PR curves, heatmap overlays, per-image scores and a static HTML page.

This module writes the page; the data it shows is ``report_data``, its pictures ``report_plots``.

Everything is written atomically (``dualpatch.fileio``); ``report.html`` needs no server, no
JavaScript and no network: images are relative files inside the results folder, or inline.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dualpatch.fileio import write_text
from dualpatch.report.data import (
    KIND_TITLES,
    KINDS,
    METRICS,
    RunResult,
    gallery_order,
    metrics_dict,
    slug,
    write_scores_csv,
)
from dualpatch.report.plots import (
    map_range,
    plot_curves,
    write_overlays,
)

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


def _spread(m: Mapping[str, Any], k: str) -> str:
    """`` ± std [lo, hi]`` of metric ``k`` when the run has them."""
    out = ""
    std, ci = m.get(f"{k}_std"), m.get(f"{k}_ci")
    if isinstance(std, int | float) and m.get("n_evaluations", 1) > 1:
        out += f" ± {std:.3f}"
    if isinstance(ci, list | tuple) and len(ci) == 2:
        out += f' <span class="ci">[{ci[0]:.3f}, {ci[1]:.3f}]</span>'
    return out


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
        first = list((r.metrics.get("comparisons") or {}).items())
        # with plain and re-weighted single runs, also the strongest single where it is not first
        strongest = (r.metrics.get("against_singles") or {}).get("against_strongest") or {}
        seen = {(m, c["against"]) for m, c in first}
        for metric, c in first + [
            (m, c) for m, c in strongest.items() if (m, c["against"]) not in seen
        ]:
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
