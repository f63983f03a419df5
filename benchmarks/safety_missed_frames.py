"""Why the safety suite's procedure passed a foreign frame: for every frame that an outer fold's
own nested choice scored at or below its stored threshold (``safety_<dataset>.json``,
``foreign_missed``), the two statistics the verdict rests on, and where the frame sits among the
same fold's good test images on each.

* the rule's patch score, as a share of the stored threshold;
* the image-level check's missing content (``dualpatch.bank.coverage``), as a share of the
  check's level, with the level's two parts (held-out normals, training images left out);
* how many of the fold's good test images score at least as high on the patch score, on the
  missing content, and on both, and how many of its held-out normal images (training side) score
  at least as high on both. A good image at least as high on both means that no verdict that
  rises with both statistics can flag the frame without also rejecting that good image;
* whether the frame is new at all, without any model: its nearest training normal image in
  pixels (grey thumbnails at an eighth of the model size, as the model resizes them), and the
  share of the training normals that lie at least that far from their own nearest other training
  normal. A large share means the frame is nearer a training image than most normal images are to
  theirs: a copy of the normal layout, not a novelty.

Test labels are read here only to describe a frame already passed; nothing is chosen on them.

It reads the stored fits of ``safety_compute.py`` and the checks of ``safety_gate.py``; no
refits, no choice is made here.

    python benchmarks/safety_missed_frames.py --work runs/safety

Writes ``benchmarks/results/safety_missed_frames.json``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from line_speed import run_header
from PIL import Image
from safety_data import DATASETS, pooled_samples
from safety_suite import NO_CHECK, RESULTS, Fold, stored_fits_args
from scipy.spatial.distance import cdist

from dualpatch.fileio import write_json

#: thumbnails at this fraction of the model size (H, W): the layout, not the texture
THUMB = 8


@functools.cache  # the folds share most training images: each read once
def thumbnail(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Grey pixels of an image resized (bilinear) to ``size`` // ``THUMB``, in [0, 1], flat."""
    h, w = size[0] // THUMB, size[1] // THUMB
    with Image.open(path) as image:
        grey = image.convert("L").resize((w, h), Image.BILINEAR)
    return np.asarray(grey, dtype=np.float64).ravel() / 255


def frame_file(folder: Path, frame_id: str) -> Path:
    """Where ``data.foreign.write_frames`` wrote a frame: sample id "foreign-NAME", NAME.png."""
    return folder / f"{frame_id.removeprefix('foreign-').replace('/', '_')}.png"


class Thumbs:
    """Thumbnails of one fold's training normals, and each one's distance to its nearest other."""

    def __init__(self, normals: dict[str, Path], size: tuple[int, int]):
        self.ids, self.size = list(normals), size
        self.thumbs = np.stack([thumbnail(normals[i], size) for i in self.ids])
        # pairwise by scipy: a broadcast difference held n x n x pixels floats (1 GB on BSData)
        apart = cdist(self.thumbs, self.thumbs)
        np.fill_diagonal(apart, np.inf)
        self.own_nearest = apart.min(1)


def pixel_twin(frame: Path, normals: Thumbs) -> dict:
    """The frame's nearest training normal in pixels, and the share of the training normals at
    least that far from their own nearest other training normal (leave-one-out)."""
    ids, thumbs, own_nearest = normals.ids, normals.thumbs, normals.own_nearest
    to_frame = np.linalg.norm(thumbs - thumbnail(frame, normals.size), axis=1)
    nearest = int(to_frame.argmin())
    return {
        "nearest_training_normal": ids[nearest],
        "distance": round(float(to_frame[nearest]), 3),
        "training_normals": len(ids),
        "share_of_training_normals_at_least_as_far_from_their_nearest": round(
            float((own_nearest >= to_frame[nearest]).mean()), 4
        ),
    }


def missed_frames(work: Path, name: str) -> dict:
    """{"missed": every frame the procedure passed, "turned_frames": every turned frame's pixel
    twin (flagged or not), for contrast}."""
    samples = {s.id: s for s in pooled_samples(name)}
    published = json.loads((RESULTS / f"safety_{name}.json").read_text())
    out, turned = [], []
    for entry in published["choices_per_outer_fold"]:
        chosen = entry["chosen"]
        norm, rule = chosen["normalization"], chosen["rule"]
        path = work / name / norm / f"{entry['fold']}.outer.npz"
        if not path.exists():  # before anything is written: a wrong --work must not replace it
            raise SystemExit(f"{path}: no stored fit (safety_compute.py)")
        fold = Fold(path)
        threshold = fold.threshold(rule)
        scores, _ = fold.scores(rule, "foreign")
        patch_scores, _ = fold.scores(rule + NO_CHECK, "foreign")
        test_patch, _ = fold.scores(rule + NO_CHECK, "test")
        good = fold.arrays["test.label"] == 0
        gate = fold.missing
        held_level = float(np.max(gate["held.miss"]))
        left_out_level = float(np.max(gate["bank.leave_image_out"], initial=0))
        level = max(held_level, left_out_level)
        good_patch, good_missing = test_patch[good], gate["test.miss"][good]
        held_patch, _ = fold.scores(rule + NO_CHECK, "held")
        split = json.loads((work / name / f"{entry['fold']}.split.json").read_text())
        normals = Thumbs(
            {i: samples[i].image_path for i in split["train"] if samples[i].label == 0},
            DATASETS[name]["size"],
        )
        folder = work / "foreign" / name / f"{entry['fold']}-outer"
        for i, frame_id in enumerate(fold.ids("foreign")):
            if frame_id.startswith("foreign-rotated"):  # every turned frame, for contrast
                turned.append({"fold": entry["fold"], "frame": frame_id,
                               "flagged": bool(scores[i] > threshold),
                               **pixel_twin(frame_file(folder, frame_id), normals)})  # fmt: skip
        for i in np.flatnonzero(scores <= threshold):
            frame = frame_file(folder, fold.ids("foreign")[i])
            patch, missing = float(patch_scores[i]), float(gate["foreign.miss"][i])
            at_least_patch, at_least_missing = good_patch >= patch, good_missing >= missing
            held_at_least = (held_patch >= patch) & (gate["held.miss"] >= missing)
            out.append({
                "fold": entry["fold"], "normalization": norm, "rule": rule,
                "frame": fold.ids("foreign")[i],
                "patch_score_over_threshold": round(patch / threshold, 4),
                "missing_content": round(missing, 3),
                "missing_content_over_level": round(missing / level, 4),
                "check_level": {"held_out_images": round(held_level, 3),
                                "training_images_left_out": round(left_out_level, 3)},
                "good_test_images": int(good.sum()),
                "good_at_least_as_high": {
                    "patch_score": int(at_least_patch.sum()),
                    "missing_content": int(at_least_missing.sum()),
                    "both": int((at_least_patch & at_least_missing).sum()),
                },
                "held_out_images": len(held_patch),
                "held_out_at_least_as_high_on_both": int(held_at_least.sum()),
                "pixel_twin": pixel_twin(frame, normals),
            })  # fmt: skip
    return {"missed": out, "turned_frames": turned}


def main() -> None:
    args = stored_fits_args(__doc__.splitlines()[0])
    record = {
        **run_header(),
        "datasets": {name: missed_frames(Path(args.work), name) for name in args.datasets},
    }
    write_json(RESULTS / "safety_missed_frames.json", record)
    print(json.dumps(record["datasets"], indent=1))


if __name__ == "__main__":
    main()
