"""Print the results tables (Markdown) from the JSON files under benchmarks/results/:
KolektorSDD's cross-validated runs, and the safety suite's one JSON per dataset.

The figures of docs/results.md and of the README's one results table are copied from this output,
never typed by hand:

    python benchmarks/readme_tables.py
    python benchmarks/readme_tables.py --write-readme   # both, in place, between their markers

``--write-readme`` writes the three-dataset tables into docs/results.md (between the safety-suite
markers), the headline table into README.md (between the results-headline markers) and the speed
table from ``line_speed.json`` into README.md (between the speed-table markers).
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


SAFETY_COLUMNS = [
    ("image_auroc", "image AUROC"),
    ("image_ap", "image AP"),
    ("pixel_aupro", "pixel AUPRO"),
    ("foreign_recall", "foreign-frame recall"),
    ("unseen_recall", "unseen-defect recall"),
    ("unseen_auroc", "unseen-defect AUROC"),
    ("false_alarm_rate", "false alarms on normal test images"),
]
SAFETY_RUNS = {
    "single": "single",
    "single-reweighted": "single, re-weighted",
    "single-no-image-check": "single, without the image-level check",
    "guarded-no-image-check": "dual, `guarded`, without the image-level check",
    "chosen": "**the procedure** (nested choice per fold)",
}


def fold_cell(m: dict) -> str:
    """mean [fold-level 95% interval] (Nadeau-Bengio corrected t over the outer folds), the
    interval clipped to [0, 1], the range of every figure in the table."""
    if not m or m.get("mean") is None or not math.isfinite(m["mean"]):
        return "n/a"
    lo, hi = m["fold_ci"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m['mean']:.3f}"
    return f"{m['mean']:.3f} [{max(lo, 0):.3f}, {min(hi, 1):.3f}]"


def ordered(runs: dict) -> list[tuple[str, dict]]:
    """Single banks first, then the dual rules as the JSON lists them, the procedure last."""
    first = [n for n in ("single", "single-reweighted") if n in runs]
    rules = [n for n in runs if n not in (*first, "chosen")]
    return [(n, runs[n]) for n in [*first, *rules, *(["chosen"] if "chosen" in runs else [])]]


def run_label(name: str) -> str:
    return SAFETY_RUNS.get(name, f"dual, `{name}`")


def safety_table(data: dict) -> str:
    head = "| run | " + " | ".join(label for _, label in SAFETY_COLUMNS) + " |"
    rows = [head, "| --- |" + " ---: |" * len(SAFETY_COLUMNS)]
    for name, m in ordered(data["runs"]):
        cells = " | ".join(fold_cell(m.get(k)) for k, _ in SAFETY_COLUMNS)
        rows.append(f"| {run_label(name)} | {cells} |")
    return "\n".join(rows)


def safety_verdicts(data: dict, against: str = "single") -> str:
    rows = [f"| run | metric | difference to {against} [fold-level 95% interval] | verdict |",
            "| --- | --- | ---: | --- |"]  # fmt: skip
    for name, by_base in ordered(data["comparisons"]):
        for k, c in by_base[against].items():
            lo, hi = c["ci"]
            rows.append(f"| {run_label(name)} | {k} | {c['difference']:+.3f} "
                        f"[{lo:+.3f}, {hi:+.3f}] | {c['verdict']} |")  # fmt: skip
    return "\n".join(rows)


def procedure_verdicts(data: dict, run: str = "chosen") -> str:
    """The README's compact table: one run against both single banks, metric by metric."""
    rows = ["| metric | against single [fold-level 95%] | against single, re-weighted |",
            "| --- | ---: | ---: |"]  # fmt: skip
    by_base = data["comparisons"].get(run, {})

    def cell(c: dict) -> str:
        lo, hi = c["ci"]
        return f"{c['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] {c['verdict']}"

    for k in by_base.get("single", {}):
        rows.append(f"| {k} | {cell(by_base['single'][k])} "
                    f"| {cell(by_base['single-reweighted'][k])} |")  # fmt: skip
    return "\n".join(rows)


