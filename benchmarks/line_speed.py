"""At line speed: dualpatch's default model (torch, onnx, openvino) against anomalib's PatchCore
at the same coreset ratio.

KolektorSDD default split, 320x128, EfficientNet-Lite0, 2 CPU threads each. Our model is the one
``dualpatch fit`` makes with no options (dual bank, default coreset ratio, threshold held out and
stored), fitted here with an empty feature cache and timed; the anchor
(``../shared/anchors/anomalib`` beside the repository, ``ANCHOR_DIR`` overrides; ``bash setup.sh``
first) runs at the same ratio. Its fit takes about 20 minutes at 10 %, so its figures are recorded
once in ``--anchor-json`` and reused (``--rerun-anchor`` measures it again; then ours are measured
before and after it and each target is judged on our worse round).

Each measurement runs in its own process (peak RSS from ``wait4``) and records the share of the
CPU that other processes took meanwhile; above ``--max-foreign-cpu`` (10 %) nothing is written.

Targets (issue 25), at the default model:
  batched scoring   >= 4x anomalib's throughput (ms/img at batch 32), decode included
  batch-1 latency   median <= 1/3 of anomalib's median, and our p99 < 1.5x our median
  peak RSS          evaluate and predict <= 1/2 of anomalib's peak
  fit time          <= 0.1x anomalib's fit (ours includes the threshold's hold-out)
The backbone's forward time alone (batch 1 and batched) is recorded as the limit.

    python benchmarks/line_speed.py --data ../shared/data/kolektorsdd
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the anchor beside the repository, wherever it is cloned (issue 25: no absolute default)
ANCHOR = Path(os.environ.get("ANCHOR_DIR", HERE.parent.parent / "shared" / "anchors" / "anomalib"))
ANCHOR_HOME = Path(os.environ.get("ANCHOR_HOME", Path.home() / ".cache/anomalib-anchor"))
RUNTIMES = ("torch", "onnx", "openvino")
#: batch sizes of the batched-throughput figure (anomalib tests at 32; the best of ours is judged)
BATCHES = (8, 32)
EVALUATE_RUNTIMES = ("torch",)


def run_header() -> dict:
    """What every timing JSON starts with: its command, commit, when (UTC), CPU count and load."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return {
        "command": " ".join([sys.executable, *sys.argv]),
        "git_commit": commit.stdout.strip(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "uptime_start": uptime(),
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def busy_cpu_s() -> float:
    """CPU seconds all processes have spent busy since boot (/proc/stat, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_rss(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` and report its wall time, own peak RSS (from wait4) and the share of the
    machine's CPU that OTHER processes used meanwhile (how contaminated its timings are)."""
    busy0 = busy_cpu_s()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env or os.environ)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        foreign = busy_cpu_s() - busy0 - usage.ru_utime - usage.ru_stime
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "foreign_cpu_fraction": round(max(0.0, foreign) / (wall * (os.cpu_count() or 1)), 3),
        "stdout": stdout,
    }


