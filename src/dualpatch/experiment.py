"""The experiment matrix: one config in, one reproducible results folder out.

A config names a dataset, shared defaults and a list of runs (single, dual, dual + augmentation,
dual scoring rules). Finished runs are skipped when rerun; features are cached per image, so a
rerun or a resumed run extracts nothing twice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .defaults import DEFECT_CORESET, DEFECT_SOURCE, DUAL_RULE, NORMAL_CORESET, NORMALIZATION
from .errors import ConfigError
from .metrics_io import from_json, json_metrics
from .scoring import DEFAULT_NUM_NEIGHBORS, DEFAULT_REWEIGHT_NEIGHBORS, DUAL_RULES

#: the marker name of run folders; folders written before markers hold these three
COMMAND = "run"
LEGACY = ("config.yaml", "environment.json", "dataset.json")

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
    from .fewshot_runner import check_shots_value
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
            from .fewshot_runner import normalise_shots

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


# -------------------------------------------------------------------------------- defect bank
def defect_inputs(train, source: str, size: tuple[int, int], augmented=(), crops=()) -> list:
    """What feeds the defect bank: the defective training images (``source="image"``: their mask
    patches, in whole-image context) or their crops (``"crop"``), plus synthetic defect folders.

    Crop folders (``crops``, e.g. from ``dualpatch data crops``) replace the training split's own
    defects: such a folder already holds them, and a user's own cut-outs stand in for them."""
    if source not in ("image", "crop"):
        raise ConfigError(f"unknown defect source {source!r} (image or crop)")
    if crops:
        from .data.crop_folder import load_crop_folders

        real = load_crop_folders(crops, size)
    else:
        real = train.defect_crops(size) if source == "crop" else train.defective()
    return real + synthetic_defects(augmented, source, size)


def synthetic_defects(dirs, source: str, size: tuple[int, int], limit: int | None = None) -> list:
    """The first ``limit`` images of each augmentation folder, as images or as crops."""
    if not dirs:
        return []
    from .augment import augmented_samples, load_augmented

    dirs = [Path(d) for d in dirs]
    if source == "crop":
        return load_augmented(dirs, size, limit=limit)
    return augmented_samples(dirs, limit)


