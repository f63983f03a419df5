"""Train-only choice of the dual scoring rule (``rule_selection: inner``), for few-shot runs and
for ordinary runs with all their defects.

Nested, as ``benchmarks/select_defaults.py``: within one outer fold's training items only, a
group-aware, stratified inner split (``protocol.inner_split``, k = 3: 2/3 inner training, 1/3
validation). Inside it the few-shot protocol is repeated: draw ``r`` of n defects is taken from the
inner training set's defective images (same seed as the outer draw ``r``), the run's synthetic
source is made from those n only (``Draw.sources``), one model is fitted, and the validation images
are scored under every rule of ``scoring.DUAL_RULES`` (the rule acts at predict time: one fit
serves them all). The outer test fold is never read.

Granularity: one rule per (run, n, outer fold), from the validation criterion averaged over the
inner draws. A fold's validation set holds about a dozen defective images, so one inner draw's
AUROC/AP moves by a few hundredths between rules by chance alone; averaging the draws halves the
variance of that noise. Pooling over n as well would be steadier still, but the failure this guards
against (``patch`` collapsing when few real defects sit beside many synthetic ones) depends on n,
so pooling over n would average it away. Ties go to the run's configured rule.

Criterion: the mean of validation image AUROC, image AP and pixel AUPRO, as in select_defaults.

Ordinary runs (no ``defect_shots``): the same inner split, one inner fit on every image of the
inner training set, and the candidates are the rules that keep the scoring contract
(``scoring.DUAL_RULES``, ``safe``) plus the run's configured rule: a user with all their defects
gets the same train-only choice without being offered a rule that can pass a novelty unasked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dualpatch.data.base import Dataset
from dualpatch.data.fewshot import Draw, Shots, fewshot_draws
from dualpatch.experiment.protocol import inner_split, seeds_of

#: the validation metrics averaged into the criterion
CRITERION = ("image_auroc", "image_ap", "pixel_aupro")
#: inner split: 1 of INNER_FOLDS group-aware folds of the outer training set is the validation set
INNER_FOLDS = 3


@dataclass(frozen=True)
class InnerDraw:
    """One inner draw: what the inner model is fitted on, and the images that judge the rules."""

    draw: Draw
    sources: Dataset  # inner training normals + the draw's n defects: all the fit and pool see
    validation: Dataset
    available: int  # defective images in the inner training set (the draw takes n of them)


def inner_draws(train: Dataset, shots: Shots, draws: int, seed: int) -> list[InnerDraw]:
    """The inner draws of one outer fold's training set ``train`` at one n.

    ``train`` is the outer fold's whole training set (every defect of its items, never a test
    image); the inner split is fixed by ``seed``, and draw ``r`` uses seed ``seed + r`` as the
    outer draws do."""
    inner, validation = inner_split(train, seed=seed, k=INNER_FOLDS)
    picked = fewshot_draws(inner.defective(), [shots], draws, seed)
    defects = len(inner.defective())
    return [InnerDraw(d, d.sources(inner), validation, defects) for d in picked]


def score_rules(model, validation: Dataset, rules: Sequence[str]) -> dict[str, dict[str, float]]:
    """Validation metrics of one fitted dual model under each of ``rules`` (set on the model in
    turn), with ``criterion`` the mean of ``CRITERION`` (a missing metric counts as the worst)."""
    from dualpatch.metrics.evaluation import evaluate

    masks = np.stack([s.mask(tuple(model.image_size)) for s in validation])
    out = {}
    for rule in rules:
        model.rule = rule
        pred = model.predict(validation)
        found = evaluate(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
        row = {k: float(found[k]) for k in CRITERION}
        row["criterion"] = float(np.mean([0.0 if np.isnan(v) else v for v in row.values()]))
        out[rule] = row
    return out


def pick_rule(per_draw: Sequence[dict[str, dict[str, float]]], default: str) -> tuple[str, dict]:
    """(the rule with the highest criterion averaged over the draws, every rule's average); a tie
    goes to ``default`` (the run's configured rule), then to the registry's order."""
    rules = list(per_draw[0])
    mean = {r: float(np.mean([d[r]["criterion"] for d in per_draw])) for r in rules}
    best = max(mean.values())
    tied = [r for r in rules if mean[r] == best]
    return (default if default in tied else tied[0]), mean


def choose_rule(
    fit: Callable[[Dataset], object],
    train: Dataset,
    shots: Shots,
    draws: int,
    seed: int,
    default: str,
) -> dict:
    """The nested choice for one outer fold at one n: ``fit(sources)`` returns a dual model fitted
    with the run's settings on an inner draw's sources (synthetic pools made from them only);
    each is scored on the validation images under every dual rule. ``train`` is the outer fold's
    training set: the test fold is not an argument, so it cannot be read.

    Returns what metrics.json records: the chosen rule, each rule's mean criterion, and per inner
    draw the defects drawn and every rule's validation metrics."""
    from dualpatch.scoring import DUAL_RULES

    rows = []
    for inner in inner_draws(train, shots, draws, seed):
        model = fit(inner.sources)
        scored = score_rules(model, inner.validation, tuple(DUAL_RULES))
        rows.append({"draw": inner.draw.repeat, "defects": inner.draw.ids, "validation": scored})
    chosen, mean = pick_rule([r["validation"] for r in rows], default)
    validation = inner.validation
    return {
        "chosen": chosen,
        "criterion": mean,
        "criterion_is": "mean of validation " + ", ".join(CRITERION),
        "inner_normal_images": len(inner.sources.normal()),
        "inner_defective_images": inner.available,
        "validation_images": len(validation),
        "validation_defective": int(np.sum(validation.labels)),
        "draws": rows,
    }


def full_candidates(default: str) -> tuple[str, ...]:
    """The rules an ordinary run chooses among: the contract-keeping ones and ``default``."""
    from dualpatch.scoring import DUAL_RULES

    return tuple(r for r, v in DUAL_RULES.items() if getattr(v, "safe", False) or r == default)


def choose_rule_full(
    fit: Callable[[Dataset], object], train: Dataset, seed: int, default: str
) -> dict:
    """The nested choice for one outer fold of an ordinary run: ``fit(inner)`` fits the run's
    model on the inner training set (all its defects), which is scored on the validation images
    under each of ``full_candidates``. ``train`` is the outer fold's training set only."""
    inner, validation = inner_split(train, seed=seed, k=INNER_FOLDS)
    model = fit(inner)
    scored = score_rules(model, validation, full_candidates(default))
    chosen, mean = pick_rule([scored], default)
    return {
        "chosen": chosen,
        "criterion": mean,
        "criterion_is": "mean of validation " + ", ".join(CRITERION),
        "inner_normal_images": len(inner.normal()),
        "inner_defective_images": len(inner.defective()),
        "validation_images": len(validation),
        "validation_defective": int(np.sum(validation.labels)),
        "draws": [{"draw": 0, "defects": [d.id for d in inner.defective()],
                   "validation": scored}],
    }  # fmt: skip


def inner_rules(
    exp,
    settings: dict,
    splits: Sequence,
    pairs: Sequence[tuple[int, object]],
    shots: Shots | None,
    draws: int,
) -> tuple[dict[str, str], dict[str, dict]]:
    """The nested choice for one dual run (at one n of a few-shot run; ``shots`` None: an
    ordinary run with every training defect): (rule per outer split name, the choice's record
    per fold). Each fold's choice is saved under the run's folder and read
    back when the same settings and training set come again (a resumed or shared results folder).

    ``pairs`` are the runner's (fold index, outer split of one draw); only ``splits[f].train``
    is handed to the choice."""
    import hashlib
    import json

    from dualpatch.augment import recipe
    from dualpatch.fileio import write_json
    from dualpatch.report.data import slug

    c = exp.config
    fit_settings = {**settings, "seed": seeds_of(c)[0]}
    # a choice made on an older generator's images is stale (runs without one keep their keys)
    made_by = [recipe(settings["augment"])] if settings.get("augment") else []
    records = {}
    for f in sorted({f for f, _ in pairs}):
        train = splits[f].train
        key = json.dumps([{k: v for k, v in settings.items() if k not in ("name", "rule")},
                          train.fingerprint(), str(shots), draws, c["seed"], settings["rule"],
                          *made_by], sort_keys=True, default=str)  # fmt: skip
        signature = hashlib.sha256(key.encode()).hexdigest()
        path = exp.out / "runs" / slug(settings["name"]) / "rule-choice" / f"{splits[f].name}.json"
        if path.is_file() and json.loads(path.read_text()).get("signature") == signature:
            records[splits[f].name] = json.loads(path.read_text())
            continue
        fit = lambda src: exp.fit_model(fit_settings, src)  # noqa: E731
        if shots is None:
            record = choose_rule_full(fit, train, c["seed"], settings["rule"])
        else:
            record = choose_rule(fit, train, shots, draws, c["seed"], settings["rule"])
        exp.forget_fits()  # the inner models are not asked for again
        records[splits[f].name] = {**record, "signature": signature}
        write_json(path, records[splits[f].name])
        criterion = {r: round(v, 4) for r, v in record["criterion"].items()}
        exp.log.info("%s %s: rule %s chosen on validation (%s)", settings["name"],
                     splits[f].name, record["chosen"], criterion)  # fmt: skip
    rule_of = {s.name: records[splits[f].name]["chosen"] for f, s in pairs}
    return rule_of, records
