"""The line teaches the model: patches of images an operator confirms as good join the normal
bank, patches of confirmed defects join the defect bank; no refit.

Rules (docs/online.md states them for users):

- **Bounded banks.** An addition of N patches adds at most ceil(ratio x N) rows (``coreset_ratio``
  for the normal bank, ``defect_coreset`` for the defect bank; more only while the bank is below
  its floor ``coreset_min``, as a fit keeps every row below it), chosen by greedy k-center
  continued from the bank's existing rows (``memory.continued_kcenter``): the new patches
  farthest from what the bank already covers go in first, a patch already in the bank never.
  A bank that crosses ``coreset_min`` through additions can end larger than a refit's
  (docs/online.md states the bound).
- **Guard.** An image is refused from the normal bank unless forced when one of the conditions
  of the guard ``GUARD`` holds (``GUARDS`` names the candidates; ``guard_limits`` states each):
  it scores above ``GUARD_FACTOR`` x the stored threshold, one of its patches is farther from
  the normal bank than ``GUARD_FACTOR`` x the novelty level, or (dual) more of its patches are
  nearer a known defect than normal surface than in any held-out normal image: a real defect in
  the normal bank would teach the model that the defect is normal. ``choose_guard`` is the
  training-only choice among the candidates (benchmarks/online_guard_choice.py).
- **Defects without a mask.** The patches farther from the normal bank than the novelty level
  (``novelty_level``) are the defect, and are recorded as chosen that way.
- **Threshold.** After each change the stored threshold is re-computed on the held-out normal
  images, when they are known, by the quantile it was set with; the result says whether it moved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dualpatch.bank.coverage import summarise
from dualpatch.bank.memory import continued_kcenter
from dualpatch.data.base import Sample
from dualpatch.errors import ConfigError, DataError
from dualpatch.fileio import sha256_file
from dualpatch.models.defect_features import mask_cells
from dualpatch.models.persistence import load_model, model_class

#: An image scoring above this many times the stored threshold is refused from the normal bank.
GUARD_FACTOR = 1.5
#: The guards compared (``guard_limits`` states each condition): which conditions refuse an
#: image from the normal bank. A single-bank model keeps only ``score`` and ``patch``.
GUARDS: dict[str, tuple[str, ...]] = {
    "score": ("score",),
    "patch": ("patch",),
    "score_or_patch": ("score", "patch"),
    "any_defect_like": ("score", "patch", "any_defect_like"),
    "held_out_defect_like": ("score", "patch", "defect_like"),
    "defect_like_only": ("defect_like",),
}
#: The library's guard. Chosen on training data only (benchmarks/online_guard_choice.py,
#: docs/online.md "The guard's choice").
GUARD = "held_out_defect_like"

ImageLike = Sample | str | os.PathLike[str]


@dataclass
class Update:
    """What one ``add_normal``/``add_defects`` did: the images added (file, SHA-256, score before,
    patches offered and kept), the bank sizes before and after, the threshold check."""

    bank: str
    added: list[dict[str, Any]]
    rows_before: int
    rows_after: int
    threshold: dict[str, Any] = field(default_factory=dict)
    novelty_level: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


def as_samples(images: Sequence[ImageLike], label: int, masks: Sequence | None = None) -> list:
    """``Sample`` records of image files (a ``Sample`` is kept as it is)."""
    if masks is not None and len(masks) != len(images):
        raise ConfigError(f"{len(masks)} mask(s) for {len(images)} image(s): give one per image")
    out = []
    for i, image in enumerate(images):
        if isinstance(image, Sample):
            out.append(image)
            continue
        path = Path(image)
        if not path.is_file():
            raise DataError(f"{path}: image file not found")
        mask = Path(masks[i]) if masks is not None and masks[i] is not None else None
        if mask is not None and not mask.is_file():
            raise DataError(f"{mask}: mask file not found")
        out.append(Sample(path.name, path, mask, label))
    if not out:
        raise DataError("no images to add")
    return out


def _file_record(sample: Sample) -> dict[str, Any]:
    record = {"file": str(sample.image_path), "sha256": sha256_file(sample.image_path)}
    if sample.mask_path is not None:
        record.update(mask=str(sample.mask_path), mask_sha256=sha256_file(sample.mask_path))
    return record


def novelty_level(model: Any) -> tuple[float, str]:
    """(tau, where it comes from): the distance to the normal bank above which a patch is novel.

    The model's own ``novelty_level_`` when it has one (measured at fit on normal images);
    else the bank's spacing: the largest distance of a bank row to its nearest other row. Greedy
    k-center keeps rows at least the final covering radius apart, so no training patch was
    farther from the bank than this."""
    level = getattr(model, "novelty_level_", None)
    if level is not None and level > 0:
        return float(level), "model's novelty_level_"
    bank = model.memory_.bank_
    if bank.shape[0] < 2:
        raise ConfigError("the normal bank has one row: no novelty level can be measured")
    dist, _ = model.memory_.query(bank, 2)
    return float(dist[:, 1].max()), "normal bank's spacing (largest nearest-other-row distance)"


def _normal_distances(model: Any, feats: torch.Tensor) -> torch.Tensor:
    """(B, h, w) distance of each patch to the normal bank."""
    dist, _ = model._nearest(model.memory_, feats)
    return dist


def defect_like_counts(model: Any, feats: torch.Tensor) -> torch.Tensor:
    """(B,) per image: how many of its patches are nearer the defect bank than the normal bank."""
    dn = _normal_distances(model, feats).flatten(1)
    dd = model._nearest(model.defect_memory_, feats)[0].flatten(1)
    return (dd < dn).sum(1)


def _held_out_like_max(model: Any, held_out: Sequence[ImageLike] | None) -> int:
    """The most patches nearer a known defect than normal surface in one held-out normal image
    (0 without held-out images)."""
    if not held_out:
        return 0
    feats = model.image_features(as_samples(held_out, 0), "guard: held-out features")
    return int(defect_like_counts(model, feats).max())


def guard_limits(
    model: Any,
    factor: float = GUARD_FACTOR,
    held_out: Sequence[ImageLike] | None = None,
    guard: str = GUARD,
) -> dict[str, Any]:
    """The rule that keeps a defect out of the normal bank, as used and recorded: the conditions
    of ``GUARDS[guard]`` that apply to ``model``; an image is refused when one holds:
    ``score``: it scores above ``factor`` x the stored threshold (if there is one);
    ``patch``: one of its patches is farther from the normal bank than ``factor`` x the novelty
    level; ``any_defect_like`` / ``defect_like`` (dual models): more of its patches are nearer a
    known defect than normal surface (d_d < d_n) than 0 / than in any ``held_out`` normal image
    (none given: 0). ``patch`` and the defect-like conditions do not depend on the dual rule: a
    ratio rule can score a novelty near 1 (issue 23). Limits come from normal training images."""
    if guard not in GUARDS:
        raise ConfigError(f"unknown guard {guard!r} (one of {', '.join(GUARDS)})")
    conditions = GUARDS[guard]
    limits: dict[str, Any] = {"guard": guard}
    parts = []
    threshold = getattr(model, "threshold_", None)
    if "score" in conditions and threshold is not None:
        limits["score_above"] = factor * threshold
        parts.append(f"score > {factor:g} x threshold")
    if "patch" in conditions:
        level, limits["novelty_source"] = novelty_level(model)
        limits["patch_above"] = factor * level
        parts.append(f"a patch farther than {factor:g} x the novelty level from the normal bank")
    like = {"any_defect_like", "defect_like"} & set(conditions)
    if like and hasattr(model, "defect_memory_"):
        held = held_out if "defect_like" in like else None
        limits["defect_like_above"] = _held_out_like_max(model, held)
        parts.append(
            f"more than {limits['defect_like_above']} patch(es) nearer a known defect than normal "
            + ("surface (the most in a held-out normal image)" if held else "surface")
        )
    limits["rule"] = ", or ".join(parts) or "none (no condition applies to this model)"
    return limits


def guard_measures(model: Any, feats: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image of (B, h, w, D) features, what the guard's conditions read: ``score``, ``top``
    (its farthest patch's distance to the normal bank) and, for a dual model, ``like`` (its
    patches nearer a known defect than normal surface)."""
    _, scores = model._score_features(feats)
    out = {
        "score": scores.numpy().astype(np.float64),
        "top": _normal_distances(model, feats).flatten(1).amax(1).numpy().astype(np.float64),
    }
    if hasattr(model, "defect_memory_"):
        out["like"] = defect_like_counts(model, feats).numpy()
    return out


