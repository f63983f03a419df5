"""Few-shot benchmark on KolektorSDD: what do n real defects, and synthetic ones from them, buy?

For each n in ``--shots`` and each of ``--repeats`` seeded draws of n defective training images
(``dualpatch.fewshot``), it fits and scores through the public API (``fit``, ``fit_defects``,
``predict``, ``evaluate``):

- ``single``: PatchCore on the normal training images (no defects; one fit serves every n);
- ``dual``: DualPatchCore, defect bank = the n drawn defects;
- ``dual+paste``: plus ``--paste-n`` copy-paste images made from those n defects only;
- ``dual+feature``: plus feature-space rows (``defect_feature_augment``) made from them;
- ``dual+ddpm``: plus ``--ddpm-n`` DDPM images, one model trained per draw on its n defects
  (only for n <= ``--ddpm-max-shots``; expensive on a CPU).

Settings are the library defaults (Lite0, 320x128, 1 % normal coreset, 10 % defect coreset,
weighted dual rule), fixed before any test score was seen. The test split is KolektorSDD's default
(kos34-kos50) minus every test image byte-identical to a training image (kos34 duplicates kos27).
Image AUROC, image AP and AUPRO per draw, and their mean and standard deviation over draws, go to
``benchmarks/results/fewshot.json`` (rewritten after every fit, so an interrupted run resumes) and a
plot to ``docs/fewshot.png``.

    python benchmarks/fewshot.py --data ../shared/data/kolektorsdd
    python benchmarks/fewshot.py --plot-only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = (320, 128)
METRICS = ("image_auroc", "image_ap", "pixel_aupro")
SOURCES = ("single", "dual", "dual+paste", "dual+feature", "dual+ddpm")
#: fixed a priori (the estimator's defaults for n and strength), never tuned on test scores
FEATURE_AUGMENT = {"method": "interpolate"}


def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def deduplicated_test(train, test) -> tuple[list, list[str]]:
    """Test samples whose image bytes match no training image, and the ids dropped."""
    seen = {file_sha256(s.image_path) for s in train}
    kept, dropped = [], []
    for s in test:
        (dropped if file_sha256(s.image_path) in seen else kept).append(s)
    return kept, [s.id for s in dropped]


def shots_arg(value: str):
    return value if value == "all" else int(value)


def summarise(runs: dict) -> dict:
    """Mean, std (over draws, ddof=0 for one draw) and values per (source, shots)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for key, r in runs.items():
        source, shots, _ = key.split("/")
        groups.setdefault((source, shots), []).append(r["metrics"])
    out: dict = {}
    for (source, shots), ms in sorted(groups.items()):
        entry = {"draws": len(ms)}
        for m in METRICS:
            vals = [x[m] for x in ms if x[m] is not None and not math.isnan(x[m])]
            entry[m] = {
                "mean": float(np.mean(vals)) if vals else None,
                "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                "values": vals,
            }
        out.setdefault(source, {})[shots] = entry
    return out


def paired(runs: dict) -> dict:
    """Per source and n: mean and std over draws of (source - dual with the same real defects)."""
    out: dict = {}
    for key, r in runs.items():
        source, shots, repeat = key.split("/")
        base = runs.get(f"dual/{shots}/{repeat}")
        if source in ("single", "dual") or base is None:
            continue
        for m in METRICS:
            diff = r["metrics"][m] - base["metrics"][m]
            out.setdefault(source, {}).setdefault(shots, {}).setdefault(m, []).append(diff)
    return {
        source: {
            shots: {
                m: {
                    "mean": float(np.mean(v)),
                    "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                    "values": v,
                }
                for m, v in ms.items()
            }  # fmt: skip
            for shots, ms in by_n.items()
        }
        for source, by_n in out.items()
    }


def verdict(summary: dict, margin: float = 0.01, max_shots: int = 5) -> dict:
    """The issue's goal per source: at every n <= ``max_shots``, mean image AUROC and AP at least
    ``margin`` above dual-real-only, with mean +- std intervals that do not overlap."""
    out = {}
    for source, by_n in summary.items():
        if source in ("single", "dual"):
            continue
        checks = {}
        for shots, e in by_n.items():
            if shots == "all" or int(shots) > max_shots or shots not in summary.get("dual", {}):
                continue
            base = summary["dual"][shots]
            ok = True
            for m in ("image_auroc", "image_ap"):
                a, b = e[m], base[m]
                ok &= a["mean"] - b["mean"] >= margin
                ok &= a["mean"] - a["std"] > b["mean"] + b["std"]
            checks[shots] = bool(ok)
        out[source] = {"per_n": checks, "meets_goal": bool(checks) and all(checks.values())}
    return out