def choices(data: dict) -> str:
    rows = ["| outer fold | rule | normalisation | validation criterion | fallback |",
            "| --- | --- | --- | ---: | --- |"]  # fmt: skip
    for c in data["choices_per_outer_fold"]:
        ch = c["chosen"] or {}
        rule, norm = ch.get("rule", "not run"), ch.get("normalization", "")
        crit, fallback = ch.get("criterion", math.nan), ch.get("fallback", "")
        rows.append(f"| {c['fold']} | {rule} | {norm} | {crit:.3f} | {fallback} |")
    return "\n".join(rows)


def defaults(data: dict) -> str:
    rows = ["| candidate | feasible on | mean validation criterion |", "| --- | --- | ---: |"]
    for t in data.get("candidates", []):
        c = t["candidate"]
        rows.append(f"| `{c['rule']}`, {c['normalization']} | {', '.join(t['feasible_on'])} "
                    f"| {t['criterion_mean']:.3f} |")  # fmt: skip
    chosen = data.get("chosen") or {}
    where = ", ".join(data.get("feasible_on", []))
    if data.get("feasible_everywhere"):
        where = "every dataset"
    else:
        where += " only: no candidate met the constraints on all three"
    return "\n".join(rows) + (
        f"\n\nChosen: `{chosen.get('rule')}`, {chosen.get('normalization')} normalisation "
        f"(feasible on {where})."
    )


START, END = "<!-- safety-suite:start -->", "<!-- safety-suite:end -->"
TITLES = {"kolektorsdd": "KolektorSDD", "battery_weld": "battery_weld", "bsdata": "BSData"}


def safety_section() -> str:
    """docs/results.md's three-dataset tables, from the safety suite's JSON files only."""
    parts = []
    for name, title in TITLES.items():
        path = RESULTS / f"safety_{name}.json"
        if not path.exists():
            parts.append(f"### {title}\n\nnot measured (no `{path.name}`).")
            continue
        data = json.loads(path.read_text())
        picks = ", ".join(
            f"{c['fold']} {c['chosen']['rule']}/{c['chosen']['normalization']}"
            + (" (fallback)" if c["chosen"].get("fallback") else "")
            if c.get("chosen") else f"{c['fold']} not run"
            for c in data["choices_per_outer_fold"]
        )  # fmt: skip
        parts.append(
            f"### {title}\n\n`{path.name}`: {len(data['outer_folds'])} outer folds, model size "
            f"{data['model_size'][0]}x{data['model_size'][1]}, git {data['git_commit'][:8]}.\n\n"
            f"{safety_table(data)}\n\nThe procedure against both single banks (paired per "
            f"fold):\n\n{procedure_verdicts(data)}\n\nEach outer fold's own choice: {picks}."
        )
    sel = RESULTS / "select_defaults.json"
    if sel.exists():
        data = json.loads(sel.read_text())
        parts.append(
            "### The defaults (the same procedure on all images of all three datasets)\n\n"
            f"`select_defaults.json`:\n\n{defaults(data)}"
        )
    return "\n\n".join(parts)


HEADLINE_START, HEADLINE_END = "<!-- results-headline:start -->", "<!-- results-headline:end -->"
HEADLINE_RUNS = {
    "single": "single bank",
    "guarded": "dual, `guarded` (the default rule)",
    "chosen": "the procedure (chosen per fold on training items)",
}
HEADLINE_COLUMNS = ["image_auroc", "image_ap", "pixel_aupro", "foreign_recall", "unseen_recall"]


