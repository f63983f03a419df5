"""A verdict threshold chosen on training data only: image scores of normal training images that
were held out of the memory bank. Test labels never enter it.

The rule: hold out ``fraction`` of the normal training images (a seeded draw, at least one),
fit the bank on the rest, score the held-out ones, and take their ``quantile`` (default 1.0, the
largest score: no held-out normal image would be flagged; the target false-reject rate is
1 - quantile; a quantile is an observed score, the next higher one, never interpolated). An image
scoring above the threshold is flagged. That target is the held-out images' own: a new normal
image drawn like them scores above the k-th smallest of n of them with probability
(n - k + 1) / (n + 1) (exchangeable scores), 1 / (n + 1) at quantile 1, which the record states
(``expected_false_reject_rate``). Images unlike the held-out ones (a new batch, a new location)
can exceed it by far (benchmarks/threshold_shift.py).

For a dual model the same held-out images also set the novelty level tau (the ``quantile`` of
their largest patch distances to the normal bank), replacing fit's leave-image-out estimate. Under
a rule that keeps the scoring contract (``scoring.DUAL_RULES``, ``safe``), the stored threshold is
min(t, tau), t the held-out score quantile: an image whose single-bank score exceeds tau scores at
least that much under the rule, so every image the normal bank alone would call novel at tau is
flagged. ``threshold_record_["capped"]`` says whether tau was strictly the lower of the two.
The image-level check (``bank.coverage``), when the model has one, is set from the same held-out
images: their largest missing content maps to their largest score (capped at tau under a safe
rule), and the threshold is the quantile of the scores with the check folded in. At quantile 1 an
image that lacks more than every held-out normal image scores above the threshold, so it is
flagged whatever its patches score.
With the ``guarded`` rule t >= tau always holds: its image score is at least g(max d_n),
g(x) = x min(1, x / tau), a non-decreasing map with g(tau) = tau, so the score quantile is at
least g(tau) = tau. The stored threshold is then tau itself; it is capped (t > tau) when the defect
bank raised a held-out normal image above tau, which the guarantee then counts as a false reject.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from dualpatch.data.base import Sample
from dualpatch.errors import ConfigError, DataError

#: below this many held-out images the threshold rests on too few scores: ``calibrate`` warns
FEW_HELD_OUT = 20


def holdout_split(
    normal: Sequence[Sample], fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """(bank images, held-out images): a seeded draw of ``fraction`` of ``normal``."""
    if not 0 < fraction < 1:
        raise ConfigError(f"threshold hold-out fraction {fraction} must lie between 0 and 1")
    normal = list(normal)
    n_out = max(1, int(round(fraction * len(normal))))
    if len(normal) - n_out < 1:
        raise DataError(
            f"{len(normal)} normal training image(s): too few to hold {n_out} out for a threshold"
        )
    order = np.random.default_rng(seed).permutation(len(normal))
    held = set(order[:n_out].tolist())
    return (
        [s for i, s in enumerate(normal) if i not in held],
        [s for i, s in enumerate(normal) if i in held],
    )


def calibrate(model, held_out: Sequence[Sample], quantile: float = 1.0) -> float:
    """Set ``model.threshold_`` and ``threshold_record_`` (and, for a dual model,
    ``novelty_level_``) from held-out normal images, which must not be in the bank; they join
    the model's training-image digests (``training_overlap``)."""
    from dualpatch.scoring import DUAL_RULES, dual_scores

    if not 0 < quantile <= 1:
        raise ConfigError(f"threshold quantile {quantile} must lie in (0, 1]")
    held_out = list(held_out)
    if len(held_out) < FEW_HELD_OUT:
        warnings.warn(
            f"the threshold rests on {len(held_out)} held-out normal images (fewer than "
            f"{FEW_HELD_OUT}): its false-reject rate is a rough estimate",
            stacklevel=2,
        )
    record = {"quantile": quantile, "target_false_reject_rate": 1 - quantile,
              "expected_false_reject_rate": expected_false_reject_rate(len(held_out), quantile),
              "images": len(held_out), "seed": model.seed}  # fmt: skip
    rule = getattr(model, "rule", None)
    cap = None  # a safe rule's tau (module docstring)
    if rule is None:  # one bank: its own scores (the re-weighting, if set, included)
        with _without_gate(model):  # the image-level check is mapped onto these scores below
            scores = np.asarray(model.predict(held_out).image_scores, dtype=np.float64)
    else:
        distances = model.bank_distances(held_out)
        largest = distances["normal"].flatten(1).amax(1).double().numpy()
        level = _quantile(largest, quantile)
        model.set_novelty_level(level, {"method": "held-out", "images": len(held_out),
                                        "quantile": quantile})  # fmt: skip
        _, patch = dual_scores(distances["normal"], distances["defect"], rule, model.eps, level)
        scores = patch.double().numpy()
        cap = level if DUAL_RULES[rule].safe else None
    if getattr(model, "gate_summaries_", None) is not None:
        scores = _calibrate_gate(model, held_out, scores, cap)
        record["image_gate"] = {"level": model.gate_level_, "scale": model.gate_scale_}
    threshold = _quantile(scores, quantile)
    if rule is not None:
        record["score_quantile"] = threshold
    if cap is not None:  # the verdict guarantee (module docstring)
        record["novelty_level"], record["capped"] = cap, cap < threshold
        threshold = min(threshold, cap)
    model.threshold_, model.threshold_record_ = threshold, record
    # the held-out images shaped the model too: evaluate warns if it is scored on them
    model.record_training_images(s.image_path for s in held_out)
    model.threshold_rule_ = describe(record)  # the one-line account model.json has always held
    return threshold