# ---- child: speed of one runtime -------------------------------------------------------------
def child_speed(args) -> None:
    """Batch-32 throughput and batch-1 latency of one runtime on decoded test images."""
    import dualpatch  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)

    # isort: split
    import numpy as np

    if args.runtime == "torch":  # the exported runtimes run without torch
        import torch

        torch.set_num_threads(args.threads)
    from dualpatch.data import KolektorSDD
    from dualpatch.serving.runtime import open_scorer

    test = list(KolektorSDD(args.data, "test"))[: args.images]
    t0 = time.perf_counter()
    images = np.stack([s.image((320, 128)) for s in test])
    decode_ms = 1000 * (time.perf_counter() - t0) / len(test)
    scorer = open_scorer(args.model, args.runtime, threads=args.threads)
    batched = {}
    for batch in BATCHES:
        scorer.score_images(images[:batch])  # warm-up (allocations, graph optimisation)
        passes = []
        for _ in range(args.passes):
            t0 = time.perf_counter()
            scores, maps = [], []
            for start in range(0, len(images), batch):
                s, m = scorer.score_images(images[start : start + batch])
                scores.append(s)
                maps.append(m)
            passes.append(1000 * (time.perf_counter() - t0) / len(images))
        batched[batch] = passes
    np.savez(args.scores_out, scores=np.concatenate(scores), maps=np.concatenate(maps))
    result = {
        "runtime": args.runtime,
        "images": len(images),
        "decode_resize_ms_per_image": round(decode_ms, 2),
        **{f"batch{b}_ms_per_image": round(min(v), 2) for b, v in batched.items()},
        **{f"batch{b}_ms_per_image_passes": [round(x, 2) for x in v] for b, v in batched.items()},
        **latency_figures(scorer, images, ""),
    }
    # batch 1 on ONE thread as well: one image is too little work to split over two threads
    # without waiting at every operator's barrier, which is where the tail latency comes from
    if args.runtime == "torch":
        import torch

        torch.set_num_threads(1)
    else:
        scorer = open_scorer(args.model, args.runtime, threads=1)
    result.update(latency_figures(scorer, images, "_threads1"))
    print(json.dumps(result))


def latency_figures(scorer, images, suffix: str) -> dict:
    """Median, p90, p99 and max ms of scoring each image alone (after 3 warm-up calls)."""
    import numpy as np

    for i in range(3):
        scorer.score_images(images[i : i + 1])
    latency = []
    for i in range(len(images)):
        t0 = time.perf_counter()
        scorer.score_images(images[i : i + 1])
        latency.append(1000 * (time.perf_counter() - t0))
    lat = np.array(latency)
    return {
        f"batch1{suffix}_ms_median": round(float(np.median(lat)), 2),
        f"batch1{suffix}_ms_p90": round(float(np.percentile(lat, 90)), 2),
        f"batch1{suffix}_ms_p99": round(float(np.percentile(lat, 99)), 2),
        f"batch1{suffix}_ms_max": round(float(lat.max()), 2),
    }


# ---- parent ----------------------------------------------------------------------------------
def our_round(args, model: str, env: dict, tag: str, out_dir: Path) -> dict:
    cli = [sys.executable, "-m", "dualpatch.cli"]
    res: dict = {"model": model, "uptime_before": uptime()}
    for runtime in RUNTIMES:
        scores = out_dir / f"{tag}-{runtime}.npz"
        cmd = [sys.executable, __file__, "--child-speed", runtime, "--model", model]
        cmd += ["--data", args.data, "--images", str(args.images), "--passes", str(args.passes)]
        cmd += ["--threads", str(args.threads), "--scores-out", str(scores)]
        r = run_rss(cmd, env)
        res[runtime] = json.loads(r["stdout"].strip().splitlines()[-1])
        res[runtime]["process_peak_rss_mib"] = r["peak_rss_mib"]
        res[runtime]["foreign_cpu_fraction"] = r["foreign_cpu_fraction"]
        print(tag, runtime, json.dumps(res[runtime]), flush=True)
    for runtime in EVALUATE_RUNTIMES:
        ev = run_rss(
            cli
            + ["evaluate", "--model", model, "--dataset", "kolektorsdd", "--data", args.data]
            + (["--runtime", runtime] if runtime != "torch" else [])
            + ["--out", str(out_dir / f"{tag}-evaluate-{runtime}")],
            env,
        )
        res[f"evaluate_{runtime}"] = {k: ev[k] for k in ("wall_s", "peak_rss_mib")}
        metrics = json.loads((out_dir / f"{tag}-evaluate-{runtime}" / "metrics.json").read_text())
        res[f"evaluate_{runtime}"]["metrics"] = metrics
    files = sorted(str(p) for p in Path(args.data).glob("kos[3-5][0-9]/Part*.jpg"))
    files = [f for f in files if int(Path(f).parent.name[3:]) > 33]
    for runtime in RUNTIMES:
        pr = run_rss(
            cli
            + ["predict", *files, "--model", model, "--runtime", runtime]
            + ["--out", str(out_dir / f"{tag}-predict-{runtime}")],
            env,
        )
        res[f"predict_{runtime}"] = {k: pr[k] for k in ("wall_s", "peak_rss_mib")}
        res[f"predict_{runtime}"]["images"] = len(files)
    print(tag, json.dumps({k: v for k, v in res.items() if k.startswith(("evaluate", "predict"))}))
    res["uptime_after"] = uptime()
    return res


