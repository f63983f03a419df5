"""The experiment config: its keys and defaults, ``key=value`` overrides, and validation.

A config names a dataset, shared defaults and a list of runs (single, dual, dual + augmentation,
dual scoring rules); ``load_config`` reads one over ``DEFAULTS`` and checks every value before any
work starts. ``dualpatch.experiment`` runs it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from .defaults import DEFECT_CORESET, DEFECT_SOURCE, DUAL_RULE, NORMAL_CORESET, NORMALIZATION
from .errors import ConfigError
from .scoring import DEFAULT_NUM_NEIGHBORS, DEFAULT_REWEIGHT_NEIGHBORS, DUAL_RULES

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "dataset": "demo",
    "data": "runs/demo-data",
    "out": "runs/experiment",
    "train_items": None,
    "backbone": "efficientnet_lite0",
    "image_size": [320, 128],
    "normalization": NORMALIZATION,
    "weights": None,
    "normal_coreset": NORMAL_CORESET,
    "defect_coreset": DEFECT_CORESET,
    "coreset_min": 1000,
    "rule": DUAL_RULE,
    "defects": DEFECT_SOURCE,
    "reweight": False,
    "num_neighbors": DEFAULT_NUM_NEIGHBORS,
    "reweight_neighbors": DEFAULT_REWEIGHT_NEIGHBORS,
    "seed": 0,
    "cache": None,
    "coreset_method": "greedy",
    "knn": "torch",
    "max_memory": None,
    "inline_images": False,
    "crops": [],
    # evaluation protocol (dualpatch.protocol, dualpatch.crossval)
    "folds": None,  # K: group-aware stratified K-fold cross-validation; None: the dataset's split
    "fold_seed": 0,
    "seeds": None,  # a list of seeds: every run once per fold x seed; None: [seed]
    "on_duplicates": "warn",  # a test image copying a training image: warn, drop or error
    "bootstrap": 1000,  # resamples of the 95% bootstrap intervals
    # the report's decision threshold: fitted on a validation split of the training items, or
    # "none" (no validation fit; the gallery then shows the oracle threshold, labelled as such)
    "threshold": "validation",
    # few real defects (dualpatch.fewshot_runner): e.g. [1, 2, 5, 10, all] real defective training
    # images per dual run, each n drawn defect_draws times; None: every defect, once
    "defect_shots": None,
    "defect_draws": 3,
    "runs": [
        {"name": "single", "bank": "single"},
        {"name": "dual", "bank": "dual"},
    ],
}
#: keys a run may set for itself, overriding the experiment-wide value
RUN_KEYS = {
    "name",
    "bank",
    "rule",
    "backbone",
    "normalization",
    "weights",
    "normal_coreset",
    "defect_coreset",
    "coreset_min",
    "reweight",
    "num_neighbors",
    "reweight_neighbors",
    "image_size",
    "seed",
    "augment",
    "augmented",
    "defects",
    "coreset_method",
    "knn",
    "max_memory",
    "crops",
    "defect_feature_augment",
}
#: per-run keys read by the few-shot runner only (never part of a run's fitted settings)
FEWSHOT_RUN_KEYS = {"defect_shots", "defect_draws"}
AUGMENT_KEYS = {"method", "n", "steps", "minutes", "seed", "weights"}


# -------------------------------------------------------------------------------- config
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(config: dict, assignment: str) -> None:
    """Apply ``key=value`` (dotted keys reach into runs: ``runs.0.rule=seed``)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    parts = key.split(".")
    node: Any = config
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ConfigError(f"--set {assignment!r}: no config key {key!r}") from exc
    last = parts[-1]
    if not isinstance(node, dict | list):  # e.g. data.x=1: data is a path, not a mapping
        raise ConfigError(f"--set {assignment!r}: no config key {key!r}")
    if isinstance(node, list):
        try:
            node[int(last)] = _parse_value(value)
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"--set {assignment!r}: no config key {key!r}") from exc
    elif node is config and last not in DEFAULTS:
        raise ConfigError(f"--set {assignment!r}: unknown config key {last!r}")
    else:
        node[last] = _parse_value(value)


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Read a YAML config over the defaults, apply ``key=value`` overrides, validate it."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file")
        try:
            text = path.read_text(encoding="utf-8")
            loaded = yaml.safe_load(text)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: config file not found") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if loaded is None:  # an empty file would silently run the default demo experiment
            raise ConfigError(f"{path}: config file is empty")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config is a mapping of keys to values")
        unknown = {str(k) for k in loaded} - set(DEFAULTS)
        if unknown or not all(isinstance(k, str) for k in loaded):
            raise ConfigError(f"{path}: unknown config key(s) {', '.join(sorted(unknown))}")
        config.update(loaded)
    for assignment in overrides:
        apply_override(config, assignment)
    return validate(config)