def _calibrate_gate(
    model, held_out: list[Sample], scores: np.ndarray, cap: float | None
) -> np.ndarray:
    """Map the image-level check onto the held-out scores and return the scores with it: the
    largest missing content of the held-out images and of the training images measured
    leave-image-out at fit scores the held-out images' largest score (capped at tau under a safe
    rule), so the check alone flags no held-out image at quantile 1, and the threshold is then the
    quantile of the combined scores, as for any score."""
    import torch

    from dualpatch.scoring import gated_scores

    missing = model.missing_content(held_out)
    scale = float(np.max(scores)) if cap is None else min(float(np.max(scores)), cap)
    # the training images measured leave-image-out at fit count as unseen normals too: a level
    # set by a handful of held-out images alone would flag ordinary normal images
    left_out = (model.gate_record_ or {}).get("leave_image_out")
    level = max(float(np.max(missing)), left_out or 0.0)
    model.set_gate(level, scale, {"method": "held-out and leave-image-out",
                                  "images": len(held_out), "held_out_level": float(np.max(missing)),
                                  "leave_image_out": left_out})  # fmt: skip
    gated = gated_scores(torch.from_numpy(scores), torch.from_numpy(missing),
                         model.gate_level_, model.gate_scale_)  # fmt: skip
    return gated.numpy()


@contextmanager
def _without_gate(model) -> Iterator[None]:
    """Scores without the image-level check, while the threshold it is scaled to is measured."""
    level = getattr(model, "gate_level_", None)
    model.gate_level_ = None
    try:
        yield
    finally:
        model.gate_level_ = level


def _quantile(values, quantile: float) -> float:
    """The ``quantile`` of ``values`` as one of them (the next higher order statistic, no
    interpolation): then t >= tau holds exactly, as each image's score is >= g(its max d_n)."""
    return float(np.quantile(np.asarray(values, dtype=np.float64), quantile, method="higher"))


def expected_false_reject_rate(images: int, quantile: float) -> float:
    """The chance that a new normal image, drawn like ``images`` held-out ones, scores above their
    ``quantile`` as ``calibrate`` takes it (the k-th smallest, ``_quantile``'s order statistic):
    (n - k + 1) / (n + 1) for exchangeable, untied scores; 1 / (n + 1) at quantile 1. A floor
    under a capped threshold (tau below the score quantile flags more)."""
    k = int(np.quantile(np.arange(images), quantile, method="higher")) + 1
    return (images - k + 1) / (images + 1)


def describe(record: dict | None) -> str:
    """One line on how a stored threshold was set, from its ``threshold_record_``."""
    if not record:
        return "no record of how it was set"
    text = (
        f"quantile {record['quantile']:g} of the image scores of {record['images']} normal "
        f"training images held out of the bank (seed {record['seed']}; target false-reject rate "
        f"{record['target_false_reject_rate']:.0%}"
    )
    expected = record.get("expected_false_reject_rate")  # absent from models saved before it
    if expected is not None:
        text += f" of them, about {expected:.1%} of new normal images like them"
    text += ")"
    if record.get("capped"):
        text += f", capped at the novelty level {record['novelty_level']:.6g}"
    return text


def flag(scores, threshold: float) -> np.ndarray:
    """The verdicts: an image is flagged when its score is above the threshold (as ``serve``
    decides)."""
    return np.asarray(scores, dtype=np.float64) > threshold


def verdict_metrics(labels, scores, threshold: float) -> dict[str, float]:
    """F1, precision, recall and false-reject rate (good images flagged) of ``flag``'s verdicts;
    NaN where the labels cannot define one."""
    labels, flagged = np.asarray(labels).astype(bool), flag(scores, threshold)
    tp = float(np.sum(flagged & labels))
    n_flagged, n_defective, n_good = (
        float(flagged.sum()),
        float(labels.sum()),
        float((~labels).sum()),
    )
    nan = float("nan")
    return {
        "f1_at_threshold": 2 * tp / (n_flagged + n_defective) if n_flagged + n_defective else nan,
        "precision_at_threshold": tp / n_flagged if n_flagged else nan,
        "recall_at_threshold": tp / n_defective if n_defective else nan,
        "false_reject_rate_at_threshold": float(np.sum(flagged & ~labels)) / n_good
        if n_good
        else nan,
    }
