"""The run spec: one vocabulary from the estimators' parameters to YAML keys, ``--set`` keys and
command-line options.

Every setting is a field of one of the dataclasses below. Its name is the estimator's constructor
parameter (``ModelSpec``: ``PatchCore`` / ``DualPatchCore``), the config's YAML key, the ``--set``
key and, with ``_`` written ``-``, the CLI option (``coreset_ratio``: ``--coreset-ratio``). Its
metadata (a ``Setting``) says what a valid value is, the help text, the choices (read from the
registries: datasets, backbones, normalisations, dual rules, augmenters) and the old names that
still work with a one-line warning. Adding a backbone or a rule is one edit in its registry; adding
a setting is one field here. Sizes are (H, W), height first, as torch orders them, everywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Self

from dualpatch import spec_values as sv
from dualpatch.defaults import (
    BACKBONE,
    BANK_DTYPES,
    CORESET_METHODS,
    CORESET_MIN,
    CORESET_ROWS,
    DEFECT_CORESET,
    DEFECT_SOURCE,
    DEFECT_SOURCES,
    DUAL_RULE,
    IMAGE_SIZE,
    KNN_METHODS,
    MAX_SEED,
    MIN_SIDE,
    NORMAL_CORESET,
    NORMALIZATION,
)
from dualpatch.errors import ConfigError
from dualpatch.spec_values import Setting, option_name

#: the two kinds of model (``PatchCore.kind``, ``DualPatchCore.kind``)
BANKS = ("single", "dual")
ON_DUPLICATES = ("warn", "drop", "error")
THRESHOLDS = ("validation", "none")
#: few-shot dual rule: the run's own, or chosen per fold and n on an inner split (fewshot_rule)
RULE_SELECTIONS = ("none", "inner")


def _shots_ok(value: Any) -> bool:
    from dualpatch.data.fewshot import check_shots_value

    return check_shots_value(value)


# ------------------------------------------------------------------------------ registries
# Read on use (the CLI reads them once, when it builds its options); each is its module's registry.
def dataset_names() -> tuple[str, ...]:
    from dualpatch.data import DATASETS

    return tuple(DATASETS)


def backbone_names() -> tuple[str, ...]:
    from dualpatch.features.backbones import BACKBONE_NAMES

    return BACKBONE_NAMES


def normalization_names() -> tuple[str, ...]:
    from dualpatch.features.backbones import NORMALIZATION_CHOICES

    return NORMALIZATION_CHOICES


def rule_names() -> tuple[str, ...]:
    from dualpatch.scoring import DUAL_RULES

    return tuple(DUAL_RULES)


def augment_methods() -> tuple[str, ...]:
    from dualpatch.augment import METHODS

    return METHODS


#: the parameters only ``DualPatchCore`` takes
DUAL_ONLY = ("defect_coreset", "rule")


@dataclass
class ModelSpec:
    """The estimators' parameters (``DualPatchCore`` adds ``defect_coreset`` and ``rule``).

    Commands receive an instance (``cli.spec.spec_options``), the experiment runner builds one per
    run (``of``); ``estimator_kwargs`` hands its fields to an estimator. A size is an (H, W) tuple
    here, as the estimators hold it, however it was written (a config's or an option's list)."""

    backbone: str = sv.choice(BACKBONE, backbone_names, "Feature backbone.")
    image_size: tuple[int, int] = sv.entry(IMAGE_SIZE, Setting(
        f"[H, W] with both at least {MIN_SIDE}", sv.size_ok,
        "Input size H W, height first as in torch (keep the aspect ratio).", flags=("--size",),
    ))  # fmt: skip
    coreset_ratio: float = sv.fraction(
        NORMAL_CORESET, "Fraction of normal patches kept.",
        aliases=("normal_coreset",), flags=("--coreset",),
    )  # fmt: skip
    defect_coreset: float = sv.fraction(DEFECT_CORESET, "Fraction of defect patches kept (dual).")
    coreset_min: int = sv.at_least_1(CORESET_MIN, "Floor on each bank's size.")
    rule: str = sv.choice(DUAL_RULE, rule_names, "Dual scoring rule.")
    num_neighbors: int = sv.at_least_1(1, "k: a patch's distance is the mean over its k nearest.")
    reweight: bool = sv.flag(
        False, "PatchCore paper's image-score re-weighting (single bank only)."
    )
    reweight_neighbors: int = sv.at_least_1(9, "Neighbourhood size of --reweight.")
    image_gate: bool = sv.flag(
        True, "Image-level check: flag a frame lacking what normal images hold (blank, blurred)."
    )
    normalization: str = sv.choice(
        NORMALIZATION, normalization_names, "Input normalisation (auto: the weights' own)."
    )
    weights: str | None = sv.entry(None, Setting(
        "a weights file path, or null", lambda v: v is None or sv.text(v),
        "Backbone state_dict file (.pth/.safetensors).", path=True,
    ))  # fmt: skip
    seed: int = sv.seed(0, "Seed of the coreset's projection and start point.")
    coreset_method: str = sv.choice(
        "greedy", lambda: CORESET_METHODS,
        "greedy (exact k-center) or approx (greedy narrowed to the far rows; large data).",
    )  # fmt: skip
    knn: str = sv.choice(
        "torch", lambda: KNN_METHODS, "torch or faiss-flat (exact), faiss-ivf (approximate)."
    )
    max_memory: str | None = sv.entry(None, Setting(
        "a size like 2GiB or 512MiB (or null)", sv.memory_size,
        "Cap on fit memory, e.g. 2GiB: features spill to disk (docs/large-data.md).",
    ))  # fmt: skip
    # search cost (docs/search.md): a bank budget in rows, float16 storage, a learned projection
    coreset_rows: int | None = sv.entry(CORESET_ROWS, Setting(
        "a whole number of at least 1, or null", lambda v: v is None or (sv.whole(v) and v >= 1),
        "Most rows per bank, whatever the ratio (null in a config: no cap).", minimum=1,
    ))  # fmt: skip
    bank_dtype: str = sv.choice(
        "float32",
        lambda: BANK_DTYPES,
        "Bank storage: float16 halves its memory (searched in float32).",
    )
    search_dim: int | None = sv.entry(None, Setting(
        "a whole number of at least 1, or null", lambda v: v is None or (sv.whole(v) and v >= 1),
        "Rank neighbours in this many principal axes of each bank (distances exact; null: all).",
        minimum=1,
    ))  # fmt: skip

    def __post_init__(self) -> None:
        if isinstance(self.image_size, list):  # [H, W] from YAML or an option's plain value
            self.image_size = (self.image_size[0], self.image_size[1])

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Self:
        """The spec of ``settings`` (a config's resolved run, or a command's values): its keys
        that are fields of ``cls``; the other fields at their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in names})

    def estimator_kwargs(self, kind: str = "dual") -> dict[str, Any]:
        """The keyword arguments of the ``kind`` ("single" or "dual") estimator: every model
        field (a single bank takes neither ``defect_coreset`` nor ``rule``)."""
        return {k: getattr(self, k) for k in MODEL_KEYS if kind == "dual" or k not in DUAL_ONLY}