def leaked_test_images(data: str, count: int) -> list[int]:
    """Positions (among the first ``count`` test images) of exact copies of training images: the
    dual rules divide by the defect distance, which is ~0 for a copy of a bank image, so those
    scores are float noise divided by ``eps`` and differ between runtimes by design."""
    from dualpatch.data import KolektorSDD
    from dualpatch.fileio import sha256_file as file_sha256

    train = {file_sha256(s.image_path) for s in KolektorSDD(data, "train")}
    test = list(KolektorSDD(data, "test"))[:count]
    return [i for i, s in enumerate(test) if file_sha256(s.image_path) in train]


def parity(out_dir: Path, tag: str, leaked: list[int]) -> dict:
    """Deviation of each exported runtime from torch: image scores relative, maps relative to
    each image's map maximum; over all images, and without the leaked copies of training images."""
    import numpy as np

    ref = np.load(out_dir / f"{tag}-torch.npz")
    out: dict = {"leaked_copies_excluded": leaked}
    for runtime in ("onnx", "openvino"):
        got = np.load(out_dir / f"{tag}-{runtime}.npz")
        rel = np.abs(got["scores"] - ref["scores"]) / np.abs(ref["scores"])
        map_max = np.abs(ref["maps"]).reshape(len(rel), -1).max(1)
        map_dev = np.abs(got["maps"] - ref["maps"]).reshape(len(rel), -1).max(1) / map_max
        keep = np.setdiff1d(np.arange(len(rel)), leaked)
        if not keep.size:
            raise SystemExit("every image scored is a copy of a training image: use more --images")
        out[runtime] = {
            "max_relative_score_deviation": float(rel[keep].max()),
            "median_relative_score_deviation": float(np.median(rel[keep])),
            "max_map_deviation_relative_to_map_max": float(map_dev[keep].max()),
            "with_leaked_copies": {
                "max_relative_score_deviation": float(rel.max()),
                "max_map_deviation_relative_to_map_max": float(map_dev.max()),
            },
        }
    return out


def anchor_round(args, out_dir: Path) -> dict:
    py = ANCHOR_HOME / "venv/bin/python"
    if not py.exists():
        return {"error": f"{py} missing: run bash {ANCHOR}/setup.sh"}
    cmd = [str(py), str(ANCHOR / "anchor_anomalib.py"), "--data", args.data, "--size", "320x128"]
    cmd += ["--coreset-ratio", str(args.coreset), "--norm", "imagenet"]
    cmd += ["--threads", str(args.threads)]
    cmd += ["--out", str(out_dir / "anchor.json"), "--workdir", str(out_dir / "anchor-runs")]
    before = uptime()
    r = run_rss(cmd)
    full = json.loads((out_dir / "anchor.json").read_text())
    t = full["timing"]
    return {
        "uptime_before": before,
        "uptime_after": uptime(),
        "command": " ".join(cmd),
        "wall_s": r["wall_s"],
        "process_peak_rss_mib": r["peak_rss_mib"],
        "peak_rss_mib_stages": full["peak_rss_mib"],
        "test_wall_ms_per_image": round(t["test_wall_ms_per_image"], 2),
        "test_step_ms_per_image": round(t["test_step_ms_per_image"], 2),
        "batch1_ms_median": round(t["batch1_latency_ms_median"], 2),
        "batch1_ms_p90": round(t["batch1_latency_ms_p90"], 2),
        "load_decode_resize_ms_per_image": round(t["load_decode_resize_ms_per_image"], 2),
        "coreset_ratio": args.coreset,
        "fit_s": round(t["fit_s"], 2),
        "fit_feature_extraction_s": round(t["fit_feature_extraction_s"], 2),
        "fit_coreset_s": round(t["fit_coreset_s"], 2),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "memory_bank": full["memory_bank"],
        "metrics": full["metrics"],
        "other_processes_cpu": full["other_processes_cpu"],
    }