def guard_reasons(measures: dict[str, np.ndarray], limits: dict[str, Any]) -> list[str | None]:
    """Per image: why the guard refuses it from the normal bank (one line, without the file), or
    None when it may join."""
    out: list[str | None] = []
    for i, score in enumerate(measures["score"]):
        top = measures["top"][i]
        if "score_above" in limits and score > limits["score_above"]:
            out.append(f"scores {score:.4g} (limit {limits['score_above']:.4g})")
        elif "patch_above" in limits and top > limits["patch_above"]:
            out.append(f"has a patch at {top:.4g} from the normal bank (limit "
                       f"{limits['patch_above']:.4g})")  # fmt: skip
        elif "defect_like_above" in limits and measures["like"][i] > limits["defect_like_above"]:
            out.append(f"has {int(measures['like'][i])} patch(es) nearer a known defect than "
                       f"normal surface (limit {limits['defect_like_above']})")  # fmt: skip
        else:
            out.append(None)
    return out


def guard_check(
    model: Any, feats: torch.Tensor, limits: dict[str, Any]
) -> tuple[list[str | None], np.ndarray]:
    """Per image of (B, h, w, D) features: ``guard_reasons`` under ``limits``; and the scores."""
    measures = guard_measures(model, feats)
    return guard_reasons(measures, limits), measures["score"]