def headline_table() -> str:
    """The README's one results table: per dataset, the single bank, the default dual rule and the
    nested choice, on the safety suite's headline figures (fold-level intervals), and a line
    naming the datasets where the nested choice fell back to the single bank on every fold."""
    labels = dict(SAFETY_COLUMNS)
    head = "| dataset | run | " + " | ".join(labels[k] for k in HEADLINE_COLUMNS) + " |"
    rows, fallbacks = [head, "| --- | --- |" + " ---: |" * len(HEADLINE_COLUMNS)], []
    for name, title in TITLES.items():
        path = RESULTS / f"safety_{name}.json"
        if not path.exists():
            empty = " |" * len(HEADLINE_COLUMNS)
            rows.append(f"| {title} | not measured (no `{path.name}`) |{empty}")
            continue
        data = json.loads(path.read_text())
        for run, label in HEADLINE_RUNS.items():
            m = data["runs"].get(run, {})
            cells = " | ".join(fold_cell(m.get(k)) for k in HEADLINE_COLUMNS)
            rows.append(f"| {title} | {label} | {cells} |")
        picks = [c.get("chosen") or {} for c in data["choices_per_outer_fold"]]
        if picks and all(c.get("fallback") for c in picks):
            fallbacks.append(title)
    note = (
        f"\n\nOn {', '.join(fallbacks)} no dual candidate met the safety constraints on any "
        "fold, so the procedure fell back to the single bank there."
        if fallbacks
        else ""
    )
    return "\n".join(rows) + note


SPEED_START, SPEED_END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
RUNTIMES = ("torch", "onnx", "openvino")


def met(flag: bool) -> str:
    return "**met**" if flag else "missed"


def speed_table(data: dict) -> str:
    """The README's speed table: ``line_speed.json``'s targets at the default model against
    anomalib at the same coreset ratio, each cell its ratio (our figure) and met or missed."""
    t, a = data["targets"], data["anomalib"]
    head = "| target (ratio to anomalib) | " + " | ".join(RUNTIMES) + " |"
    rows = [head, "| --- |" + " ---: |" * len(RUNTIMES)]

    def row(label: str, fn) -> None:
        rows.append(f"| {label} | " + " | ".join(fn(t[r]) for r in RUNTIMES) + " |")

    row("batched throughput ≥ 4×, decode included (ours: ms per image, model only)",
        lambda r: f"{r['throughput_ratio_with_decode']:.2f}× ({r['batched_ms_per_image']:.1f} ms), "
        f"{met(r['throughput_target_4x_met'])}")  # fmt: skip
    for threads in (2, 1):
        key = f"batch1_{threads}_threads"
        label = f"batch-1 median ≤ ⅓ and p99 < 1.5× median, {threads} thread{'s' * (threads > 1)}"
        row(label, lambda r, k=key: (
            f"{r[k]['latency_fraction_of_anomalib']:.2f} ({r[k]['ms_median']:.1f} ms), "
            f"p99 {r[k]['p99_over_median']:.2f}×, {met(r[k]['latency_target_met'])}"))  # fmt: skip
    rss = " | ".join(
        f"{t[f'predict_{r}_rss_fraction_of_anomalib']:.2f} ({t[f'predict_{r}_peak_rss_mib']:.0f}"
        f" MiB), {met(t[f'predict_{r}_rss_target_met'])}"
        for r in RUNTIMES
    )
    rows.append(f"| `predict` peak RSS ≤ ½ | {rss} |")
    ev = t["evaluate_torch_rss_fraction_of_anomalib"]
    rows.append(
        f"| `evaluate` peak RSS ≤ ½ | {ev:.2f} ({t['evaluate_torch_peak_rss_mib']:.0f} MiB), "
        f"{met(t['evaluate_torch_rss_target_met'])} | | |"
    )
    f = t["fit"]
    rows.append(
        f"| fit time ≤ 0.1× (ours with the threshold) | {f['fraction_of_anomalib']:.3f} "
        f"({f['dualpatch_fit_s_with_threshold']:.0f} s against {f['anomalib_fit_s']:.0f} s), "
        f"{met(f['fit_target_0_1x_met'])} | | |"
    )
    b = data["backbone_alone"]
    ours = data["dualpatch_rounds"][0]["onnx"]
    anchor = (
        f"anomalib at {a['coreset_ratio']:.0%}: {a['test_step_ms_per_image']:.1f} ms per image "
        f"batched, {a['batch1_ms_median']:.1f} ms at batch 1, peak RSS "
        f"{a['process_peak_rss_mib']:.0f} MiB, fit {a['fit_s']:.0f} s"
    )
    ours_m = data["dualpatch_rounds"][0]["evaluate_torch"]["metrics"]
    a_m = a["metrics"]
    accuracy = (
        f" Accuracy in the same run, same test split: ours image AUROC "
        f"{ours_m['image_auroc']:.3f}, AP {ours_m['image_ap']:.3f}, pixel AUPRO "
        f"{ours_m['pixel_aupro']:.3f}; anomalib {a_m['image_AUROC']:.3f}, {a_m['image_AP']:.3f}, "
        f"{a_m['pixel_AUPRO']:.3f}."
    )
    rows_cap = data["coreset_rows"]
    cap = f", at most {rows_cap:,} rows a bank" if rows_cap else ", no row cap"
    return (
        "\n".join(rows)
        + (
            f"\n\nAt the default model ({data['coreset_ratio']:.0%} coreset{cap}); {anchor}. "
            f"The backbone alone (torch): "
            f"{b['batch1_ms_median']:.1f} ms at batch 1, {b['batch32_ms_per_image']:.1f} ms per "
            f"image batched; ONNX's whole scorer {ours['batch1_ms_median']:.1f} ms at batch 1. "
            f"`benchmarks/results/line_speed.json`, git {data['git_commit'][:8]}; load "
            f"{data['uptime_start'].split('load average:')[-1].strip()} at the start.{accuracy}"
        )
        + fit_sentence()
    )


