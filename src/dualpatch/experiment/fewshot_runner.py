"""Few-shot runs (``defect_shots``): each dual run's defect bank, and every synthetic source it
uses, gets n real defective training images only, for each n and several seeded draws.

For each split (the dataset's own, or each cross-validation fold) and each n in ``defect_shots``
there are ``defect_draws`` draws of n defective training images (``data.fewshot``; ``all``:
one draw). A dual run is fitted once per split × draw × seed on ``Draw.sources(train)``: every
normal training image plus the n drawn defects. That dataset is also what the run's augmentation
pool is made from, so copy-paste, the DDPM and SDXL never see another real defect. A single run
sees no defect: it is fitted once per split × seed and stands beside every n.

Each (run, n) is summarised over splits × seeds × draws: mean ± std and a 95% bootstrap interval
(test images resampled within each fold, the same resamples for every run and n, so differences
are paired). metrics.json holds one entry per (run, n) named ``"<run> n=<n>"``, with its
comparisons against the same n's dual-real-only run and against single, the issue's goal check
and a recommendation per n (chosen per outer fold on the nested rule choice's inner-validation
figures where they exist, else read from the test folds, and marked with what it was chosen on);
report.html shows the curves over n (``report_fewshot``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.bank.query_memo import remembered_queries
from dualpatch.data.fewshot import ADVICE_EVIDENCE, ALL, Shots, fewshot_draws
from dualpatch.errors import ConfigError
from dualpatch.experiment.crossval import observed, seeds_of
from dualpatch.experiment.protocol import Split
from dualpatch.metrics.uncertainty import compare, fold_counts

#: the compared metrics; the issue's goal is about the first two
METRICS = ("image_auroc", "image_ap", "pixel_aupro")
#: the issue's goal: with at most ``GOAL_MAX_SHOTS`` real defects, a synthetic source beats
#: dual-real-only by ``GOAL_MARGIN`` mean image AUROC and AP, intervals apart, and beats single
GOAL_MARGIN = 0.01
GOAL_MAX_SHOTS = 5
#: per-run keys that only the few-shot runner reads (kept out of a run's fitted settings)
RUN_KEYS = ("defect_shots", "defect_draws")


def entry_name(run: str, shots: Shots) -> str:
    return f"{run} n={shots}"


def is_real_only(settings: dict) -> bool:
    """A dual run whose defect bank holds the drawn real defects and nothing else."""
    return settings["bank"] == "dual" and not (
        settings.get("augment")
        or settings.get("augmented")
        or settings.get("defect_feature_augment")
        or settings.get("crops")
    )


def sdxl_unavailable(settings: dict) -> str | None:
    """Why an SDXL run cannot run here (no weights given, or not on disk), else None."""
    spec = settings.get("augment") or {}
    if spec.get("method") != "sdxl":
        return None
    weights = spec.get("weights")
    if not weights:
        return "no SDXL weights given (augment.weights)"
    if not Path(weights).exists():
        return f"SDXL weights not found at {weights}"
    return None


def draw_splits(
    splits: list[Split], shots: list[Shots], draws: int, seed: int
) -> dict[str, list[tuple[int, Split]]]:
    """Per n (as text): (fold index, split whose training set is one draw's sources), for every
    split and draw. Every n is checked against every split before any work."""
    out: dict[str, list[tuple[int, Split]]] = {str(n): [] for n in shots}
    for f, split in enumerate(splits):
        for d in fewshot_draws(split.train.defective(), shots, draws, seed):
            out[str(d.shots)].append(
                (f, Split(f"{split.name}-draw{d.repeat}", d.sources(split.train), split.test,
                          split.train_items, split.duplicates))
            )  # fmt: skip
    return out


def run_fewshot(exp, runs: list[dict], splits: list[Split]) -> tuple[list[dict], dict, list[dict]]:
    """Every run at every n × draw × split × seed; (results, bootstrap replicates, entries).

    ``results``/``boots`` are keyed by entry name (``"dual n=5"``; single: ``"single"``);
    ``entries`` describe each (run, n) for metrics.json and the report."""
    c = exp.config
    seeds = seeds_of(c)
    counts = fold_counts([len(s.test) for s in splits], c["bootstrap"], seed=0)
    plans = []
    for settings in runs:  # every draw checked (n <= defective images) before any fit
        shots = settings.get("defect_shots") or c["defect_shots"]
        draws = settings.get("defect_draws") or c["defect_draws"]
        fitted = {k: v for k, v in settings.items() if k not in RUN_KEYS}
        by_n = {} if settings["bank"] == "single" else draw_splits(splits, shots, draws, c["seed"])
        plans.append((fitted, shots, draws, by_n))
    results, boots, entries = [], {}, []
    # every dual fit of a fold shares its normal bank: its distances to the fold's training and
    # test patches are searched once, not once per draw and source
    with remembered_queries():
        for i, plan in enumerate(plans):
            _run_plan(exp, i, plan, splits, seeds, counts, results, boots, entries)
    if not results:
        raise ConfigError("config: every run was skipped (see the log)")
    return results, boots, entries


def _run_plan(exp, i: int, plan: tuple, splits, seeds, counts, results, boots, entries) -> None:
    """One configured run: once (single) or at every n (dual); appends to the three outputs."""
    from dualpatch.experiment.crossval import run_over_splits

    fitted, shots, draws, by_n = plan
    total = len(exp.config["runs"])
    reason = sdxl_unavailable(fitted)
    if reason:
        exp.log.warning("%s: skipped: %s", fitted["name"], reason)
        return
    if fitted["bank"] == "single":  # sees no defects: once, whatever n is
        exp.log.info("run %d/%d: %s", i + 1, total, fitted["name"])
        nested = len(splits) > 1 or len(seeds) > 1  # one folder per split x seed
        result, boot = run_over_splits(exp, fitted, splits, seeds, counts, nested)
        results.append(result)
        boots[fitted["name"]] = boot
        entries.append({"name": fitted["name"], "run": fitted["name"], "shots": None,
                        "draws": 0, "real_only": False, "bank": "single"})  # fmt: skip
        return
    for n in shots:
        name = entry_name(fitted["name"], n)
        exp.log.info("run %d/%d: %s", i + 1, total, name)
        pairs, settings = by_n[str(n)], {**fitted, "name": name}
        rule_of, choice = _rules(exp, settings, splits, pairs, n, draws)
        result, boot = run_over_splits(
            exp, settings, [s for _, s in pairs], seeds,
            [counts[f] for f, _ in pairs], True, rule_of,
        )  # fmt: skip
        exp.forget_fits()  # one model per draw: none is asked for again
        if n != shots[-1]:  # only each run's largest n reaches the gallery: free its maps
            result["maps"] = None
        results.append(result)
        boots[name] = boot
        entries.append({"name": name, "run": fitted["name"], "shots": n,
                        "draws": 1 if n == ALL else draws, "real_only": is_real_only(fitted),
                        "bank": "dual", "rule": fitted["rule"], "rule_choice": choice})  # fmt: skip


def _rules(exp, settings: dict, splits, pairs, shots: Shots, draws: int) -> tuple:
    """(rule per outer split name, the choice's record per fold) under ``rule_selection: inner``,
    else (None, None): the run's own rule everywhere."""
    if exp.config["rule_selection"] != "inner":
        return None, None
    from dualpatch.experiment.fewshot_rule import inner_rules

    return inner_rules(exp, settings, splits, pairs, shots, draws)


def fewshot_metrics(results: list[dict], boots: dict, entries: list[dict]) -> dict[str, dict]:
    """metrics.json's entries: each (run, n)'s summary, its run and n, and its comparisons with
    the same n's dual-real-only run (paired bootstrap) and with single."""
    metrics = {r["name"]: dict(r["metrics"]) for r in results}
    single = next((e["name"] for e in entries if e["bank"] == "single"), None)
    base = _first_real_only(entries)
    for e in entries:
        m = metrics[e["name"]]
        m.update(run=e["run"], defect_shots=e["shots"], draws=e["draws"])
        m.update(rule_used(e))
        for key, against in (
            ("comparisons", base.get(str(e["shots"]))),
            ("against_single", single),
        ):
            if against and against != e["name"]:
                m[key] = {
                    k: {"against": against,
                        **compare(boots[e["name"]][k], boots[against][k], (e["name"], against),
                                  observed(m, metrics[against], k))}
                    for k in METRICS
                }  # fmt: skip
    return metrics


def rule_used(entry: dict) -> dict[str, Any]:
    """metrics.json's record of a dual entry's rule: ``rule`` (the one used, or ``inner: ...``
    listing each fold's choice) and, when chosen, ``rule_choice`` (per fold: the choice and the
    validation figures behind it)."""
    if entry["bank"] != "dual":
        return {}
    choice = entry.get("rule_choice")
    if not choice:
        return {"rule": entry.get("rule")}
    chosen = ", ".join(f"{fold} {c['chosen']}" for fold, c in choice.items())
    return {"rule": f"inner: {chosen}", "rule_choice": choice}


def _first_real_only(entries: list[dict]) -> dict[str, str]:
    """Per n, the entry of the first dual-real-only run (the baseline a synthetic source faces)."""
    runs = [e["run"] for e in entries if e["real_only"]]
    first = runs[0] if runs else None
    return {str(e["shots"]): e["name"] for e in entries if e["run"] == first}


def goal_and_advice(metrics: dict[str, dict], entries: list[dict]) -> dict[str, Any]:
    """Per n: does a source meet the issue's goal, and which setting should a user with n real
    defects use (with the evidence)?

    Goal (n <= 5): mean image AUROC and AP at least 0.01 above dual-real-only, with 95% intervals
    that do not overlap, and means above single. It is a measurement on the test folds.

    Advice: chosen on training items only where the dual entries carry the nested rule choice's
    inner-validation figures (``rule_selection: inner``): per outer fold, the dual source with
    the best validation criterion (``source_per_fold``); ``use`` is the source every fold chose,
    else None. Without those figures, and always as ``test_fold_reading``: a synthetic source only
    where its paired difference against dual-real-only is a win on image AUROC or AP and a loss on
    neither; otherwise dual-real-only where it beats single on a mean of the two, else single.
    That reading is made on the test folds; each n's entry says what its ``use`` was chosen on
    (``chosen_on``: ``INNER_EVIDENCE`` or ``fewshot.ADVICE_EVIDENCE``).
    """
    base = _first_real_only(entries)
    single = next((e["name"] for e in entries if e["bank"] == "single"), None)
    shots = list(dict.fromkeys(str(e["shots"]) for e in entries if e["bank"] == "dual"))
    out: dict[str, Any] = {}
    for n in shots:
        b = base.get(n)
        others = [e for e in entries if str(e["shots"]) == n and e["bank"] == "dual"]
        goal, wins = {}, []
        for e in others:
            if b is None or e["name"] == b or e["real_only"]:
                continue
            m, mb = metrics[e["name"]], metrics[b]
            cmp = m.get("comparisons", {})
            verdicts = [cmp.get(k, {}).get("verdict", "") for k in ("image_auroc", "image_ap")]
            if f"{e['name']} wins" in verdicts and f"{b} wins" not in verdicts:
                wins.append(e["name"])
            if n != ALL and int(n) <= GOAL_MAX_SHOTS:
                goal[e["name"]] = _meets_goal(m, mb, metrics.get(single) if single else None)
        reading = {**_advice(metrics, wins, b, single), "chosen_on": ADVICE_EVIDENCE}
        advice = _inner_advice(metrics, [e["name"] for e in others], b) or reading
        advice["rule"] = metrics[advice["use"]].get("rule") if advice["use"] else None
        out[n] = {"baseline": b, "goal": goal, "clear_wins_over_baseline": wins, **advice,
                  "test_fold_reading": reading}  # fmt: skip
    return out


#: what an advice chosen on inner folds is chosen on (recorded with it)
INNER_EVIDENCE = (
    "training items only: per outer fold, each dual source's inner-validation criterion (the "
    "nested rule choice's figures: mean of validation image AUROC, image AP and pixel AUPRO over "
    "the inner draws, at the source's chosen rule; the same validation images for every source); "
    "no test image reaches it; single has no inner figures and is not a candidate"
)


def inner_criteria(metrics: dict[str, dict], names: list[str]) -> dict[str, dict[str, float]]:
    """Per dual entry of ``names``: per outer fold, the inner-validation criterion at the rule that
    fold chose (from ``rule_choice``); {} unless every entry has them for the same folds."""
    choices = {name: metrics[name].get("rule_choice") or {} for name in names}
    folds = [set(c) for c in choices.values()]
    if not names or not folds[0] or any(f != folds[0] for f in folds):
        return {}
    if any(c.get("chosen") not in (c.get("criterion") or {}) for ch in choices.values()
           for c in ch.values()):  # fmt: skip
        return {}  # a fold without the chosen rule's figure: no inner evidence to choose on
    return {name: {fold: float(c["criterion"][c["chosen"]]) for fold, c in choice.items()}
            for name, choice in choices.items()}  # fmt: skip


def source_per_fold(criteria: dict[str, dict[str, float]], prefer: str | None) -> dict[str, str]:
    """Per outer fold, the source with the highest criterion in ``criteria`` (source -> fold ->
    figure, training items only); a tie goes to ``prefer`` (the real defects alone: no generator
    to run), then to the first source."""
    folds = sorted({f for per in criteria.values() for f in per})
    order = sorted(criteria, key=lambda s: s != prefer)  # stable: prefer first
    return {f: max(order, key=lambda s: criteria[s][f]) for f in folds}


def _inner_advice(metrics: dict, names: list[str], base: str | None) -> dict | None:
    """The advice chosen on inner folds (None without inner figures)."""
    criteria = inner_criteria(metrics, names)
    if not criteria:
        return None
    per_fold = source_per_fold(criteria, base)
    picked = set(per_fold.values())
    listed = ", ".join(f"{f} {s}" for f, s in per_fold.items())
    if len(picked) == 1:
        use = picked.pop()
        why = f"every outer fold's inner validation chose {use} ({listed})"
    else:
        use = None
        why = f"the outer folds' inner validations disagree ({listed}): choose on your own data"
    return {"use": use, "why": why, "chosen_on": INNER_EVIDENCE, "per_outer_fold": per_fold,
            "inner_criterion": criteria}  # fmt: skip


def _meets_goal(m: dict, base: dict, single: dict | None) -> dict[str, Any]:
    checks = {}
    for k in ("image_auroc", "image_ap"):
        gain = m[k] - base[k]
        lo, hi = m.get(f"{k}_ci", [math.nan, math.nan]), base.get(f"{k}_ci", [math.nan, math.nan])
        checks[k] = {
            "gain": gain,
            "margin_met": bool(gain >= GOAL_MARGIN),
            "intervals_apart": bool(lo[0] > hi[1]),
            "beats_single": bool(single is None or m[k] > single[k]),
        }
    met = all(all(v for kk, v in c.items() if kk != "gain") for c in checks.values())
    return {"met": met, **checks}


def _advice(metrics: dict, wins: list[str], base: str | None, single: str | None) -> dict:
    def score(name: str) -> float:
        return float(np.nanmean([metrics[name]["image_auroc"], metrics[name]["image_ap"]]))

    if wins:
        best = max(wins, key=score)
        why = f"{best} beats {base} on a paired bootstrap (95% interval of the difference > 0)"
    elif base is not None and (single is None or score(base) >= score(single)):
        best = base
        why = "no synthetic source wins clearly over the real defects alone"
    elif single is not None:
        best, why = single, "the real-defect bank does not beat single here"
    else:
        best, why = None, "nothing to compare"
    return {"use": best, "why": why}


def finish_fewshot(
    exp, results: list[dict], boots: dict, entries: list[dict], info: dict, report: bool = True
) -> Path:
    """metrics.json (per (run, n), plus ``fewshot``: the goal check and the advice per n),
    metrics.csv (with ``run`` and ``defect_shots`` columns) and report.html (single and each run
    at its largest n in the gallery, the curves over n above it; skipped unless ``report``)."""
    from dualpatch.experiment.crossval import metrics_csv
    from dualpatch.experiment.outputs import write_report
    from dualpatch.fileio import write_json, write_text
    from dualpatch.report.fewshot import fewshot_section

    metrics = fewshot_metrics(results, boots, entries)
    advice = goal_and_advice(metrics, entries)
    write_json(exp.out / "metrics.json", {**metrics, "fewshot": advice})
    by_name = {e["name"]: e for e in entries}

    def run_and_shots(name: str) -> list[str]:  # one row per (run, n)
        e = by_name[name]
        return [e["run"], "" if e["shots"] is None else str(e["shots"])]

    text = metrics_csv(metrics, ("run", "defect_shots"), run_and_shots)
    write_text(exp.out / "metrics.csv", text)
    if not report:  # a benchmark that only wants the figures
        return exp.out / "report.html"
    largest = {}
    for e in entries:  # the gallery: single and each dual run at its largest n
        largest[e["run"]] = e["name"]
    shown = [r for r in results if r["name"] in set(largest.values())]
    section = fewshot_section(metrics, entries, advice, exp.out, exp.config["inline_images"])
    return write_report(exp, shown, info, sections=[section])