def choose_guard(inner: dict[str, dict[str, int]], default: str = GUARD) -> tuple[str, dict]:
    """The guard a training-only comparison picks: ``inner`` holds per candidate the counts on
    validation images of an inner split of training data: ``caught`` of ``defective`` images
    refused, ``refused`` of ``good`` images refused. Criterion: catch rate minus wrongful-refusal
    rate (Youden's J: a guard that refuses everything, or nothing, scores 0); ties go to
    ``default``, then to the fewest good images refused, then to ``GUARDS``' order. Returns (the
    choice, each candidate's criterion). Pure: it sees only what it is given."""
    crit = {
        name: c["caught"] / max(1, c["defective"]) - c["refused"] / max(1, c["good"])
        for name, c in inner.items()
    }
    best = max(crit.values())
    tied = [n for n in inner if math.isclose(crit[n], best, rel_tol=0.0, abs_tol=1e-12)]
    if default in tied:
        return default, crit
    order = list(GUARDS)
    tied.sort(key=lambda n: (inner[n]["refused"] / max(1, inner[n]["good"]),
                             order.index(n) if n in order else len(order)))  # fmt: skip
    return tied[0], crit


def growth_budget(bank: Any, ratio: float, n: int) -> int:
    """How many of ``n`` new rows a bank may take: ceil(ratio x n), or more while the bank is
    below its floor (``coreset_min``, as a fit keeps every row below it)."""
    return max(1, math.ceil(ratio * n), min(n, bank.min_size - bank.bank_.shape[0]))