def _check_value(where: str, key: str, value: Any) -> None:
    """ConfigError unless ``value`` is usable for setting ``key`` (checked before any work)."""
    from .defaults import MAX_SEED
    from .fewshot import check_shots_value
    from .limits import MIN_SIDE, check_size, parse_items
    from .spill import memory_size_ok

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def whole_at_least_1(v: Any) -> bool:
        return whole(v) and v >= 1

    def text(v: Any) -> bool:
        return isinstance(v, str) and v.strip() != ""

    if key == "image_size" and isinstance(value, list | tuple) and len(value) == 2:
        if all(whole(x) and x >= MIN_SIDE for x in value):  # smaller: the message below
            check_size(value[0], value[1], f"config: {where}image_size {list(value)}")
    if key == "train_items" and isinstance(value, str | int) and not isinstance(value, bool):
        parse_items(str(value), f"config: {where}train_items")
        return
    if key == "augment" and isinstance(value, dict):
        _check_augment(where, value)
        return
    if key == "defect_feature_augment" and value is not None:
        from .feature_augment import check_settings

        try:
            check_settings(value)
        except ConfigError as exc:
            raise ConfigError(f"config: {where}{exc}") from exc
        return
    choices = {
        "dataset": ("kolektorsdd", "ksdd2", "folder", "demo"),
        "backbone": ("efficientnet_lite0", "efficientnet_lite2", "resnet50", "wide_resnet50_2"),
        "normalization": ("auto", "imagenet", "tf"),
        "rule": tuple(DUAL_RULES),
        "defects": ("image", "crop"),
        "coreset_method": ("greedy", "approx"),
        "knn": ("torch", "faiss-flat", "faiss-ivf"),
        "on_duplicates": ("warn", "drop", "error"),
        "threshold": ("validation", "none"),
    }
    checks = {
        "image_size": (
            lambda v: (
                isinstance(v, list | tuple)
                and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= MIN_SIDE for x in v)
            ),
            f"[H, W] with both at least {MIN_SIDE}",
        ),
        "normal_coreset": (lambda v: number(v) and 0 <= v <= 1, "a fraction from 0 to 1"),
        "defect_coreset": (lambda v: number(v) and 0 <= v <= 1, "a fraction from 0 to 1"),
        "coreset_min": (whole_at_least_1, "a whole number of at least 1"),
        "seed": (lambda v: whole(v) and 0 <= v <= MAX_SEED, f"a whole number 0 to {MAX_SEED}"),
        "name": (text, "a non-empty name"),
        "data": (text, "a dataset folder path"),
        "out": (text, "a results folder path"),
        "cache": (lambda v: v is None or isinstance(v, str), "a folder path, or empty for none"),
        "weights": (lambda v: v is None or text(v), "a weights file path, or null"),
        "train_items": (
            lambda v: (
                v is None or (isinstance(v, list) and all(whole(x) and 1 <= x <= 999 for x in v))
            ),
            "item numbers like 1-33 or 1,2,5-9",
        ),
        "augmented": (
            lambda v: isinstance(v, list) and all(text(x) for x in v),
            "a list of augmentation folder paths",
        ),
        "reweight": (lambda v: isinstance(v, bool), "true or false"),
        "num_neighbors": (whole_at_least_1, "a whole number of at least 1"),
        "reweight_neighbors": (whole_at_least_1, "a whole number of at least 1"),
        "inline_images": (lambda v: isinstance(v, bool), "true or false"),
        "max_memory": (
            lambda v: v is None or memory_size_ok(v),
            "a size like 2GiB or 512MiB (or null)",
        ),
        "crops": (
            lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
            "a list of crop folders",
        ),
        "folds": (lambda v: v is None or (whole(v) and v >= 2), "null or a whole number >= 2"),
        "fold_seed": (lambda v: whole(v) and 0 <= v <= MAX_SEED, f"a whole number 0 to {MAX_SEED}"),
        "seeds": (
            lambda v: (
                v is None
                or (
                    isinstance(v, list)
                    and bool(v)
                    and all(whole(x) and 0 <= x <= MAX_SEED for x in v)
                )
            ),
            f"null or a non-empty list of whole numbers 0 to {MAX_SEED}",
        ),
        "bootstrap": (lambda v: whole(v) and v >= 10, "a whole number >= 10"),
        "defect_shots": (
            check_shots_value,
            "null or a list of distinct whole numbers >= 1 and/or all, e.g. [1, 2, 5, 10, all]",
        ),
        "defect_draws": (whole_at_least_1, "a whole number of at least 1"),
    }
    if key in choices:
        ok, expected = value in choices[key], "one of " + ", ".join(choices[key])
    elif key in checks:
        ok, expected = checks[key][0](value), checks[key][1]
    else:
        return
    if not ok:
        raise ConfigError(f"config: {where}{key} is {value!r}; expected {expected}")