@dataclass
class RunSpec(ModelSpec):
    """One run of an experiment: a model, and what feeds its defect bank."""

    name: str = sv.entry("run", Setting("a non-empty name", sv.text, cli=False))
    bank: str = sv.choice(
        "dual", lambda: BANKS, "single: normal bank only; dual: normal + defect.", scope="run"
    )
    defects: str = sv.choice(
        DEFECT_SOURCE, lambda: DEFECT_SOURCES,
        "Defect bank from mask patches of whole images, or from crops.",
    )  # fmt: skip
    augment: dict | None = sv.entry(None, Setting(scope="run", cli=False))
    augmented: list[str] = sv.entry([], Setting(
        "a list of augmentation folder paths", sv.paths,
        "Synthetic-defect folder(s) for the defect bank (repeatable).", scope="run", path=True,
    ))  # fmt: skip
    # the few-shot baseline: defect-bank features perturbed or interpolated (feature_augment.py)
    defect_feature_augment: dict | None = sv.entry(None, Setting(scope="run", cli=False))
    crops: list[str] = sv.entry([], Setting(
        "a list of crop folders", sv.paths,
        "Crop folder(s) for the defect bank, in place of the training defects "
        "(from 'data crops', 'augment --as-crops' or your own cut-outs; repeatable).", path=True,
    ))  # fmt: skip