def judge(rounds: list[dict], anchor: dict, fit: dict) -> dict:
    """Each target on the worse of our rounds, against the anchor's figures at the same coreset
    ratio. Batched throughput: our best batch size (of ``BATCHES``), each on its worse round."""
    out: dict = {}
    a_step, a_wall = anchor["test_step_ms_per_image"], anchor["test_wall_ms_per_image"]
    a_b1, a_rss = anchor["batch1_ms_median"], anchor["process_peak_rss_mib"]
    for runtime in RUNTIMES:
        ours = [r[runtime] for r in rounds]
        worst = {b: max(o[f"batch{b}_ms_per_image"] for o in ours) for b in BATCHES}
        batch = min(worst, key=worst.get)
        b_ms = worst[batch]
        b_decode = max(
            o[f"batch{batch}_ms_per_image"] + o["decode_resize_ms_per_image"] for o in ours
        )
        out[runtime] = {
            "batch_size": batch,
            "batched_ms_per_image": b_ms,
            "throughput_ratio_model_only": round(a_step / b_ms, 2),
            "throughput_ratio_with_decode": round(a_wall / b_decode, 2),
            "throughput_target_4x_met": a_step / b_ms >= 4 and a_wall / b_decode >= 4,
        }
        for threads, suffix in ((2, ""), (1, "_threads1")):
            if f"batch1{suffix}_ms_median" not in ours[0]:
                continue
            med = max(o[f"batch1{suffix}_ms_median"] for o in ours)
            p99_ratio = max(
                o[f"batch1{suffix}_ms_p99"] / o[f"batch1{suffix}_ms_median"] for o in ours
            )
            out[runtime][f"batch1_{threads}_threads"] = {
                "ms_median": med,
                "latency_fraction_of_anomalib": round(med / a_b1, 3),
                "latency_third_met": med <= a_b1 / 3,
                "p99_over_median": round(p99_ratio, 2),
                "p99_under_1_5x_median_met": p99_ratio < 1.5,
                "latency_target_met": med <= a_b1 / 3 and p99_ratio < 1.5,
            }
    steps = [f"evaluate_{r}" for r in EVALUATE_RUNTIMES] + [f"predict_{r}" for r in RUNTIMES]
    for step in steps:
        rss = max(r[step]["peak_rss_mib"] for r in rounds if step in r)
        out[f"{step}_peak_rss_mib"] = rss
        out[f"{step}_rss_fraction_of_anomalib"] = round(rss / a_rss, 3)
        out[f"{step}_rss_target_met"] = rss <= a_rss / 2
    a_fit = anchor["fit_s"]
    out["fit"] = {
        "dualpatch_fit_s_with_threshold": fit["wall_s"],
        "anomalib_fit_s": a_fit,
        "fraction_of_anomalib": round(fit["wall_s"] / a_fit, 3),
        "fit_target_0_1x_met": fit["wall_s"] <= 0.1 * a_fit,
    }
    return out