def _check_augment(where: str, spec: dict) -> None:
    """The values of a run's ``augment`` mapping (its keys and method are checked in validate)."""
    from .defaults import MAX_SEED

    def whole(v: Any, low: int | None = None) -> bool:
        ok = isinstance(v, int) and not isinstance(v, bool)
        return ok and (low is None or v >= low)

    def positive(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and v > 0

    checks = {
        "n": (lambda v: whole(v, 1), "a whole number of at least 1"),
        "steps": (lambda v: v is None or whole(v, 1), "a whole number of at least 1, or null"),
        "minutes": (lambda v: v is None or positive(v), "a positive number of minutes, or null"),
        "seed": (lambda v: whole(v) and 0 <= v <= MAX_SEED, f"a whole number 0 to {MAX_SEED}"),
    }
    for key, (ok, expected) in checks.items():
        if key in spec and not ok(spec[key]):
            raise ConfigError(f"config: {where}augment.{key} is {spec[key]!r}; expected {expected}")


def validate(config: dict[str, Any]) -> dict[str, Any]:
    runs = config.get("runs")
    if not isinstance(runs, list) or not runs:  # before anything iterates it (--set runs=true)
        raise ConfigError("config: 'runs' must be a non-empty list")
    for node in [config, *(r for r in runs if isinstance(r, dict))]:
        if isinstance(node.get("crops"), str):  # one folder, e.g. --set crops=DIR
            node["crops"] = [node["crops"]]
        if "defect_shots" in node:  # one n, e.g. --set defect_shots=5
            from .fewshot import normalise_shots

            node["defect_shots"] = normalise_shots(node["defect_shots"])
    for key, value in config.items():
        _check_value("", key, value)
    runs = config["runs"]
    if not isinstance(runs, list) or not runs:
        raise ConfigError("config: 'runs' must be a non-empty list")
    names = set()
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or "bank" not in run:
            raise ConfigError(f"config: runs[{i}] needs at least a 'bank' (single or dual)")
        unknown = {str(k) for k in run} - RUN_KEYS - FEWSHOT_RUN_KEYS
        if FEWSHOT_RUN_KEYS & set(run) and not config["defect_shots"]:
            raise ConfigError(f"config: runs[{i}] sets defect_shots/defect_draws, but the "
                              "experiment has no defect_shots")  # fmt: skip
        if unknown:
            raise ConfigError(f"config: runs[{i}] has unknown key(s) {', '.join(sorted(unknown))}")
        if run["bank"] not in ("single", "dual"):
            raise ConfigError(f"config: runs[{i}].bank is {run['bank']!r}, not single or dual")
        for key, value in run.items():
            _check_value(f"runs[{i}].", key, value)
        if run["bank"] == "single" and (run.get("augment") or run.get("augmented")):
            raise ConfigError(f"config: runs[{i}] adds synthetic defects to a single-bank run")
        if run["bank"] == "single" and run.get("defect_feature_augment"):
            raise ConfigError(f"config: runs[{i}] gives defect_feature_augment to a single bank")
        if run["bank"] == "single" and run.get("crops"):
            raise ConfigError(f"config: runs[{i}] gives crops (a defect bank) to a single-bank run")
        aug = run.get("augment")
        if aug is not None:
            if not isinstance(aug, dict) or aug.get("method") not in ("ddpm", "paste", "sdxl"):
                raise ConfigError(f"config: runs[{i}].augment.method must be ddpm, paste or sdxl")
            extra = {str(k) for k in aug} - AUGMENT_KEYS
            if extra:
                raise ConfigError(
                    f"config: runs[{i}].augment has unknown key(s) {', '.join(sorted(extra))}"
                )
        if run["bank"] == "dual" and resolve_run(config, run)["reweight"]:
            raise ConfigError(
                f"config: runs[{i}] is a dual run with reweight: true; re-weighting applies to "
                "single-bank runs only (set reweight in those runs)"
            )
        run.setdefault("name", run["bank"] if i == 0 else f"{run['bank']}{i}")
        if run["name"] in names:
            raise ConfigError(f"config: run name {run['name']!r} appears twice")
        names.add(run["name"])
    return config


def resolve_run(config: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A run's full settings: experiment-wide values overridden by the run's own."""
    shared = {k: config[k] for k in RUN_KEYS & set(DEFAULTS)}
    settings = {**shared, "augment": None, "augmented": [], **run}
    if not settings.get("crops") or settings["bank"] == "single":
        settings.pop("crops", None)  # runs without crops keep their signatures from before
    return settings
