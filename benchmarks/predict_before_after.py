"""``dualpatch predict`` of this tree against another source tree, interleaved on the same images.

Under contention from other jobs, two separate benchmark runs are not comparable; alternating
the two trees on one set of images, twice, is. The model is fit by the reference tree, so both can
load it.

    git archive 3f2d9a9 src | tar -x -C /tmp/before
    python benchmarks/predict_before_after.py --before /tmp/before/src --count 300 --size 320 128

Writes ``benchmarks/results/predict_before_after.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import predict_scaling as ps  # noqa: E402

RESULTS = ps.ROOT / "benchmarks" / "results" / "predict_before_after.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="Reference source tree.")
    parser.add_argument("--label", default="3f2d9a9", help="What the reference tree is.")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, nargs=2, default=[320, 128], metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    h, w = args.size
    base = dict(os.environ, DUALPATCH_CACHE="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    trees = {"after": dict(base, PYTHONPATH=str(ps.ROOT / "src")),
             "before": dict(base, PYTHONPATH=str(args.before))}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="predict-before-after-"))
    runs = []
    try:
        model = ps.fit_model(work, h, w, trees["before"])
        images = ps.make_images(work / "images", args.count, h, w)
        for round_ in range(args.rounds):
            for name, env in trees.items():
                out = work / f"out-{name}-{round_}"
                result = {"tree": name, "round": round_, **ps.run_predict(images, model, out, env)}
                print(json.dumps(result), flush=True)
                runs.append(result)
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def mean(tree: str, key: str) -> float:
        values = [r[key] for r in runs if r["tree"] == tree]
        return round(sum(values) / len(values), 2)

    summary = {
        "command": f"python benchmarks/predict_before_after.py --before {args.before} "
        f"--label {args.label} --count {args.count} --size {h} {w} --rounds {args.rounds}",
        "before": args.label,
        "image_size_hw": [h, w],
        "images": args.count,
        "runs": runs,
        "mean_wall_seconds": {t: mean(t, "wall_seconds") for t in trees},
        "mean_peak_rss_mb": {t: mean(t, "peak_rss_mb") for t in trees},
    }
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))


if __name__ == "__main__":
    main()
