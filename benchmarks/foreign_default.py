"""A spot check of one fitted model against foreign frames at its stored threshold: black,
white, grey, noise, blur and turned frames (``data.foreign``, 3 seeds, drawn from the KolektorSDD
good test images) and images of the two other datasets. Made for the model ``fit`` makes with
no options (``line_speed.py`` fits one); the safety suite (``safety_suite.py``) is the full
measurement over folds.

    python benchmarks/foreign_default.py --model M [--runtime onnx] [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from line_speed import run_header

HERE = Path(__file__).resolve().parent
OTHERS = {"bsdata": "test/good/*", "battery_weld": "welding/**/*.png"}


def main() -> None:
    from dualpatch.data import KolektorSDD
    from dualpatch.data.foreign import foreign_frames
    from dualpatch.data.images import read_image
    from dualpatch.fileio import write_json
    from dualpatch.models import PatchCore
    from dualpatch.serving.runtime import RUNTIMES, open_scorer
    from dualpatch.threshold import flag

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--runtime", default="torch", choices=RUNTIMES)
    ap.add_argument("--out", default=str(HERE / "results" / "foreign_default.json"))
    args = ap.parse_args()
    root = Path(args.data_root)
    model = PatchCore.load(args.model)
    size = (model.image_size[0], model.image_size[1])
    good = [s.image() for s in KolektorSDD(root / "kolektorsdd", "test") if s.label == 0][:20]
    frames = {}
    for seed in range(3):
        frames.update({f"{k}{seed}": v for k, v in foreign_frames(good, size, seed).items()})
    for name, pattern in OTHERS.items():
        for path in sorted((root / name).glob(pattern))[:3]:
            frames[f"{name}/{path.name}"] = read_image(path, size)  # the one decode path
    scorer = open_scorer(args.model, args.runtime, threads=2)
    scores, _ = scorer.score_images(np.stack(list(frames.values())))
    # the verdict serve and predict give: flagged when the score is above the threshold
    flagged = dict(zip(frames, flag(scores, model.threshold_).tolist(), strict=True))
    write_json(args.out, {
        **run_header(),
        "model": args.model,
        "runtime": args.runtime,
        "params": {k: model.get_params()[k] for k in ("coreset_ratio", "coreset_rows", "rule")},
        "threshold": model.threshold_,
        "scores": {n: float(s) for n, s in zip(frames, scores, strict=True)},
        "flagged": sum(flagged.values()),
        "frames": len(flagged),
        "passed": [n for n, f in flagged.items() if not f],
    })  # fmt: skip
    print(f"{sum(flagged.values())} of {len(flagged)} foreign frames flagged")


if __name__ == "__main__":
    main()