@dataclass
class ExperimentSpec(RunSpec):
    """A whole config: the dataset, the protocol, and experiment-wide defaults of every run."""

    name: str = sv.entry("experiment", Setting("a non-empty name", sv.text, cli=False))
    dataset: str = sv.choice("demo", dataset_names, "Dataset family of --data.", scope="top")
    data: str = sv.entry("runs/demo-data", Setting(
        "a dataset folder path", sv.text, "Dataset root folder.", scope="top", path=True
    ))  # fmt: skip
    # a "folder" dataset of your own images (dualpatch.data.folder): its folders, under data
    # unless absolute, and how its train/validation/test split is drawn; an MVTec-layout data
    # folder keeps its own split
    good: str | None = sv.entry(None, Setting(
        "a folder path, or null", lambda v: v is None or sv.text(v),
        "folder dataset: good images, under --data unless absolute (default: good).",
        aliases=("good_dir",), flags=("--good-dir",), scope="top", path=True,
    ))  # fmt: skip
    defective: str | None = sv.entry(None, Setting(
        "a folder path, or null", lambda v: v is None or sv.text(v),
        "folder dataset: defective images (default: defective).",
        aliases=("defective_dir",), flags=("--defective-dir",), scope="top", path=True,
    ))  # fmt: skip
    masks: str | None = sv.entry(None, Setting(
        "a folder path, or null", lambda v: v is None or sv.text(v),
        "folder dataset: masks paired by stem, optional (default: masks).",
        aliases=("mask_dir",), flags=("--mask-dir",), scope="top", path=True,
    ))  # fmt: skip
    test_fraction: float = sv.entry(0.2, Setting(
        "a fraction between 0 and 1 (both excluded)", lambda v: sv.number(v) and 0 < v < 1,
        "folder dataset: share of images drawn for the test split.", minimum=0.0, maximum=1.0,
        scope="top",
    ))  # fmt: skip
    validation_fraction: float = sv.entry(0.2, Setting(
        "a fraction from 0 to 1 (1 excluded)", lambda v: sv.number(v) and 0 <= v < 1,
        "folder dataset: share of images drawn for validation (fit's threshold).",
        minimum=0.0, maximum=1.0, scope="top",
    ))  # fmt: skip
    split_seed: int = sv.seed(
        0, "folder dataset: seed of the train/validation/test draw.", scope="top"
    )
    out: str = sv.entry("runs/experiment", Setting(
        "a results folder path", sv.text, "Results folder.", scope="top", path=True
    ))  # fmt: skip
    train_items: list[int] | None = sv.entry(None, Setting(
        "item numbers like 1-33 or 1,2,5-9", sv.items_ok,
        "KolektorSDD training items, e.g. 1-33.", scope="top",
    ))  # fmt: skip
    # an estimator parameter, but one folder serves every run
    cache_dir: str | None = sv.entry(None, Setting(
        "a folder path, or empty for none", lambda v: v is None or isinstance(v, str),
        "Feature cache folder (default: $DUALPATCH_CACHE or ~/.cache/dualpatch).",
        aliases=("cache",), flags=("--cache",), scope="top", path=True,
    ))  # fmt: skip
    inline_images: bool = sv.flag(False, "Embed the report's images in report.html.", scope="top")
    native_pixel_metrics: bool = sv.flag(
        False,
        "Also compute pixel AUROC and AUPRO at each image's own resolution (the map upsampled, "
        "not the mask downscaled): pixel_auroc_native, pixel_aupro_native.",
        scope="top",
    )
    # the evaluation protocol (dualpatch.experiment.protocol, dualpatch.experiment.crossval)
    folds: int | None = sv.entry(None, Setting(
        "null or a whole number >= 2", lambda v: v is None or (sv.whole(v) and v >= 2),
        "K-fold cross-validation (group-aware, stratified); null: the dataset's split.",
        scope="top",
    ))  # fmt: skip
    fold_seed: int = sv.seed(0, "Seed of the fold assignment.", scope="top")
    seeds: list[int] | None = sv.entry(None, Setting(
        f"null or a non-empty list of distinct whole numbers 0 to {MAX_SEED}", sv.seeds_ok,
        "Seeds to repeat every run with, e.g. 0,1,2 (none: the one seed setting).",
        scope="top", listed=True,
    ))  # fmt: skip
    on_duplicates: str = sv.choice(
        "warn", lambda: ON_DUPLICATES,
        "A test image that copies a training image: warn, drop it, or error.", scope="top",
    )  # fmt: skip
    near_duplicates: int | None = sv.entry(None, Setting(
        "null or a whole number 0 to 256", lambda v: v is None or (sv.whole(v) and 0 <= v <= 256),
        "Also treat a test image whose 16x16 average hash is within this many bits of a training "
        "image's as a copy, under on_duplicates (null: off).", scope="top",
    ))  # fmt: skip
    bootstrap: int = sv.entry(1000, Setting(
        "a whole number >= 10", lambda v: sv.whole(v) and v >= 10,
        "Resamples of the 95% bootstrap intervals.", scope="top",
    ))  # fmt: skip
    # the report's decision threshold: fitted on a validation split of the training items, or
    # "none" (no validation fit; the gallery then shows the oracle threshold, labelled as such)
    threshold: str = sv.choice(
        "validation", lambda: THRESHOLDS, "The report's threshold.", scope="top"
    )
    # few real defects (experiment.fewshot_runner): e.g. [1, 2, 5, 10, all] real defective training
    # images per dual run, each n drawn defect_draws times; null: every defect, once
    defect_shots: list | None = sv.entry(None, Setting(
        "null or a list of distinct whole numbers >= 1 and/or all, e.g. [1, 2, 5, 10, all]",
        lambda v: _shots_ok(v), "Few real defects: n per dual run, e.g. 1,2,5,10,all.",
        scope="top", listed=True,
    ))  # fmt: skip
    defect_draws: int = sv.at_least_1(3, "Random draws per n of defect_shots.", scope="top")
    # "inner" chooses each dual run's rule per fold (and n, in few-shot runs) on a validation split
    # of the fold's training items (dualpatch.experiment.fewshot_rule); "none" keeps the run's rule
    rule_selection: str = sv.choice(
        "none", lambda: RULE_SELECTIONS,
        "Dual rule: the run's (none) or chosen per fold on an inner validation split (inner).",
        scope="top",
    )  # fmt: skip
    runs: list[dict] = sv.entry(
        [{"name": "single", "bank": "single"}, {"name": "dual", "bank": "dual"}],
        Setting(scope="top", cli=False),
    )


