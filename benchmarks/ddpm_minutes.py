"""The DDPM against the clock on KolektorSDD: training steps per minute and sampling seconds per
defect on the 2 cores (``--timing``, run through ``benchmarks/timed.sh``), and fidelity against
training minutes up to the 15-minute default budget (``--fidelity``, niced).

The model is the library's default (``DDPMConfig()``: auto scale, 10 DDIM steps, tight crop,
learned placement), trained on the default split's training set only (kos01-33).

``--timing`` (quiet machine, lock held): a fresh model trained to 5 steps (warm-up), then to 6 and
to 6 + ``--rate-steps``; the difference of the last two calls over ``--rate-steps`` is the wall
time of one training step (loading the images excluded). Then sampling: runs of 2, 2 and
``--timing-n`` defects with the default sampler; the difference of the last two over
``timing_n - 2`` is the marginal wall time of one defect, the last run's total over its defects
the time including the model load. Both record ``uptime`` and the share of the machine's CPU that
other processes used meanwhile. Writes ``ddpm_sampling_time.json`` and the rate into
``ddpm_minutes.json``.

``--fidelity`` (niced, any load): one training run, resumed in stages that end at the step counts
that ``--minutes`` take at the measured rate (``minutes × 60 / s_per_step``; resuming is exact, so
the stages are one run's checkpoints). After each stage: ``--n`` defects sampled with the default
sampler, compared with REAL TEST defect patches (kos35-50; kos34, a copy of kos27, dropped) in the
backbone's patch-feature space (Lite0, 320x128): mean nearest distance, precision/recall
(Kynkäänniemi et al. 2019), density/coverage (Naeem et al. 2020), k = 5. Beside them, in the same
run: real training defects, copy-paste (``--n`` images) and random normal test patches. These are
measurements: nothing is chosen on them.

    benchmarks/timed.sh python benchmarks/ddpm_minutes.py --timing
    nice -n 19 python benchmarks/ddpm_minutes.py --fidelity --minutes 2 5 10 15
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from line_speed import busy_cpu_s, uptime  # this folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
SIZE = (320, 128)
MINUTES_JSON = HERE / "results" / "ddpm_minutes.json"
SAMPLING_JSON = HERE / "results" / "ddpm_sampling_time.json"


class Clock:
    """Wall and own CPU seconds of a block, and the machine share other processes took."""

    def __enter__(self) -> Clock:
        self.up0, self.busy0 = uptime(), busy_cpu_s()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        other = busy_cpu_s() - self.busy0 - self.cpu
        self.other_share = round(max(0.0, other) / (self.wall * (os.cpu_count() or 1)), 3)
        self.uptime = [self.up0, uptime()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--work", default="runs/ddpm-minutes")
    parser.add_argument("--timing", action="store_true", help="training rate and sampling speed")
    parser.add_argument("--rate-steps", type=int, default=20)
    parser.add_argument("--timing-n", type=int, default=10)
    parser.add_argument("--fidelity", action="store_true", help="fidelity against minutes")
    parser.add_argument("--minutes", nargs="+", type=float, default=[2, 5, 10, 15])
    parser.add_argument("--n", type=int, default=30, help="synthetic images per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=MINUTES_JSON,
                        help="fidelity JSON (another file: a new recipe measured from scratch, "
                        "with the timed rate of ddpm_minutes.json)")  # fmt: skip
    args = parser.parse_args()

    from dualpatch.experiment.protocol import make_splits

    split = make_splits("kolektorsdd", args.data, None, None, "drop", 0)[0]
    if args.timing:
        timing(args, split.train)
    if args.fidelity:
        fidelity_by_minutes(args, split)


def timing(args, train) -> None:
    import torch

    from dualpatch.augment.ddpm import sample_ddpm, train_ddpm

    model_dir = Path(args.work) / "rate-model"
    train_ddpm(train, model_dir, steps=5, seed=args.seed, progress=False)  # warm-up
    with Clock() as one:
        train_ddpm(train, model_dir, steps=6, seed=args.seed, progress=False)
    with Clock() as many:
        train_ddpm(train, model_dir, steps=6 + args.rate_steps, seed=args.seed, progress=False)
    rate = {
        "s_per_step": round((many.wall - one.wall) / args.rate_steps, 3),
        "cpu_s_per_step": round((many.cpu - one.cpu) / args.rate_steps, 3),
        "steps_timed": args.rate_steps,
        "threads": torch.get_num_threads(),
        "other_processes_cpu_share": many.other_share,
        "uptime": many.uptime,
    }
    print("training", rate, flush=True)
    clocks = []
    for n in (2, 2, args.timing_n):  # the first run warms up (imports, first calls)
        with Clock() as c:
            sample_ddpm(model_dir, train, n, Path(args.work) / "timing", seed=args.seed + 99,
                        progress=False, force=True)  # fmt: skip
        clocks.append(c)
    small, big = clocks[1], clocks[2]
    extra = args.timing_n - 2
    sampling = {
        "marginal_wall_s_per_defect": round((big.wall - small.wall) / extra, 3),
        "marginal_cpu_s_per_defect": round((big.cpu - small.cpu) / extra, 3),
        "total_wall_s_per_defect": round(big.wall / args.timing_n, 3),
        "defects": args.timing_n,
        "threads": torch.get_num_threads(),
        "sampler": "default: 10 DDIM steps, tight crop (8 model px), feather 1, learned placement",
        "scale": json.loads((model_dir / "config.json").read_text())["train"]["scale"],
        "other_processes_cpu_share": big.other_share,
        "uptime": big.uptime,
    }
    print("sampling", sampling, flush=True)
    from dualpatch.fileio import write_json

    command = "benchmarks/timed.sh python benchmarks/ddpm_minutes.py --timing"
    old = json.loads(SAMPLING_JSON.read_text()) if SAMPLING_JSON.exists() else {}
    write_json(SAMPLING_JSON, {
        "command": command,
        "default_sampler": sampling,
        "target_s_per_defect": 1.0,
        "met": sampling["total_wall_s_per_defect"] <= 1.0,
        "earlier_niced_under_load": old.get("sampling", old.get("earlier_niced_under_load", {})),
    })  # fmt: skip
    minutes = json.loads(MINUTES_JSON.read_text()) if MINUTES_JSON.exists() else {}
    write_json(MINUTES_JSON, minutes | {"rate": rate | {"command": command}})


def fidelity_by_minutes(args, split) -> None:
    import torch

    from dualpatch import DualPatchCore
    from dualpatch.augment import RECIPES, DDPMConfig, augmented_samples
    from dualpatch.augment.ddpm import sample_ddpm, train_ddpm
    from dualpatch.augment.fidelity import fidelity
    from dualpatch.augment.paste import generate_paste
    from dualpatch.fileio import write_json

    out = args.out
    rate = json.loads(MINUTES_JSON.read_text())["rate"]
    results = json.loads(out.read_text()) if out.exists() else {"rate": rate}
    if "rate" not in results or not isinstance(results.get("ddpm", {}), dict):
        # resuming extends the file: one this script did not write is left alone
        raise SystemExit(f"error: {out}: not a ddpm_minutes result; choose another --out")
    s_per_step = results["rate"]["s_per_step"]
    train, test = split.train, split.test
    work = Path(args.work)
    model = DualPatchCore(image_size=SIZE, progress=False, seed=args.seed)
    model.fit(train.normal()[:8], train.defective()[:1])  # only the backbone is used below
    real_test = model.defect_image_features([s for s in test if s.label == 1])
    results |= {
        "command": "nice -n 19 python benchmarks/ddpm_minutes.py --fidelity --minutes "
        + " ".join(f"{m:g}" for m in args.minutes)
        + ("" if out == MINUTES_JSON else f" --out {out} --work {args.work}"),
        "recipe": {
            "ddpm": RECIPES["ddpm"],
            "paste": RECIPES["paste"],
            "ddpm_config": DDPMConfig().to_json(),
        },  # fmt: skip
        "reference": "real TEST defect patches (KolektorSDD default split, kos34 dropped)",
        "real_test_defect_patches": int(real_test.shape[0]),
        "k": 5,
        "images_per_measurement": args.n,
    }
    base = results.setdefault("baselines", {})
    stages = results.setdefault("ddpm", {})

    def add(where: dict, name: str, feats, **extra) -> None:
        where[name] = fidelity(feats, real_test).to_json() | extra
        write_json(out, results)
        shown = {k: round(v, 3) for k, v in where[name].items() if isinstance(v, float)}
        print(f"{name:28s} {shown}", flush=True)

    if "random normal test patches" not in base:
        normal = model.image_features([s for s in test if s.label == 0])
        flat = normal.reshape(-1, normal.shape[-1])
        pick = np.random.default_rng(args.seed).choice(len(flat), 2000, replace=False)
        add(base, "random normal test patches", flat[torch.from_numpy(pick)])
        add(base, "real training defects", model.defect_image_features(train.defective()))
        paste = work / "paste"
        if not (paste / "manifest.csv").is_file():
            generate_paste(train, args.n, paste, seed=args.seed, progress=False)
        add(base, "copy-paste", model.defect_image_features(augmented_samples([paste])))
    model_dir = work / "model"
    for minutes in args.minutes:
        if f"{minutes:g}" in stages:
            continue
        steps = max(1, round(minutes * 60 / s_per_step))
        with Clock() as c:
            train_ddpm(train, model_dir, steps=steps, seed=args.seed, progress=False)
        folder = work / f"samples-{steps}"
        sample_ddpm(model_dir, train, args.n, folder, seed=args.seed, progress=False, force=True)
        feats = model.defect_image_features(augmented_samples([folder]))
        add(stages, f"{minutes:g}", feats, minutes_on_2_quiet_cores=minutes, train_steps=steps,
            stage_wall_minutes_here=round(c.wall / 60, 2),
            stage_cpu_minutes_here=round(c.cpu / 60, 2), uptime=c.uptime)  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
