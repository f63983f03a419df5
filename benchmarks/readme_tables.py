"""Print the README's KolektorSDD tables (Markdown) from the JSON files under benchmarks/results/.

The README's figures are copied from this output, never typed by hand:

    python benchmarks/readme_tables.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METRICS = [
    ("image_auroc", "image AUROC"),
    ("image_ap", "image AP"),
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_aupro", "pixel AUPRO"),
    ("f1_at_threshold", "F1 at the validation threshold"),
    ("f1_max", "oracle F1-max"),
]


def cell(m: dict, k: str, spread: bool = True) -> str:
    v = m.get(k)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    text = f"{v:.3f}"
    if spread and m.get("n_evaluations", 1) > 1:
        text += f" ± {m.get(f'{k}_std', 0):.3f}"
    ci = m.get(f"{k}_ci")
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def metrics_table(metrics: dict, spread: bool = True) -> str:
    head = "| run | " + " | ".join(label for _, label in METRICS) + " |"
    rows = [head, "| --- |" + " ---: |" * len(METRICS)]
    for name, m in metrics.items():
        rows.append(f"| {name} | " + " | ".join(cell(m, k, spread) for k, _ in METRICS) + " |")
    return "\n".join(rows)


def verdicts(metrics: dict) -> str:
    rows = ["| run | against | metric | difference [95% interval] | verdict |",
            "| --- | --- | --- | ---: | --- |"]  # fmt: skip
    for name, m in metrics.items():
        for k, c in (m.get("comparisons") or {}).items():
            lo, hi = c["ci"]
            rows.append(
                f"| {name} | {c['against']} | {k} | {c['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                f"| {c['verdict']} |"
            )
    return "\n".join(rows)


def timing(metrics: dict) -> str:
    rows = ["| run | fit s (mean) | test images / s (mean) | peak RSS MB |",
            "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, m in metrics.items():
        rows.append(
            f"| {name} | {m.get('fit_seconds', math.nan):.1f} | "
            f"{m.get('images_per_second', math.nan):.1f} | {m.get('peak_rss_mb', math.nan):.0f} |"
        )
    return "\n".join(rows)


def selection(sel: dict) -> str:
    rows = [
        "| outer fold | validation images (defective) | rule | normalisation | defects "
        "| normal coreset | criterion |",
        "| --- | ---: | --- | --- | --- | ---: | ---: |",
    ]
    for f in sel["folds"]:
        c = f["chosen"]
        best = max(r["metrics"]["criterion"] for r in f["candidates"])
        rows.append(
            f"| {f['fold']} | {f['validation_images']} ({f['validation_defective']}) | {c['rule']} "
            f"| {c['normalization']} | {c['defects']} | {c['normal_coreset']} | {best:.3f} |"
        )
    return "\n".join(rows)


def candidates(sel: dict) -> str:
    rows = [
        "| outer fold | rule | normalisation | defects | val. image AUROC | val. image AP "
        "| val. pixel AUPRO | criterion |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for f in sel["folds"]:
        for r in f["candidates"]:
            c, m = r["candidate"], r["metrics"]
            rows.append(
                f"| {f['fold']} | {c['rule']} | {c['normalization']} | {c['defects']} "
                f"| {m['image_auroc']:.3f} | {m['image_ap']:.3f} | {m['pixel_aupro']:.3f} "
                f"| {m['criterion']:.3f} |"
            )
    return "\n".join(rows)


def main() -> None:
    cv = RESULTS / "kolektorsdd_cv.json"
    if cv.exists():
        data = json.loads(cv.read_text())
        print(f"## {data['command']}\n")
        print(metrics_table(data["result"]["metrics"]), "\n")
        print(verdicts(data["result"]["metrics"]), "\n")
        print(timing(data["result"]["metrics"]), "\n")
        print("wall s", data["result"]["wall_seconds"], "load", data["result"]["loadavg_before"],
              data["result"]["loadavg_after"], "\n")  # fmt: skip
    split = RESULTS / "kolektorsdd_split.json"
    if split.exists():
        data = json.loads(split.read_text())
        print(f"## {data['command']}\n")
        for label, r in data["result"].items():
            print(f"### {label}\n")
            print(metrics_table(r["metrics"]), "\n")
    sel = RESULTS / "select_defaults.json"
    if sel.exists():
        data = json.loads(sel.read_text())
        print(f"## {data['command']}\n")
        print(selection(data), "\n")
        print(candidates(data), "\n")
        print("stability:", data["stability"], "\nmajority:", data["majority"])


if __name__ == "__main__":
    main()