def fit_sentence() -> str:
    """``fit_default.json`` in one sentence: a large fit at the defaults against uncapped banks."""
    path = RESULTS / "fit_default.json"
    if not path.exists():
        return ""
    d = json.loads(path.read_text())
    diff = d["default_minus_uncapped"]["image_auroc"]
    return (
        f"\n\nA fit at the defaults on {d['data']} (threshold included): "
        f"{d['default_fit_s']:.1f} s ({met(d['goal_met'])}: at most 120 s), against "
        f"{d['uncapped_exact_10pct']['fit']['wall_s']:.0f} s with uncapped exact banks; image "
        f"AUROC {d['default']['metrics']['image_auroc']:.3f} against "
        f"{d['uncapped_exact_10pct']['metrics']['image_auroc']:.3f}, a difference of "
        f"{diff['difference']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}] over the test "
        f"images, {diff['verdict']} (`fit_default.json`)."
    )


def write_between(path: Path, start: str, end: str, body: str) -> None:
    """Replace the text between the ``start`` and ``end`` markers of ``path`` with ``body``."""
    text = path.read_text()
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{body}\n{end}{tail}")


def write_readme(readme: Path, results_page: Path) -> None:
    """The full three-dataset tables into ``results_page``, the headline table into ``readme``."""
    write_between(results_page, START, END, safety_section())
    write_between(readme, HEADLINE_START, HEADLINE_END, headline_table())
    speed = RESULTS / "line_speed.json"
    data = json.loads(speed.read_text()) if speed.exists() else {}
    if "fit" in data.get("targets", {}):  # judged at the default model, with the fit's time
        write_between(readme, SPEED_START, SPEED_END, speed_table(data))


def main() -> None:
    import sys

    if "--write-readme" in sys.argv:
        root = Path(__file__).parents[1]
        write_readme(root / "README.md", root / "docs" / "results.md")
        return
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
    for path in sorted(RESULTS.glob("safety_*.json")):
        data = json.loads(path.read_text())
        print(f"## {path.name}: {data['command']} (git {data['git_commit'][:8]})\n")
        print(safety_table(data), "\n")
        print(procedure_verdicts(data), "\n")
        print(safety_verdicts(data, "single"), "\n")
        print(safety_verdicts(data, "single-reweighted"), "\n")
        print(choices(data), "\n")
    sel = RESULTS / "select_defaults.json"
    if sel.exists():
        data = json.loads(sel.read_text())
        print(f"## {data['command']}\n")
        print(defaults(data), "\n")


if __name__ == "__main__":
    main()