def _grow(model: Any, bank: Any, ratio: float, rows: torch.Tensor) -> list[int]:
    """Append to ``bank`` the rows of ``rows`` that continued k-center keeps (at most
    ``growth_budget``); returns the kept row indices. The bank gets a new tensor, never an
    in-place change, so a scorer holding the old one is unaffected."""
    budget = growth_budget(bank, ratio, rows.shape[0])
    picks = continued_kcenter(bank.bank_, rows, budget, model.projection_dim, model.seed)
    if len(picks):
        bank.bank_ = torch.cat([bank.bank_, rows[picks].float()]).contiguous()
    return picks.tolist()


def _kept_per_image(picks: list[int], owners: list[int], n: int) -> list[int]:
    counts = [0] * n
    for p in picks:
        counts[owners[p]] += 1
    return counts


def add_normal(
    model: Any,
    images: Sequence[ImageLike],
    force: bool = False,
    held_out: Sequence[ImageLike] | None = None,
    guard: float = GUARD_FACTOR,
    guard_rule: str = GUARD,
) -> Update:
    """Add confirmed-good images' patches to ``model``'s normal bank, in place (see module doc).

    Refuses (DataError, nothing changed) images the guard ``guard_rule`` (``GUARDS``; ``guard``:
    its factor) rejects unless ``force``."""
    model._check_fitted()
    _check_in_memory(model)
    samples = as_samples(images, 0)
    feats = model.image_features(samples, "online features")
    limits = guard_limits(model, guard, held_out, guard_rule)
    verdicts, scores = guard_check(model, feats, limits)
    refused = {i: f"{samples[i].image_path} {v}" for i, v in enumerate(verdicts) if v}
    if refused and not force:
        reasons = list(refused.values())
        raise DataError(
            f"refused from the normal bank ({limits['rule']}): {reasons[0]}"
            + (f" and {len(reasons) - 1} more" if len(reasons) > 1 else "")
            + "; a defect there would be scored as normal from now on (force to add anyway)"
        )
    rows = feats.reshape(-1, feats.shape[-1])
    owners = [i for i in range(len(samples)) for _ in range(feats.shape[1] * feats.shape[2])]
    before = model.memory_.bank_.shape[0]
    picks = _grow(model, model.memory_, model.coreset_ratio, rows)
    if getattr(model, "gate_summaries_", None) is not None:  # the image-level check learns them
        new = summarise(feats, list(range(len(samples))))
        model.gate_summaries_ = torch.cat([model.gate_summaries_, new.to(model.gate_summaries_)])
    model.record_training_images(s.image_path for s in samples)
    kept = _kept_per_image(picks, owners, len(samples))
    per_image = feats.shape[1] * feats.shape[2]
    added = [
        {**_file_record(s), "score_before": float(scores[i]), "patches": per_image,
         "rows_kept": kept[i], "forced": i in refused}
        for i, s in enumerate(samples)
    ]  # fmt: skip
    update = Update("normal", added, before, model.memory_.bank_.shape[0])
    update.threshold = recheck_threshold(model, held_out)
    update.threshold["guard"] = limits["rule"]
    update.threshold["guard_name"] = limits["guard"]
    return update


def _defect_cells(model: Any, samples: list, feats: torch.Tensor) -> tuple[list, dict | None]:
    """Per image, the (h, w) bool cells that are its defect: under its mask, or (no mask) farther
    from the normal bank than the novelty level; and the level used, if any."""
    level_record, cells = None, []
    grid = tuple(feats.shape[1:3])
    for i, s in enumerate(samples):
        if s.mask_path is not None:
            cells.append(mask_cells(s.mask(tuple(model.image_size)), grid))
            continue
        if level_record is None:
            level, source = novelty_level(model)
            level_record = {"level": level, "source": source}
        dn = _normal_distances(model, feats[i : i + 1])[0]
        cells.append(dn > level_record["level"])
    return cells, level_record


