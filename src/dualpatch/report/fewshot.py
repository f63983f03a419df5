"""The few-shot part of the report: image AUROC, image AP and AUPRO against the number of real
defects n, per run, with the spread over folds × seeds × draws, and the advice per n."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dualpatch.fileio import write_bytes

METRICS = {"image_auroc": "Image AUROC", "image_ap": "Image AP", "pixel_aupro": "Pixel AUPRO"}
E = html.escape


def curves(
    metrics: Mapping[str, Mapping[str, Any]], entries: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, list]]:
    """Per run: the n values (as text, in config order) and each metric's mean, std and interval.
    A single-bank run (no defects) is a flat line over every n."""
    shots = list(dict.fromkeys(str(e["shots"]) for e in entries if e["shots"] is not None))
    out: dict[str, dict[str, list]] = {}
    for e in entries:
        m = metrics[e["name"]]
        ns = shots if e["shots"] is None else [str(e["shots"])]
        line = out.setdefault(e["run"], {"n": []} | {k: [] for k in METRICS})
        for n in ns:
            line["n"].append(n)
            for k in METRICS:
                ci = m.get(f"{k}_ci") or [float("nan")] * 2
                line[k].append((m.get(k, float("nan")), m.get(f"{k}_std", 0.0), *ci))
    return out


def plot_fewshot(
    metrics: Mapping[str, Mapping[str, Any]],
    entries: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    title: str = "mean ± std over folds × seeds × draws",
) -> Path:
    """Write a PNG: one panel per metric, x = n (categorical), one line per run, error bars =
    std, shaded band = 95% bootstrap interval."""
    import numpy as np
    from matplotlib.figure import Figure

    from dualpatch.report.plots import _figure_png

    lines = curves(metrics, entries)
    shots = list(dict.fromkeys(n for line in lines.values() for n in line["n"]))
    fig = Figure(figsize=(4.2 * len(METRICS), 3.7))
    axes = fig.subplots(1, len(METRICS))
    for ax, (k, label) in zip(axes, METRICS.items(), strict=True):
        for j, (run, line) in enumerate(lines.items()):
            xs = np.array([shots.index(n) for n in line["n"]], dtype=float)
            xs += 0.05 * (j - (len(lines) - 1) / 2)  # side by side: the bars stay readable
            v = np.array(line[k], dtype=float)
            bars = ax.errorbar(xs, v[:, 0], yerr=v[:, 1], marker="o", ms=4, capsize=3, label=run)
            ax.fill_between(xs, v[:, 2], v[:, 3], alpha=0.12, color=bars[0].get_color())
        ax.set_xticks(range(len(shots)), shots)
        ax.set_xlabel("real defective training images (n)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    write_bytes(path, _figure_png(fig))
    return path


def fewshot_section(
    metrics: Mapping[str, Mapping[str, Any]],
    entries: Sequence[Mapping[str, Any]],
    advice: Mapping[str, Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    inline: bool = False,
) -> str:
    """The report's few-shot section (HTML): the plot, the per-(run, n) table and the advice."""
    from dualpatch.report.html import _img, _spread

    out_dir = Path(out_dir)
    png = plot_fewshot(metrics, entries, out_dir / "curves" / "fewshot.png")
    rows = []
    for e in entries:
        m = metrics[e["name"]]
        cells = "".join(
            f'<td class="num">{m[k]:.3f}{_spread(m, k)}</td>' if k in m else "<td>—</td>"
            for k in METRICS
        )
        n = "any (no defects)" if e["shots"] is None else str(e["shots"])
        rows.append(f"<tr><th>{E(e['run'])}</th><td>{E(n)}</td><td>{e['draws']}</td>{cells}</tr>")
    head = "".join(f"<th>{E(v)}</th>" for v in METRICS.values())
    advice_rows = "".join(
        f"<tr><td>{E(n)}</td><td>{E(a['use'] or '— (see evidence)')}</td>"
        f"<td>{E(str(a.get('rule')))}</td>"
        f"<td>{E(a['why'])}</td><td>{E(_chosen_on(a))}</td>"
        f"<td>{E(_goal_text(a['goal']))}</td></tr>"
        for n, a in advice.items()
    )
    return (
        "<h2>Few real defects (defect_shots)</h2>"
        '<p class="sub">Each dual run\'s defect bank, and every synthetic source it uses, sees '
        "only the n drawn real defects. Mean ± std over folds × seeds × draws, [95% bootstrap "
        "interval]; the single bank sees no defects and is drawn over every n. The gallery below "
        "shows each run at its largest n.</p>"
        + _img(png, out_dir, inline, "Few-shot curves")
        + f'<table id="fewshot"><thead><tr><th>Run</th><th>n</th><th>Draws</th>{head}</tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
        "<h3>Which setting to use with n real defects</h3>"
        f'<p class="sub" id="fewshot-advice-evidence">{_evidence(advice)}</p>'
        '<table id="fewshot-advice"><thead><tr><th>n</th><th>Use</th><th>Rule</th><th>Evidence</th>'
        "<th>Chosen on</th>"
        f"<th>Goal (+0.01 AUROC and AP over real-only, intervals apart, beats single)</th></tr>"
        f"</thead><tbody>{advice_rows}</tbody></table>"
    )


def _chosen_on(advice: Mapping[str, Any]) -> str:
    """The advice's evidence in two words (the full text is above the table)."""
    return "test folds" if advice["chosen_on"].startswith("test folds") else "training items only"


def _evidence(advice: Mapping[str, Mapping[str, Any]]) -> str:
    """Above the advice table: what each n's advice was chosen on, in full (HTML-escaped)."""
    by_text: dict[str, list[str]] = {}
    for n, a in advice.items():
        by_text.setdefault(a["chosen_on"], []).append(n)
    return " ".join(
        f"Read from the {E(text)} (n = {E(', '.join(ns))})." if text.startswith("test folds")
        else f"Chosen on {E(text)} (n = {E(', '.join(ns))})."
        for text, ns in by_text.items()
    )  # fmt: skip


def _goal_text(goal: Mapping[str, Mapping[str, Any]]) -> str:
    if not goal:
        return "not checked (n > 5, or no synthetic source)"
    met = [name for name, g in goal.items() if g["met"]]
    return "met by " + ", ".join(met) if met else "not met by any source"