def plot(summary: dict, shots: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(s) for s in shots]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), sharex=True)
    for ax, m in zip(axes, METRICS, strict=True):
        for j, source in enumerate(SOURCES):
            if source not in summary:
                continue
            xs = [i for i, s in enumerate(labels) if s in summary[source]]
            shift = 0.06 * (j - 2)  # side by side, so that the error bars stay readable
            mean = np.array([summary[source][labels[i]][m]["mean"] for i in xs], dtype=float)
            std = np.array([summary[source][labels[i]][m]["std"] for i in xs], dtype=float)
            ax.errorbar(np.array(xs) + shift, mean, yerr=std, marker="o", capsize=3, label=source)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("real defective training images (n)")
        ax.set_title(m.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("KolektorSDD few-shot: mean ± std over draws", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=110)
    os.replace(tmp.name, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument("--shots", nargs="+", type=shots_arg, default=[1, 2, 5, 10, "all"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES[:4]), choices=SOURCES)
    parser.add_argument("--paste-n", type=int, default=100)
    parser.add_argument("--ddpm-n", type=int, default=100)
    parser.add_argument("--ddpm-steps", type=int, default=300)
    parser.add_argument("--ddpm-sample-steps", type=int, default=10)
    parser.add_argument("--ddpm-max-shots", type=int, default=5)
    parser.add_argument("--work", default="runs/fewshot", help="generated images, models, cache")
    parser.add_argument("--out", default=str(HERE / "results" / "fewshot.json"))
    parser.add_argument("--plot", default=str(HERE.parent / "docs" / "fewshot.png"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()

    from dualpatch.fileio import write_json

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    if args.plot_only:
        results["summary"] = summarise(results["runs"])
        results["paired_vs_dual"] = paired(results["runs"])
        results["goal"] = verdict(results["summary"])
        write_json(out, results)
        plot(results["summary"], results["shots"], Path(args.plot))
        return

    import torch

    from dualpatch import DualPatchCore, PatchCore
    from dualpatch.augment import augmented_samples
    from dualpatch.augment.paste import generate_paste
    from dualpatch.data import KolektorSDD
    from dualpatch.evaluation import evaluate
    from dualpatch.fewshot import fewshot_draws

    torch.set_num_threads(1)  # 2 cores shared with other jobs: one thread is fastest here
    work = Path(args.work)
    train, full_test = KolektorSDD(args.data, "train"), KolektorSDD(args.data, "test")
    test, dropped = deduplicated_test(train, full_test)
    masks = np.stack([s.mask(SIZE) for s in test])
    common = dict(image_size=SIZE, progress=False, seed=args.seed, cache_dir=str(work / "cache"))
    draws = fewshot_draws(train.defective(), args.shots, args.repeats, args.seed)
    results |= {
        "protocol": "KolektorSDD default split (kos01-33 train, kos34-50 test)",
        "test_images": len(test),
        "test_defective": int(sum(s.label for s in test)),
        "dropped_test_duplicates": dropped,
        "shots": [str(s) for s in args.shots],
        "settings": {
            "backbone": "efficientnet_lite0",
            "image_size": list(SIZE),
            "normal_coreset": 0.01,
            "defect_coreset": 0.10,
            "rule": "weighted",
            "paste_n": args.paste_n,
            "feature_augment": FEATURE_AUGMENT,
            "ddpm_n": args.ddpm_n,
            "ddpm_steps": args.ddpm_steps,
            "ddpm_sample_steps": args.ddpm_sample_steps,
        },  # fmt: skip
        "draws": [d.to_json() for d in draws],
    }
    runs = results["runs"]

    def record(key: str, model, defects_: list, t0: float, extra: dict | None = None) -> None:
        pred = model.predict(test)
        metrics = evaluate(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
        runs[key] = {
            "metrics": {m: metrics[m] for m in METRICS},
            "defect_images": len(defects_),
            "seconds": round(time.perf_counter() - t0, 1),
            "load": os.getloadavg()[0],
            **(extra or {}),
        }
        results["summary"] = summarise(runs)
        results["paired_vs_dual"] = paired(runs)
        results["goal"] = verdict(results["summary"])
        write_json(out, results)
        m = runs[key]["metrics"]
        print(f"{key:28s} AUROC {m['image_auroc']:.3f} AP {m['image_ap']:.3f} "
              f"AUPRO {m['pixel_aupro']:.3f} ({runs[key]['seconds']} s)", flush=True)  # fmt: skip

    if "single" in args.sources:
        t0 = time.perf_counter()
        single = None
        for shots in args.shots:  # one model: it sees no defects, whatever n is
            if f"single/{shots}/0" not in runs:
                single = single or PatchCore(**common).fit(train.normal())
                record(f"single/{shots}/0", single, [], t0)
    # One normal bank serves every dual run: it does not depend on the defects, and the CPU is
    # scarce. Each run rebuilds only the defect bank (``fit_defects``), as a full fit would.
    dual = None
    for d in draws:
        tag = f"{d.shots}/{d.repeat}"
        real = list(d.defects)
        for source in args.sources:
            key = f"{source}/{tag}"
            if source == "single" or key in runs:
                continue
            t0 = time.perf_counter()
            extra: dict = {}
            defects = real
            feature_augment = None
            if source == "dual+paste":
                folder = work / f"paste-{d.shots}-{d.repeat}"
                generate_paste(d.sources(train), args.paste_n, folder, seed=d.seed, progress=False)
                defects = real + augmented_samples([folder])
            elif source == "dual+feature":
                feature_augment = FEATURE_AUGMENT
            elif source == "dual+ddpm":
                if d.shots == "all" or d.shots > args.ddpm_max_shots:
                    continue
                from dualpatch.augment.ddpm import DDPMConfig, generate_ddpm

                folder = work / f"ddpm-{d.shots}-{d.repeat}"
                cfg = DDPMConfig(sample_steps=args.ddpm_sample_steps)
                t1 = time.perf_counter()
                generate_ddpm(d.sources(train), args.ddpm_n, folder, steps=args.ddpm_steps,
                              seed=d.seed, cfg=cfg, progress=False)  # fmt: skip
                extra["generate_s"] = round(time.perf_counter() - t1, 1)
                defects = real + augmented_samples([folder])
            if dual is None:
                dual = DualPatchCore(**common).fit(train.normal(), real)
            dual.defect_feature_augment = feature_augment
            record(key, dual.fit_defects(defects), defects, t0, extra)
    plot(results["summary"], results["shots"], Path(args.plot))
    print(f"wrote {out} and {args.plot}")


if __name__ == "__main__":
    main()