def contaminated(result: dict, limit: float) -> list[str]:
    """The measurements during which other processes took more than ``limit`` of the CPU."""
    bad = []

    def visit(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("foreign_cpu_fraction", "foreign_frac_of_capacity") and value > limit:
                    bad.append(f"{path}: {value:.0%}")
                else:
                    visit(value, f"{path}/{key}")
        elif isinstance(node, list):
            for value in node:
                visit(value, path)

    visit(result, "")
    return bad


def fit_default(args, env: dict, out: str) -> dict:
    """Fit the dual model at the library's defaults (threshold held out and stored, as ``fit``
    does without options), with an empty feature cache, timed like the anchor's fit."""
    cmd = [sys.executable, "-m", "dualpatch.cli", "fit", "--dataset", "kolektorsdd"]
    cmd += ["--data", args.data, "--bank", "dual", "--out", out]
    r = run_rss(cmd, env)
    return {"command": " ".join(cmd), **{k: v for k, v in r.items() if k != "stdout"}}


def child_backbone(args) -> None:
    """The backbone's forward time alone (the feature extractor of the fitted model, no search):
    the limit a scorer whose search costs nothing would reach."""
    import dualpatch  # noqa: F401

    # isort: split
    import numpy as np
    import torch

    from dualpatch.data import KolektorSDD
    from dualpatch.features.extractor import to_tensor
    from dualpatch.models import PatchCore

    torch.set_num_threads(args.threads)
    model = PatchCore.load(args.model)
    size = tuple(model.image_size)
    images = np.stack([s.image(size) for s in list(KolektorSDD(args.data, "test"))[: args.images]])
    out = {}
    with torch.no_grad():
        for batch in (1, 32):
            model.extractor_(to_tensor(images[:batch]))  # warm-up
            times = []
            for start in range(0, len(images), batch):
                x = to_tensor(images[start : start + batch])
                t0 = time.perf_counter()
                model.extractor_(x)
                times.append((time.perf_counter() - t0) / len(x))
            key = "batch1_ms_median" if batch == 1 else "batch32_ms_per_image"
            out[key] = round(1000 * float(np.median(times) if batch == 1 else np.mean(times)), 2)
    print(json.dumps(out))


def anchor_figures(args, out_dir: Path) -> dict:
    """The anchor at our default coreset ratio: read from ``--anchor-json`` when it was recorded
    before (its fit takes about 20 minutes), else run now and recorded there."""
    path = Path(args.anchor_json)
    if path.exists() and not args.rerun_anchor:
        recorded = json.loads(path.read_text())
        if recorded.get("coreset_ratio") != args.coreset:
            raise SystemExit(f"{path}: recorded at ratio {recorded.get('coreset_ratio')}, "
                             f"not {args.coreset}; use --rerun-anchor")  # fmt: skip
        return dict(recorded, reused_from=str(path))
    figures = anchor_round(args, out_dir)
    if "error" not in figures:
        from dualpatch.fileio import write_json

        foreign = figures["other_processes_cpu"]
        worst = max(foreign["during_fit"]["foreign_frac_of_capacity"],
                    foreign["during_test_and_latency"]["foreign_frac_of_capacity"])  # fmt: skip
        if worst > args.max_foreign_cpu:
            raise SystemExit(f"anchor: other processes took {worst:.0%} of the CPU; not recorded")
        write_json(path, figures)
    return figures


def export_sizes(model: str) -> dict:
    from dualpatch.serving.export import default_export_path, export_model

    sizes = {}
    for fmt in ("onnx", "openvino"):
        path = default_export_path(model, fmt)
        if not path.exists():
            export_model(model, fmt, path)
        files = [path] if fmt == "onnx" else [path, path.with_suffix(".bin")]
        sizes[fmt] = round(sum(f.stat().st_size for f in files) / 2**20, 2)
    folder = [Path(model) / n for n in ("model.safetensors", "model.json")]
    sizes["model_folder"] = round(sum(f.stat().st_size for f in folder) / 2**20, 2)
    return sizes


def scheduling() -> dict:
    """How this run was scheduled: with kernel autogroups on, ``nice`` only ranks processes
    inside one session; sessions compete by their autogroup's nice."""
    out = {"nice": os.getpriority(os.PRIO_PROCESS, 0)}
    for key, path in [
        ("sched_autogroup_enabled", "/proc/sys/kernel/sched_autogroup_enabled"),
        ("autogroup", "/proc/self/autogroup"),
    ]:
        try:
            out[key] = Path(path).read_text().strip()
        except OSError:
            out[key] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("DUALPATCH_DATA", "../shared/data/kolektorsdd")
    )
    parser.add_argument("--model", help="a dual model fitted at the defaults (else fitted, timed)")
    parser.add_argument("--images", type=int, default=136, help="test images used for speed")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--anchor-json",
        default=str(HERE / "results" / "line_speed_anchor_10pct.json"),
        help="the anchor's figures at the default ratio, recorded once and reused",
    )
    parser.add_argument("--rerun-anchor", action="store_true")
    parser.add_argument(
        "--max-foreign-cpu",
        type=float,
        default=0.10,
        help="refuse to write figures when other processes took more than this share of the CPU",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "line_speed.json"))
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the temporary model and scores"
    )
    parser.add_argument("--child-speed", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--child-backbone", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runtime", help=argparse.SUPPRESS)
    parser.add_argument("--scores-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_speed:
        args.runtime = args.child_speed
        child_speed(args)
        return
    if args.child_backbone:
        child_backbone(args)
        return
    work = Path(tempfile.mkdtemp(prefix="line-speed-"))
    try:
        measure(args, work)
    finally:
        # each run leaves a fitted model, its exports and a feature cache (about 240 MiB)
        if args.keep_work:
            print(f"work kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    from dualpatch.card import ModelCard
    from dualpatch.fileio import write_json

    env = dict(os.environ, DUALPATCH_CACHE=str(work / "cache"), DUALPATCH_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    result: dict = {
        **run_header(),
        "threads": args.threads,
        "images": args.images,
        "scheduling": scheduling(),
    }
    if args.model:
        result["fit"] = {"skipped": f"--model {args.model} given"}
    else:
        args.model = str(work / "dual-default")
        result["fit"] = fit_default(args, env, args.model)
        print("fit", json.dumps(result["fit"]), flush=True)
    result["model"] = args.model
    # the bank settings the anchor is compared at: the model's own, from its card
    params = ModelCard.read(args.model).params
    args.coreset = result["coreset_ratio"] = params["coreset_ratio"]
    result["coreset_rows"] = params.get("coreset_rows")
    result["sizes_mib"] = export_sizes(args.model)
    backbone = run_rss(
        [sys.executable, __file__, "--child-backbone", "--model", args.model, "--data", args.data,
         "--images", str(args.images), "--threads", str(args.threads)], env,
    )  # fmt: skip
    result["backbone_alone"] = json.loads(backbone["stdout"].strip().splitlines()[-1])
    result["backbone_alone"]["foreign_cpu_fraction"] = backbone["foreign_cpu_fraction"]
    rounds = [our_round(args, args.model, env, "round1", work)]
    result["anomalib"] = anchor_figures(args, work)
    if "reused_from" not in result["anomalib"]:  # the anchor ran now: measure ours again after it
        rounds.append(our_round(args, args.model, env, "round2", work))
    result["dualpatch_rounds"] = rounds
    result["parity"] = parity(work, "round1", leaked_test_images(args.data, args.images))
    if "error" not in result["anomalib"] and "command" in result["fit"]:
        result["targets"] = judge(rounds, result["anomalib"], result["fit"])
    result["omp_wait_policy"] = "PASSIVE for dualpatch (set by the package); anomalib: unset"
    result["uptime_end"] = uptime()
    bad = contaminated({k: v for k, v in result.items() if k != "anomalib"}, args.max_foreign_cpu)
    if bad:
        raise SystemExit("other processes took too much CPU; nothing written:\n" + "\n".join(bad))
    write_json(args.out, result)
    print(json.dumps(result.get("targets", {}), indent=1))


if __name__ == "__main__":
    main()