def add_defects(
    model: Any,
    images: Sequence[ImageLike],
    masks: Sequence | None = None,
    held_out: Sequence[ImageLike] | None = None,
) -> Update:
    """Add confirmed defects' patches to ``model``'s defect bank, in place (see module doc).
    ``masks``: one mask file (or None) per image; an image without one gives the patches above
    the novelty level, recorded as ``"patches": "above novelty level"``."""
    model._check_fitted()
    if not hasattr(model, "defect_memory_"):
        raise ConfigError("a single-bank model has no defect bank: fit a dual model to add defects")
    _check_in_memory(model)
    samples = as_samples(images, 1, masks)
    feats = model.image_features(samples, "online features")
    cells, level = _defect_cells(model, samples, feats)
    rows = torch.cat([f[c] for f, c in zip(feats, cells, strict=True)])
    if rows.shape[0] == 0:
        raise DataError(
            f"no defect patches in {samples[0].image_path}"
            + (f" and {len(samples) - 1} more" if len(samples) > 1 else "")
            + " (empty masks, or no patch above the novelty level): nothing to add"
        )
    owners = [i for i, c in enumerate(cells) for _ in range(int(c.sum()))]
    before = model.defect_memory_.bank_.shape[0]
    picks = _grow(model, model.defect_memory_, model.defect_coreset, rows)
    model.record_training_images(s.image_path for s in samples)
    kept = _kept_per_image(picks, owners, len(samples))
    added = [
        {**_file_record(s), "patches": int(c.sum()), "rows_kept": kept[i],
         "chosen_by": "mask" if s.mask_path is not None else "above novelty level"}
        for i, (s, c) in enumerate(zip(samples, cells, strict=True))
    ]  # fmt: skip
    update = Update("defect", added, before, model.defect_memory_.bank_.shape[0])
    update.novelty_level = level
    update.threshold = recheck_threshold(model, held_out)
    return update


def _check_in_memory(model: Any) -> None:
    if getattr(model, "spill_", None) is not None:
        raise ConfigError(
            "a bank fitted under max_memory is spilled to disk: load the saved model to add to it"
        )


def recheck_threshold(model: Any, held_out: Sequence[ImageLike] | None) -> dict[str, Any]:
    """Re-compute the stored threshold on the held-out normal images by the rule it was set
    with (``threshold.calibrate`` at its quantile, default 1.0: their largest score; for a dual
    model also the novelty level, as at fit) and set it; says whether it moved. Nothing to
    check without a stored threshold or without held-out images."""
    from dualpatch.threshold import calibrate

    old = getattr(model, "threshold_", None)
    if old is None:
        return {"checked": False, "reason": "the model stores no threshold"}
    if not held_out:
        return {
            "checked": False,
            "before": old,
            "reason": "held-out normal images not recorded: threshold kept, not re-checked",
        }
    samples = as_samples(held_out, 0)
    record = getattr(model, "threshold_record_", None) or {}
    quantile = float(record.get("quantile") or getattr(model, "threshold_quantile_", None) or 1.0)
    new = float(calibrate(model, samples, quantile))
    return {
        "checked": True,
        "before": old,
        "after": new,
        "moved": not math.isclose(old, new, rel_tol=1e-9, abs_tol=0.0),
        "held_out": len(samples),
        "quantile": quantile,
    }


def update_folder(
    model_dir: str | os.PathLike[str],
    bank: str,
    images: Sequence[ImageLike],
    masks: Sequence | None = None,
    force: bool = False,
    held_out: Sequence[ImageLike] | None = None,
    by: str | None = None,
    weights: str | None = None,
) -> tuple[int, Update]:
    """Load the current version of ``model_dir``, add ``images`` to its ``bank`` ("normal" or
    "defect") and save the result as a new version, made current in one step; (version, update).

    Held-out normal images given here are recorded in the version (file + SHA-256) and re-used by
    later updates; without any, the threshold is kept and the record says it was not re-checked.
    """
    from dualpatch.models import versions

    if bank not in ("normal", "defect"):
        raise ConfigError(f"unknown bank {bank!r} (normal or defect)")
    with versions.locked(model_dir):
        model = load_model(model_class("PatchCore"), model_dir, weights)  # or a subclass
        held = _held_out_files(model_dir) if held_out is None else list(held_out)
        if bank == "normal":
            update = add_normal(model, images, force=force, held_out=held)
        else:
            update = add_defects(model, images, masks, held_out=held)
        record = {
            "action": f"add_{bank}",
            **update.record(),
            "held_out": [_file_record(s) for s in as_samples(held, 0)] if held else None,
        }
        number = versions.commit(model_dir, model, record, by)
    return number, update


