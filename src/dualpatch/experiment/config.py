"""The experiment config: its keys and defaults, ``key=value`` overrides, and validation.

A config names a dataset, shared defaults and a list of runs (single, dual, dual + augmentation,
dual scoring rules); ``load_config`` reads one over ``DEFAULTS`` and checks every value before any
work starts. ``dualpatch.experiment.runner`` runs it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from dualpatch import spec
from dualpatch.errors import ConfigError

#: every top-level key at its default (the run spec's, ``dualpatch.spec``)
DEFAULTS: dict[str, Any] = spec.defaults()
#: keys a run may set for itself, overriding the experiment-wide value
RUN_KEYS = spec.RUN_KEYS
AUGMENT_KEYS = spec.AUGMENT_KEYS


# -------------------------------------------------------------------------------- config
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(config: dict, assignment: str, renamed: list | None = None) -> None:
    """Apply ``key=value`` (dotted keys reach into runs: ``runs.0.rule=seed``); an old key name
    is added to ``renamed`` (warned about at once without it)."""
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
    elif node is config and last in spec.ALIASES:  # an old name: checked as written, renamed
        parsed = _parse_value(value)
        spec.check_value("", last, parsed)
        _renamed([(last, spec.ALIASES[last])], renamed)
        config[spec.ALIASES[last]] = parsed
    elif node is config and last not in DEFAULTS:
        raise ConfigError(f"--set {assignment!r}: unknown config key {last!r}")
    else:
        node[last] = _parse_value(value)


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] = ()) -> dict[str, Any]:
    """Read a YAML config over the defaults, apply ``key=value`` overrides, validate it."""
    config = copy.deepcopy(DEFAULTS)
    renamed: list[tuple[str, str]] = []  # old names used: one warning each, at the end
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
        unknown = {str(k) for k in loaded} - set(DEFAULTS) - set(spec.ALIASES)
        if unknown or not all(isinstance(k, str) for k in loaded):
            raise ConfigError(f"{path}: unknown config key(s) {', '.join(sorted(unknown))}")
        for key in loaded.keys() & spec.ALIASES.keys():  # checked under the name the user wrote
            spec.check_value("", key, loaded[key])
        renamed += spec.canonical_keys(loaded, "")
        config.update(loaded)
    for assignment in overrides:
        apply_override(config, assignment, renamed)
    validate(config, renamed)
    spec.warn_renamed(renamed)
    return config


def validate(config: dict[str, Any], renamed: list | None = None) -> dict[str, Any]:
    """Check every value and run of ``config``; old key names are renamed, and added to
    ``renamed`` (warned about here without it)."""
    runs = config.get("runs")
    if not isinstance(runs, list) or not runs:  # before anything iterates it (--set runs=true)
        raise ConfigError("config: 'runs' must be a non-empty list")
    for node in [config, *(r for r in runs if isinstance(r, dict))]:
        _expand_shorthands(node)
    spec.check_values("", config)
    runs = config["runs"]
    if not isinstance(runs, list) or not runs:
        raise ConfigError("config: 'runs' must be a non-empty list")
    names, old_names = set(), []
    for i, run in enumerate(runs):
        old_names += _check_run(config, i, run)
        run.setdefault("name", run["bank"] if i == 0 else f"{run['bank']}{i}")
        if run["name"] in names:
            raise ConfigError(f"config: run name {run['name']!r} appears twice")
        names.add(run["name"])
    _renamed(old_names, renamed)
    return config


def _expand_shorthands(node: dict[str, Any]) -> None:
    """The one-value forms of list settings, in place: ``--set crops=DIR`` (one folder),
    ``--set defect_shots=5`` (one n)."""
    if isinstance(node.get("crops"), str):
        node["crops"] = [node["crops"]]
    if "defect_shots" in node:
        from dualpatch.data.fewshot import normalise_shots

        node["defect_shots"] = normalise_shots(node["defect_shots"])


def _check_run(config: dict[str, Any], i: int, run: Any) -> list[tuple[str, str]]:
    """ConfigError unless ``runs[i]`` is a usable run; returns the (old, new) names it used."""
    if not isinstance(run, dict) or "bank" not in run:
        raise ConfigError(f"config: runs[{i}] needs at least a 'bank' (single or dual)")
    unknown = {str(k) for k in run} - RUN_KEYS - spec.RUN_ALIASES - spec.FEWSHOT_RUN_KEYS
    if spec.FEWSHOT_RUN_KEYS & set(run) and not config["defect_shots"]:
        raise ConfigError(f"config: runs[{i}] sets defect_shots/defect_draws, but the "
                          "experiment has no defect_shots")  # fmt: skip
    if unknown:
        raise ConfigError(f"config: runs[{i}] has unknown key(s) {', '.join(sorted(unknown))}")
    if run["bank"] not in spec.BANKS:
        raise ConfigError(f"config: runs[{i}].bank is {run['bank']!r}, not single or dual")
    old_names = spec.check_values(f"runs[{i}].", run)
    if run["bank"] == "single" and (run.get("augment") or run.get("augmented")):
        raise ConfigError(f"config: runs[{i}] adds synthetic defects to a single-bank run")
    if run["bank"] == "single" and run.get("defect_feature_augment"):
        raise ConfigError(f"config: runs[{i}] gives defect_feature_augment to a single bank")
    if run["bank"] == "single" and run.get("crops"):
        raise ConfigError(f"config: runs[{i}] gives crops (a defect bank) to a single-bank run")
    if run.get("augment") is not None:
        _check_augment(i, run["augment"])
    if run["bank"] == "dual" and resolve_run(config, run)["reweight"]:
        raise ConfigError(
            f"config: runs[{i}] is a dual run with reweight: true; re-weighting applies to "
            "single-bank runs only (set reweight in those runs)"
        )
    return old_names


def _check_augment(i: int, aug: Any) -> None:
    """ConfigError unless ``runs[i].augment`` names a method and only known keys."""
    methods = spec.augment_methods()
    if not isinstance(aug, dict) or aug.get("method") not in methods:
        raise ConfigError(
            f"config: runs[{i}].augment.method must be {', '.join(methods[:-1])} or {methods[-1]}"
        )
    extra = {str(k) for k in aug} - AUGMENT_KEYS
    if extra:
        raise ConfigError(
            f"config: runs[{i}].augment has unknown key(s) {', '.join(sorted(extra))}"
        )


def _renamed(pairs: list[tuple[str, str]], into: list | None) -> None:
    """Collect the (old, new) names ``into`` a caller's list, or warn now if there is none."""
    if into is None:
        spec.warn_renamed(pairs)
    else:
        into.extend(pairs)


def resolve_run(config: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A run's full settings: experiment-wide values overridden by the run's own."""
    shared = {k: config[k] for k in RUN_KEYS & set(DEFAULTS)}
    settings = {**shared, "augment": None, "augmented": [], **run}
    if not settings.get("crops") or settings["bank"] == "single":
        settings.pop("crops", None)  # runs without crops keep their signatures from before
    return settings