# -------------------------------------------------------------------------------- provenance
def environment() -> dict[str, Any]:
    import torch

    from .models import _versions

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "versions": _versions(),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -------------------------------------------------------------------------------- running
class Experiment:
    """Runs every configured run into ``out/runs/<name>/`` and writes the comparison report."""

    def __init__(
        self, config: dict[str, Any], progress: Callable | None = None, log=None, force=False
    ):
        self.config = config
        self.out = Path(config["out"])
        self.progress = progress
        self.log = log or logging.getLogger("dualpatch.experiment")
        self.force = force

    def check_output(self) -> None:
        """Refuse an ``out`` that holds what ``dualpatch run`` did not write, unless ``force``."""
        from .fileio import check_output_dir

        check_output_dir(self.out, COMMAND, self.force, [self.config["data"]], legacy=LEGACY)

    def _train_items(self):
        from .limits import parse_items

        items = self.config["train_items"]
        return parse_items(str(items)) if isinstance(items, str | int) else items

    def run(self) -> Path:
        """Every run on every split (or fold) x seed; metrics, comparisons and the report."""
        from .crossval import finish, prepare, run_matrix
        from .fileio import mark_output, write_bytes, write_json

        self.check_output()
        self.config["train_items"] = self._train_items()
        # the splits open the data before any output: a bad --data leaves no folder behind
        splits, info = prepare(self)
        mark_output(self.out, COMMAND)
        write_json(self.out / "environment.json", environment())
        runs = [resolve_run(self.config, run) for run in self.config["runs"]]
        if self.config["defect_shots"]:  # n real defects per dual run: its own loop and summary
            from .fewshot_runner import finish_fewshot, run_fewshot

            return finish_fewshot(self, *run_fewshot(self, runs, splits), info)
        results, boots = run_matrix(self, runs, splits)
        write_bytes(self.out / "results.npy", _npy_bytes(_seed_layout(results)))
        return finish(self, results, boots, info)

    def run_one(self, s: dict, train, test, dataset_info, run_dir: Path | None = None) -> dict:
        from .data.crop_folder import crops_fingerprint
        from .evaluation import evaluate
        from .fileio import atomic_path, write_json, write_text
        from .protocol import f1_at, validation_threshold

        run_dir = run_dir or self.out / "runs" / _slug(s["name"])
        # a crops folder's content counts, not only its name: edited crops make the run stale
        crops = [crops_fingerprint(s["crops"])] if s.get("crops") else []
        signature = hashlib.sha256(
            json.dumps(
                [s, dataset_info["train"]["sha256"], dataset_info["test"]["sha256"], *crops]
                + ([] if self.config["threshold"] == "validation" else ["no-threshold"]),
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()
        done = run_dir / "run.json"
        if done.exists() and json.loads(done.read_text()).get("signature") == signature:
            self.log.info("%s: finished before, skipped", s["name"])
            return {**self._load_finished(run_dir, s["name"]), "skipped": True}
        model = self.fit_model(s, train)
        fit_s = model.fit_seconds_

        def fit_predict(inner, validation):
            return validation.labels, self.fit_model(s, inner, pool_of=train).predict(
                validation
            ).image_scores

        # the decision threshold comes from a validation split of the training data, never test
        threshold = {"threshold": float("nan"), "rule": "none (oracle threshold shown)"}
        if self.config["threshold"] == "validation":
            threshold = validation_threshold(fit_predict, train, s["seed"])
        t1 = time.perf_counter()
        pred = model.predict(test)
        test_s = time.perf_counter() - t1
        size = tuple(s["image_size"])
        masks = np.stack([smp.mask(size) for smp in test])
        metrics = evaluate(pred.labels, pred.image_scores, masks, pred.anomaly_maps)
        metrics.update(
            threshold=threshold["threshold"],
            threshold_rule=threshold["rule"],
            f1_at_threshold=f1_at(pred.labels, pred.image_scores, threshold["threshold"]),
            fit_seconds=round(fit_s, 2),
            images_per_second=round(len(test) / test_s, 2),
            peak_rss_mb=round(_rss_mb(), 1),
        )
        model.save(run_dir / "model")
        from safetensors.numpy import save_file

        with atomic_path(run_dir / "predictions.safetensors") as tmp:
            save_file(
                {
                    "scores": pred.image_scores,
                    "labels": pred.labels.astype(np.int64),
                    "maps": pred.anomaly_maps.astype(np.float16),
                },
                str(tmp),
            )
        write_text(run_dir / "ids.txt", "\n".join(pred.ids) + "\n")
        write_json(run_dir / "metrics.json", json_metrics(metrics))
        write_json(run_dir / "run.json", {"signature": signature, "settings": s})
        self.log.info(
            "%s: %s",
            s["name"],
            {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)},
        )
        return {
            "name": s["name"],
            "settings": s,
            "metrics": metrics,
            "ids": pred.ids,
            "labels": pred.labels,
            "scores": pred.image_scores,
            "maps": pred.anomaly_maps,
        }

    def fit_model(self, s: dict, train, pool_of=None):
        """A model with run settings ``s`` fitted on ``train``; synthetic defects come from a pool
        made from the training samples of ``pool_of`` (default ``train``) only.

        Dual runs that differ only in their scoring rule share one fit (the rule is used at
        predict time only); ``fit_seconds_`` is the time the shared fit took.
        """
        pool = pool_of if pool_of is not None and s["augment"] else train
        key = json.dumps(
            [{k: v for k, v in s.items() if k not in ("name", "rule")}, train.fingerprint(),
             pool.fingerprint()], sort_keys=True, default=str,
        )  # fmt: skip
        fitted = self.__dict__.setdefault("_fitted", {})
        if s["bank"] == "dual" and key in fitted:
            model = copy.copy(fitted[key])
            model.rule = s["rule"]
            return model
        t0 = time.perf_counter()
        model = self._fit_new(s, train, pool_of)
        model.fit_seconds_ = time.perf_counter() - t0
        if s["bank"] == "dual":
            fitted[key] = model
        return model

    def _fit_new(self, s: dict, train, pool_of=None):
        size = tuple(s["image_size"])
        common = dict(
            backbone=s["backbone"],
            image_size=size,
            coreset_ratio=s["normal_coreset"],
            coreset_min=s["coreset_min"],
            reweight=s["reweight"],
            num_neighbors=s["num_neighbors"],
            reweight_neighbors=s["reweight_neighbors"],
            normalization=s["normalization"],
            weights=s["weights"],
            seed=s["seed"],
            coreset_method=s["coreset_method"],
            knn=s["knn"],
            max_memory=s["max_memory"],
            cache_dir=self._cache(),
            progress=self.progress or False,
        )
        from . import DualPatchCore, PatchCore

        if s["bank"] == "single":
            return PatchCore(**common).fit(train.normal())
        defects = defect_inputs(train, s["defects"], size, s["augmented"], s.get("crops"))
        if s["augment"]:
            pool = self.augment(s["augment"], pool_of if pool_of is not None else train)
            synthetic = synthetic_defects([pool], s["defects"], size, s["augment"].get("n", 40))
            if not synthetic:  # never report a run as augmented that added nothing
                raise ConfigError(f"{pool}: gave no synthetic defects for run {s['name']!r}")
            defects += synthetic
        model = DualPatchCore(**common, defect_coreset=s["defect_coreset"], rule=s["rule"],
                              defect_feature_augment=s.get("defect_feature_augment"))  # fmt: skip
        return model.fit(train.normal(), defects)

    def _load_finished(self, run_dir: Path, name: str) -> dict:
        from safetensors.numpy import load_file

        t = load_file(str(run_dir / "predictions.safetensors"))
        return {
            "name": name,
            "settings": json.loads((run_dir / "run.json").read_text())["settings"],
            "metrics": from_json(json.loads((run_dir / "metrics.json").read_text())),
            "ids": (run_dir / "ids.txt").read_text().split("\n")[:-1],
            "labels": t["labels"],
            "scores": t["scores"],
            "maps": t["maps"].astype(np.float32),
        }

    def _cache(self) -> str | None:
        """The feature cache folder; None (no cache) for ``cache: ""``."""
        from .defaults import default_cache

        cache = self.config["cache"]
        if cache is None:
            cache = default_cache()
        return str(cache) if cache else None

    def augment(self, spec: dict, train) -> Path:
        """Generate (once per training set) a pool of synthetic defects from ``train`` only; runs
        take its first ``n`` images.

        Runs that differ only in ``n`` share one pool (and one trained model), sized for the
        largest ``n`` asked for, so an ablation over N compares nested sets of the same images.
        The pool is keyed by the training set's fingerprint, so no fold or split reuses another's.
        """
        from . import augment

        def key(a: dict) -> tuple:
            return tuple(sorted((k, v) for k, v in a.items() if k != "n"))

        c = self.config
        n = max(
            (
                r["augment"].get("n", 40)
                for r in c["runs"]
                if r.get("augment") and key(r["augment"]) == key(spec)
            ),
            default=spec.get("n", 40),
        )
        tag = "-".join(f"{k}{v}" for k, v in key(spec) if k != "method")
        tag = _slug(tag) if tag else ""  # augment.weights is a path: no "/" in a folder name
        folder = (
            self.out
            / "augment"
            / f"{spec['method']}-{tag or 'default'}-n{n}-train{train.fingerprint()[:10]}"
        )
        if (folder / "manifest.csv").exists():
            return folder
        self.log.info("augment: %s, %d images into %s", spec["method"], n, folder)
        augment.generate(
            spec["method"],
            dataset=c["dataset"],
            data=c["data"],
            out=folder,
            n=n,
            train=train,
            **{k: v for k, v in spec.items() if k not in ("method", "n")},
        )
        return folder


def _slug(name: str) -> str:
    from .report import slug

    return slug(name)


def _seed_layout(results: list[dict]) -> dict:
    """The reference script's results.npy dict: standard/dual PatchCore image and pixel AUROC."""
    out: dict[str, dict[str, float]] = {}
    for r in results:
        s = r["settings"]
        if s["bank"] == "single":
            key = "standard_patchcore"
        elif s["augment"] or s["augmented"]:
            key = "dual_patchcore_augmented"
        else:
            key = "dual_patchcore"
        key = key if key not in out else f"{key}:{r['name']}"
        out[key] = {
            "image_auc": r["metrics"]["image_auroc"],
            "pixel_auc": r["metrics"]["pixel_auroc"],
        }
        if s["bank"] == "dual":  # which rule produced the figures (the reference had one)
            out[key]["rule"] = s["rule"]
    return out


def _npy_bytes(obj: dict) -> bytes:
    import io

    buf = io.BytesIO()
    # The reference saved a dict, which numpy can only store pickled: kept for its users' scripts.
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()
