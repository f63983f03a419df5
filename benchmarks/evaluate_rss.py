"""Peak RSS of ``dualpatch evaluate`` (torch runtime) before and after a change, judged against
anomalib's whole fit+test process (issue 25, item 6: at most half of it).

Each evaluate runs in its own child process; its peak RSS comes from ``os.wait4``
(``line_speed.run_rss``), so the figure is the process's own maximum resident set, whatever the
machine's load (no timings are recorded). "before" runs the code of ``--before`` (a git ref,
exported with ``git archive``), "after" this working tree; both score the same model on the same
test split, and their metrics.json, scores.csv and predictions.safetensors are compared byte for
byte.

    python benchmarks/evaluate_rss.py --model /tmp/evalrss/model \\
        --data /work/shared/data/kolektorsdd --before main
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from line_speed import run_rss  # noqa: E402

#: where the anchor figure is measured: anomalib's fit+test process, peak RSS in MiB
ANCHOR_JSON = ROOT / "benchmarks" / "results" / "line_speed.json"
OUTPUTS = ("metrics.json", "scores.csv", "predictions.safetensors")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def export_ref(ref: str, into: Path) -> Path:
    """The source tree of ``ref`` unpacked under ``into``; returns its ``src`` folder."""
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, check=True, stdout=f)
    with tarfile.open(archive) as t:
        t.extractall(into, filter="data")
    return into / "src"


def evaluate_rss(src: Path, model: str, data: str, out: Path) -> dict:
    """Peak RSS (MiB) of one ``evaluate --runtime torch`` whose library is ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("DUALPATCH_CACHE", None)  # the images' own scoring path, as a user runs it
    cmd = [sys.executable, "-m", "dualpatch.cli", "evaluate", "--model", model, "--dataset",
           "kolektorsdd", "--data", data, "--runtime", "torch", "--out", str(out)]  # fmt: skip
    r = run_rss(cmd, env)
    return {"command": " ".join(cmd[1:]), "peak_rss_mib": r["peak_rss_mib"]}


def same_outputs(a: Path, b: Path) -> dict[str, bool]:
    return {name: (a / name).read_bytes() == (b / name).read_bytes() for name in OUTPUTS}


def anchor_rss() -> dict:
    found = json.loads(ANCHOR_JSON.read_text())["anomalib"]
    return {
        "peak_rss_mib": found["process_peak_rss_mib"],
        "source": f"{ANCHOR_JSON.relative_to(ROOT)}: anomalib.process_peak_rss_mib",
        "anchor_command": found["command"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a fitted model folder (dualpatch fit)")
    ap.add_argument("--data", required=True, help="the KolektorSDD folder")
    ap.add_argument("--before", default="main", help="git ref of the code to compare against")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/evaluate_rss.json"))
    args = ap.parse_args()
    anchor = anchor_rss()
    card = json.loads((Path(args.model) / "model.json").read_text())
    with tempfile.TemporaryDirectory(prefix="evaluate-rss-") as tmp:
        work = Path(tmp)
        before = evaluate_rss(export_ref(args.before, work), args.model, args.data, work / "b")
        after = evaluate_rss(ROOT / "src", args.model, args.data, work / "a")
        identical = same_outputs(work / "b", work / "a")
    limit = anchor["peak_rss_mib"] / 2
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit_after": _git("rev-parse", "HEAD"),
        "working_tree_clean": _git("status", "--porcelain", "src") == "",
        "before_ref": args.before,
        "git_commit_before": _git("rev-parse", args.before),
        "model": args.model,
        "model_class": card.get("class"),
        "model_params": card.get("params"),
        "before": before,
        "after": after,
        "outputs_byte_identical": identical,
        "anchor_anomalib": anchor,
        "target_peak_rss_mib": limit,
        "after_fraction_of_anomalib": round(after["peak_rss_mib"] / anchor["peak_rss_mib"], 3),
        "target_met": after["peak_rss_mib"] <= limit,
        "note": "peak RSS from os.wait4 of each evaluate process; memory, not time, so valid on "
        "a loaded machine",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("before", "after", "outputs_byte_identical",
                                             "target_met")}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
