"""The experiment matrix: one config in, one reproducible results folder out.

``Experiment.run`` runs every configured run (single, dual, dual + augmentation, dual scoring
rules) on every split or fold x seed. Finished runs are skipped when rerun; features are cached per
image, so a rerun or a resumed run extracts nothing twice. The config (keys, defaults, validation)
is ``experiment.config``, the defect-bank inputs ``experiment.inputs``, a run's files
``experiment.outputs``, the loop over splits and the summary ``experiment.crossval``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.environment import environment, rss_mb
from dualpatch.experiment.config import resolve_run
from dualpatch.experiment.outputs import (
    finished_before,
    load_finished,
    npy_bytes,
    run_signature,
    seed_layout,
    write_run,
)

__all__ = ["COMMAND", "LEGACY", "Experiment"]

#: the marker name of run folders; folders written before markers hold these three
COMMAND = "run"
LEGACY = ("config.yaml", "environment.json", "dataset.json")


# -------------------------------------------------------------------------------- running
class Experiment:
    """Runs every configured run into ``out/runs/<name>/`` and writes the comparison report."""

    def __init__(
        self, config: dict[str, Any], progress: Callable | None = None, log=None, force=False
    ):
        self.config = config
        self.out = Path(config["out"])
        self.progress = progress
        self.log = log or logging.getLogger("dualpatch.experiment.runner")
        self.force = force
        #: fitted dual models by settings but the rule and training split (``fit_model``)
        self._fitted: dict[str, Any] = {}

    def check_output(self) -> None:
        """Refuse an ``out`` that holds what ``dualpatch run`` did not write, unless ``force``."""
        from dualpatch.fileio import check_output_dir

        check_output_dir(self.out, COMMAND, self.force, [self.config["data"]], legacy=LEGACY)

    def _train_items(self):
        from dualpatch.limits import parse_items

        items = self.config["train_items"]
        return parse_items(str(items)) if isinstance(items, str | int) else items

    def run(self) -> Path:
        """Every run on every split (or fold) x seed; metrics, comparisons and the report."""
        from dualpatch.experiment.crossval import finish, prepare, run_matrix
        from dualpatch.fileio import mark_output, write_bytes, write_json

        self.check_output()
        self.config["train_items"] = self._train_items()
        # the splits open the data before any output: a bad --data leaves no folder behind
        splits, info = prepare(self)
        mark_output(self.out, COMMAND)
        write_json(self.out / "environment.json", environment())
        runs = [resolve_run(self.config, run) for run in self.config["runs"]]
        if self.config["defect_shots"]:  # n real defects per dual run: its own loop and summary
            from dualpatch.experiment.fewshot_runner import finish_fewshot, run_fewshot

            return finish_fewshot(self, *run_fewshot(self, runs, splits), info)
        from dualpatch.bank.query_memo import remembered_queries

        # runs that share a fit (dual runs that differ only in their rule, a single run beside a
        # dual one) search its banks with the same patches: searched once, as in few-shot runs
        with remembered_queries():
            results, boots = run_matrix(self, runs, splits)
        write_bytes(self.out / "results.npy", npy_bytes(seed_layout(results)))
        return finish(self, results, boots, info)

    def run_one(self, s: dict, train, test, dataset_info, run_dir: Path | None = None) -> dict:
        """Fit, threshold, score and save one run (settings ``s``) into ``run_dir``; a run that
        finished before with the same signature is read back instead."""
        from dualpatch.experiment.protocol import f1_at
        from dualpatch.metrics.evaluation import evaluate, native_pixel_metrics
        from dualpatch.report.data import slug

        run_dir = run_dir or self.out / "runs" / slug(s["name"])
        native = bool(self.config["native_pixel_metrics"])
        signature = run_signature(s, dataset_info, self.config["threshold"], native)
        if finished_before(run_dir, signature):
            self.log.info("%s: finished before, skipped", s["name"])
            return {**load_finished(run_dir, s["name"]), "skipped": True}
        model = self.fit_model(s, train)
        fit_s = model.fit_seconds_
        threshold = self.threshold(s, train)
        t1 = time.perf_counter()
        pred = model.predict(test)
        test_s = time.perf_counter() - t1
        masks = np.stack([smp.mask(tuple(s["image_size"])) for smp in test])
        known = np.array([smp.mask_known for smp in test])
        metrics = evaluate(pred.labels, pred.image_scores, masks, pred.anomaly_maps, known)
        if native:  # the map upsampled to each image's own size, against the mask as annotated
            by_id = {smp.id: smp for smp in test}
            scored = [(by_id[i], m) for i, m in zip(pred.ids, pred.anomaly_maps, strict=True)]
            scored = [(smp, m) for smp, m in scored if smp.mask_known]  # no mask: no pixel figure
            metrics.update(
                native_pixel_metrics([smp for smp, _ in scored], np.array([m for _, m in scored]))
            )
        metrics.update(
            threshold=threshold["threshold"],
            threshold_rule=threshold["rule"],
            f1_at_threshold=f1_at(pred.labels, pred.image_scores, threshold["threshold"]),
            fit_seconds=round(fit_s, 2),
            images_per_second=round(len(test) / test_s, 2),
            peak_rss_mb=round(rss_mb(), 1),
        )
        write_run(run_dir, model, pred, metrics, signature, s)
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

    def threshold(self, s: dict, train) -> dict:
        """The decision threshold of run ``s``: from a validation split of the training data,
        never the test set (``threshold: none``: no threshold, the oracle one is shown)."""
        from dualpatch.experiment.protocol import validation_threshold

        if self.config["threshold"] != "validation":
            return {"threshold": float("nan"), "rule": "none (oracle threshold shown)"}

        def fit_predict(inner, validation):
            # the validation fit's synthetic pool is made from ``inner`` only: a pool made from
            # all of ``train`` would carry validation defects into the bank that sets the threshold
            return validation.labels, self.fit_model(s, inner).predict(validation).image_scores

        return validation_threshold(fit_predict, train, s["seed"])

    def fit_model(self, s: dict, train):
        """A model with run settings ``s`` fitted on ``train``; synthetic defects come from a pool
        made from the samples of ``train`` only.

        Dual runs that differ only in their scoring rule share one fit (the rule is used at
        predict time only); ``fit_seconds_`` is the time the shared fit took.
        """
        key = json.dumps(
            [{k: v for k, v in s.items() if k not in ("name", "rule")}, train.fingerprint()],
            sort_keys=True,
            default=str,
        )
        fitted = self._fitted
        if s["bank"] == "dual" and key in fitted:
            model = copy.copy(fitted[key])
            model.rule = s["rule"]
            return model
        t0 = time.perf_counter()
        model = self._fit_new(s, train)
        model.fit_seconds_ = time.perf_counter() - t0
        if s["bank"] == "dual":
            fitted[key] = model
        return model

    def _fit_new(self, s: dict, train):
        from dualpatch.experiment.build import build_model
        from dualpatch.spec import RunSpec

        # the estimators' progress reaches the subscribed display through dualpatch.events
        progress = True if self.progress is None else self.progress
        pool = self.augment(s["augment"], train) if s["bank"] == "dual" and s["augment"] else None
        spec = RunSpec.of(s)
        return build_model(spec, train, cache_dir=self._cache(), progress=progress, pool=pool)

    def forget_fits(self) -> None:
        """Drop the fits kept for runs that differ only in their rule (``fit_model``): for
        callers that never ask for a model again (one per few-shot draw)."""
        self._fitted.clear()

    def _cache(self) -> str | None:
        """The feature cache folder; None (no cache) for ``cache_dir: ""``."""
        from dualpatch.defaults import default_cache

        cache = self.config["cache_dir"]
        if cache is None:
            cache = default_cache()
        return str(cache) if cache else None

    def augment(self, spec: dict, train) -> Path:
        """Generate (once per training set) a pool of synthetic defects from ``train`` only; runs
        take its first ``n`` images.

        Runs that differ only in ``n`` share one pool (and one trained model), sized for the
        largest ``n`` asked for, so an ablation over N compares nested sets of the same images.
        The pool is keyed by the training set's fingerprint, so no fold or split reuses another's,
        and by the generator's recipe version (``augment.RECIPES``), so no pool made by an older
        recipe is taken for the current one's.
        """
        from dualpatch import augment
        from dualpatch.report.data import slug

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
        tag = slug(tag) if tag else ""  # augment.weights is a path: no "/" in a folder name
        recipe = f"r{augment.recipe(spec)}"
        name = f"{spec['method']}-{recipe}-{tag or 'default'}-n{n}-train{train.fingerprint()[:10]}"
        folder = self.out / "augment" / name
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
