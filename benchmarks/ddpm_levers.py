"""DDPM levers on KolektorSDD: fidelity against training minutes, and sampling seconds per defect.

Every DDPM is trained on the training split only (default split, kos01-33) and its defects are
compared with REAL TEST defect patches (kos35-50; kos34, a copy of kos27, dropped), which neither
training nor sampling sees, in the backbone's patch-feature space (Lite0, 320x128): mean nearest
distance, precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020),
``dualpatch.augment.fidelity``. Beside them: real training defects, random normal test patches and
copy-paste, measured in the same run.

Levers (``--levers``), each trained in stages (``--stages``, cumulative training steps; resuming
is exact), sampled (``--n`` images, the default fast sampler: tight crop, 10 DDIM steps, learned
placement) and measured after each stage:

- ``auto``: the model as it was (scale from the defects' sizes: ``ddpm.auto_scale``);
- ``backbone``: trained and sampled at the scale at which the backbone sees the image (image_size
  / image height, about 0.26 on KolektorSDD), so that a model pixel is a backbone input pixel: the
  defects it learns are the ones the patch features see, with 4x the surface around them;

No lever is chosen on these figures: the library's DDPM defaults stay as they are.
Writes ``benchmarks/results/ddpm_levers.json``.

    python benchmarks/ddpm_levers.py --data ../shared/data/kolektorsdd --levers auto backbone
    python benchmarks/ddpm_levers.py --timing-only   # sampling s/defect (run at normal priority)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = (320, 128)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kolektorsdd")
    parser.add_argument("--levers", nargs="+", default=["auto", "backbone"])
    parser.add_argument("--stages", nargs="+", type=int, default=[40, 80])
    parser.add_argument("--n", type=int, default=30, help="synthetic images per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/ddpm-levers")
    parser.add_argument("--out", default=str(HERE / "results" / "ddpm_levers.json"))
    parser.add_argument("--timing-only", action="store_true", help="sampling time only")
    parser.add_argument("--timing-n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from dualpatch import DualPatchCore
    from dualpatch.augment import augmented_samples
    from dualpatch.augment.ddpm import DDPMConfig, sample_ddpm, train_ddpm
    from dualpatch.augment.fidelity import fidelity
    from dualpatch.augment.paste import generate_paste
    from dualpatch.experiment.protocol import make_splits
    from dualpatch.fileio import write_json

    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    results = json.loads(out.read_text()) if out.exists() else {"levers": {}, "baselines": {}}
    split = make_splits("kolektorsdd", args.data, None, None, "drop", 0)[0]
    train, test = split.train, split.test
    height = float(np.median([s.image().shape[0] for s in train.defective()[:8]]))
    configs = {
        "auto": DDPMConfig(),
        "backbone": DDPMConfig(scale=SIZE[0] / height),
    }
    if args.timing_only:
        timing(args, results, configs, train, out, sample_ddpm, write_json)
        return

    model = DualPatchCore(image_size=SIZE, progress=False, seed=args.seed)
    model.fit(train.normal()[:8], train.defective()[:1])  # only the backbone is used below
    real_test = model.defect_image_features([s for s in test if s.label == 1])
    results |= {
        "reference": "real TEST defect patches (KolektorSDD default split, kos34 dropped)",
        "real_test_defect_patches": int(real_test.shape[0]),
        "dropped_test_duplicates": split.duplicates.dropped,
        "k": 5,
        "image_height": height,
    }

    def add(where: dict, name: str, feats, **extra) -> None:
        where[name] = fidelity(feats, real_test).to_json() | extra
        write_json(out, results)
        shown = {k: round(v, 3) for k, v in where[name].items() if isinstance(v, float)}
        print(f"{name:40s} {shown}", flush=True)

    base = results["baselines"]
    if "random normal test patches" not in base:
        rng = np.random.default_rng(args.seed)
        normal = model.image_features([s for s in test if s.label == 0])
        flat = normal.reshape(-1, normal.shape[-1])
        pick = torch.from_numpy(rng.choice(len(flat), 2000, replace=False))
        add(base, "random normal test patches", flat[pick])
        add(base, "real training defects", model.defect_image_features(train.defective()))
        paste = work / "paste"
        if not (paste / "manifest.csv").is_file():
            generate_paste(train, args.n, paste, seed=args.seed, progress=False)
        add(base, "copy-paste", model.defect_image_features(augmented_samples([paste])))

    for lever in args.levers:
        entry = results["levers"].setdefault(lever, {"stages": {}})
        cfg = configs[lever]
        model_dir = work / lever / "model"
        for steps in args.stages:
            if str(steps) in entry["stages"]:
                continue
            load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
            config = train_ddpm(train, model_dir, steps=steps, seed=args.seed, cfg=cfg,
                                progress=False)  # fmt: skip
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            entry["scale"] = config["train"]["scale"]
            entry["wall_minutes"] = round(entry.get("wall_minutes", 0.0) + wall / 60, 2)
            entry["cpu_minutes"] = round(entry.get("cpu_minutes", 0.0) + cpu / 60, 2)
            folder = work / lever / f"samples-{steps}"
            t1, c1 = time.perf_counter(), time.process_time()
            sample_ddpm(model_dir, train, args.n, folder, seed=args.seed, progress=False,
                        force=True)  # fmt: skip
            feats = model.defect_image_features(augmented_samples([folder]))
            add(entry["stages"], str(steps), feats, train_steps=steps,
                train_wall_minutes=entry["wall_minutes"], train_cpu_minutes=entry["cpu_minutes"],
                sample_wall_s_per_defect=round((time.perf_counter() - t1) / args.n, 2),
                sample_cpu_s_per_defect=round((time.process_time() - c1) / args.n, 2),
                load=[load0, os.getloadavg()[0]], images=args.n)  # fmt: skip
    print(f"wrote {out}")


def timing(args, results, configs, train, out: Path, sample_ddpm, write_json) -> None:
    """Sampling wall seconds per defect of each lever's latest model (run at normal priority).

    After a warm-up run, two runs of 2 and of ``timing_n`` defects: their difference over
    ``timing_n - 2`` is the marginal cost of one defect (model loading and learning the placement
    prior excluded); the larger run's total over its defects is given too."""
    work = Path(args.work)
    rows = results.setdefault("sampling", {})
    for lever in args.levers:
        model_dir = work / lever / "model"
        if not (model_dir / "config.json").is_file():
            continue
        before = uptime()
        times = []
        for n in (2, 2, args.timing_n):  # the first run warms up (imports, first calls)
            t0, c0 = time.perf_counter(), time.process_time()
            sample_ddpm(model_dir, train, n, work / lever / "timing", seed=args.seed + 99,
                        progress=False, force=True)  # fmt: skip
            times.append((time.perf_counter() - t0, time.process_time() - c0))
        times = times[1:]
        extra = args.timing_n - 2
        rows[f"{lever}, {args.threads} thread(s)"] = {
            "marginal_wall_s_per_defect": round((times[1][0] - times[0][0]) / extra, 3),
            "marginal_cpu_s_per_defect": round((times[1][1] - times[0][1]) / extra, 3),
            "total_wall_s_per_defect": round(times[1][0] / args.timing_n, 3),
            "defects": args.timing_n,
            "threads": args.threads,
            "uptime_before": before,
            "uptime_after": uptime(),
            "scale": json.loads((model_dir / "config.json").read_text())["train"]["scale"],
            "train_steps": json.loads((model_dir / "config.json").read_text())["step"],
        }
        write_json(out, results)
        print(lever, rows[f"{lever}, {args.threads} thread(s)"], flush=True)


if __name__ == "__main__":
    main()