# ------------------------------------------------------------------------------ derived
SETTINGS: dict[str, Setting] = {f.name: f.metadata["s"] for f in fields(ExperimentSpec)}
#: the estimators' parameters that a config or a command sets
MODEL_KEYS = tuple(f.name for f in fields(ModelSpec))
#: keys a run may set for itself, overriding the experiment-wide value
RUN_KEYS = frozenset(f.name for f in fields(RunSpec))
#: top-level config keys (and ``--set`` keys) in the order a results folder's config.yaml shows:
#: the experiment's own, the runs' shared defaults, the runs
TOP_KEYS = tuple(
    ["name"]
    + [n for n, s in SETTINGS.items() if s.scope == "top" and n != "runs"]
    + [n for n, s in SETTINGS.items() if s.scope == "shared" and n != "name"]
    + ["runs"]
)
#: old key -> key: renamed settings, still accepted with a warning
ALIASES = {old: name for name, s in SETTINGS.items() for old in s.aliases}
#: the old names of run keys
RUN_ALIASES = frozenset(old for old, name in ALIASES.items() if name in RUN_KEYS)
#: old CLI option -> option
FLAG_ALIASES = {old: option_name(name) for name, s in SETTINGS.items() for old in s.flags}
AUGMENT_KEYS = {"method", "n", "steps", "minutes", "seed", "weights"}
#: few-shot keys a run may also set (read by the few-shot runner, never part of a fitted model)
FEWSHOT_RUN_KEYS = frozenset({"defect_shots", "defect_draws"})