def _held_out_files(model_dir: str | os.PathLike[str]) -> list[Path]:
    """The held-out normal images recorded by the current version; [] when none are (or the
    folder has no versions). A file that changed since (SHA-256) is refused, not silently used."""
    from dualpatch.models import versions

    number = versions.current_version(model_dir)
    if number is None:
        return []
    files = []
    for entry in versions.read_record(model_dir, number).get("held_out") or []:
        path = Path(entry["file"])
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise DataError(
                f"{path}: held-out normal image recorded by version {number} is missing or "
                "changed; pass the held-out images again"
            )
        files.append(path)
    return files


def start_defect_bank(
    model: Any,
    images: Sequence[ImageLike],
    masks: Sequence | None = None,
    held_out: Sequence[ImageLike] | None = None,
) -> tuple[Any, Update]:
    """A dual model whose normal bank is single-bank ``model``'s and whose defect bank starts from
    ``images`` (their patches as ``add_defects`` picks them, bounded by ``defect_coreset``): for a
    line that starts with no known defect. The single bank's threshold is not in the dual rule's
    units, so it is re-computed on ``held_out`` normals, or dropped (and the record says so)."""
    if hasattr(model, "defect_memory_"):
        raise ConfigError("the model already has a defect bank: use add_defects")
    model._check_fitted()
    # by the registry: the estimators import this module (add_normal, add_defects)
    dual_class = model_class("DualPatchCore")
    dual = dual_class(**model.get_params(), weights=model.weights, cache_dir=model.cache_dir)
    dual.progress = model.progress
    dual._extractor = getattr(model, "_extractor", None)
    for name in ("memory_", "grid_", "map_scale_", "train_sha256_"):
        setattr(dual, name, getattr(model, name, None))
    dual.train_sha256_ = set(model.train_sha256_)
    # the guarded rule (the default) scores with tau: the single bank's, as novelty_level gives it
    tau, source = novelty_level(model)
    dual.set_novelty_level(tau, {"method": source})
    samples = as_samples(images, 1, masks)
    feats = dual.image_features(samples, "online features")
    cells, level = _defect_cells(dual, samples, feats)
    rows = torch.cat([f[c] for f, c in zip(feats, cells, strict=True)])
    if rows.shape[0] == 0:
        raise DataError(f"no defect patches in {samples[0].image_path}: nothing to start from")
    dual.defect_memory_ = dual._memory(dual.defect_coreset)
    dual.defect_memory_.bank_ = rows[:1].float()  # the k-center start: a fixed, seedless row
    _grow(dual, dual.defect_memory_, dual.defect_coreset, rows)
    dual.record_training_images(s.image_path for s in samples)
    added = [
        {**_file_record(s), "patches": int(c.sum()),
         "chosen_by": "mask" if s.mask_path is not None else "above novelty level"}
        for s, c in zip(samples, cells, strict=True)
    ]  # fmt: skip
    update = Update("defect", added, 0, dual.defect_memory_.bank_.shape[0], novelty_level=level)
    if getattr(model, "threshold_", None) is not None:
        dual.threshold_ = model.threshold_
        update.threshold = recheck_threshold(dual, held_out)
        if not update.threshold["checked"]:
            del dual.threshold_
            update.threshold["reason"] = "single-bank threshold dropped: no held-out normals"
    return dual, update