def defaults() -> dict[str, Any]:
    """A fresh config of every top-level key at its default, as YAML holds it (a size as a
    list)."""
    spec = ExperimentSpec()
    return {name: _as_config(getattr(spec, name)) for name in TOP_KEYS}


def _as_config(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def renamed(old: str, new: str, where: str = "config") -> None:
    """The one-line warning for an old name (shown once per name; ``FutureWarning``, which Python
    shows to users, unlike ``DeprecationWarning``)."""
    warnings.warn(
        f"{where}: {old} is renamed {new}; the old name still works but will be removed",
        FutureWarning,
        stacklevel=3,
    )


def canonical_keys(mapping: dict, where: str) -> list[tuple[str, str]]:
    """Rename old keys of ``mapping`` in place (its order kept); the (old, new) pairs renamed.

    Refuses a mapping that gives both names of one setting."""
    pairs = [(k, ALIASES[k]) for k in mapping if isinstance(k, str) and k in ALIASES]
    for old, new in pairs:
        if new in mapping:
            raise ConfigError(f"config: {where}{old} and {new} are one setting; keep {new}")
    if pairs:
        items = [(ALIASES.get(k, k) if isinstance(k, str) else k, v) for k, v in mapping.items()]
        mapping.clear()
        mapping.update(items)
    return pairs


def check_value(where: str, key: str, value: Any) -> None:
    """ConfigError unless ``value`` is usable for setting ``key`` (checked before any work).

    ``key`` may be an old name (an alias): the message names the key as the user wrote it."""
    from dualpatch.limits import check_size, parse_items

    name = ALIASES.get(key, key)
    if name == "image_size" and sv.size_ok(value):  # in range for the backbones; within limits?
        check_size(value[0], value[1], f"config: {where}{key} {list(value)}")
    if name == "train_items" and isinstance(value, str | int) and not isinstance(value, bool):
        parse_items(str(value), f"config: {where}{key}")
        return
    if name == "augment":
        if isinstance(value, dict):
            check_augment(where, value)
        return
    if name == "defect_feature_augment":
        if value is not None:
            from dualpatch.features.augment import check_settings

            try:
                check_settings(value)
            except ConfigError as exc:
                raise ConfigError(f"config: {where}{exc}") from exc
        return
    setting = SETTINGS.get(name)
    if setting is None or setting.ok(value) or (not setting.expected and not setting.choices):
        return
    raise ConfigError(f"config: {where}{key} is {value!r}; expected {setting.expect()}")


def check_augment(where: str, spec: dict) -> None:
    """The values of a run's ``augment`` mapping (its keys and method are checked by the caller)."""

    def whole(v: Any, low: int | None = None) -> bool:
        return sv.whole(v) and (low is None or v >= low)

    checks = {
        "n": (lambda v: whole(v, 1), "a whole number of at least 1"),
        "steps": (lambda v: v is None or whole(v, 1), "a whole number of at least 1, or null"),
        "minutes": (lambda v: v is None or (sv.number(v) and v > 0),
                    "a positive number of minutes, or null"),
        "seed": (lambda v: whole(v) and 0 <= v <= MAX_SEED, f"a whole number 0 to {MAX_SEED}"),
    }  # fmt: skip
    for key, (ok, expected) in checks.items():
        if key in spec and not ok(spec[key]):
            raise ConfigError(f"config: {where}augment.{key} is {spec[key]!r}; expected {expected}")


def check_values(where: str, mapping: dict) -> list[tuple[str, str]]:
    """``check_value`` for every key of ``mapping``, then its old keys renamed in place; the
    (old, new) pairs renamed, for the caller to warn about once (``warn_renamed``)."""
    for key, value in mapping.items():
        check_value(where, key, value)
    return canonical_keys(mapping, where)


def warn_renamed(pairs: Iterable[tuple[str, str]]) -> None:
    """One warning per old name in ``pairs``, however often it was used."""
    for old, new in dict(pairs).items():
        renamed(old, new)
