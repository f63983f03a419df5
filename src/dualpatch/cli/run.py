"""``dualpatch run`` (an experiment matrix into one results folder) and ``dualpatch demo``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import typer

from dualpatch import spec as run_spec
from dualpatch.cli.common import FORCE, command_group, fail, print_metrics
from dualpatch.cli.spec import as_overrides, spec_options

# no name: the commands join the top level (registered in cli.py)
app = command_group()

#: the run spec's settings that ``run`` takes as options: every top-level key of a config and
#: every default the runs share (not the per-run bank or augmented, not the runs themselves)
RUN_SETTINGS = tuple(n for n in run_spec.TOP_KEYS if run_spec.SETTINGS[n].cli)


def _panel(name: str) -> str:
    """The ``run --help`` section of setting ``name``."""
    if run_spec.SETTINGS[name].scope == "top":
        return "Experiment settings (override the config's, as --set KEY=VALUE does)"
    return "Settings of every run (override the config's top-level defaults)"


@app.command()
@spec_options(*RUN_SETTINGS, given_only=True, panel=_panel)
def run(
    config: Path | None = typer.Option(None, help="Experiment YAML (see configs/)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: key=value (repeatable)."
    ),
    spec: dict | None = None,
    force: bool = FORCE,
    check: bool = typer.Option(
        False, "--check", help="Validate the config and the results folder, then stop."
    ),
    flags: dict | None = None,
) -> None:
    """Run an experiment matrix (single / dual / dual + augmentation) into one results folder."""
    from dualpatch.experiment.config import load_config
    from dualpatch.experiment.runner import Experiment
    from dualpatch.fileio import MARKER

    assert spec is not None  # given by spec_options: the settings given as options
    cfg = load_config(config, [*set_, *as_overrides(spec)])  # the options win over --set
    results = Path(cfg["out"])
    if config is not None and Path(config).resolve() == (results / "config.yaml").resolve():
        if not (results / MARKER).is_file():  # the user's own config, not one a run wrote
            fail(f"{config}: the results folder would overwrite this config; choose another --out")
    Experiment(cfg, force=force).check_output()
    if check:
        typer.echo(f"config ok: {len(cfg['runs'])} run(s) into {results}")
        return
    run_config(cfg, force)


@contextlib.contextmanager
def _run_log(out_dir: Path) -> Iterator[logging.Logger]:
    """The experiment's logger, writing to ``out_dir/run.log`` while the run lasts."""
    log = logging.getLogger("dualpatch.experiment.runner")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    # delay: the log (and its folder, made by Experiment.run once the data opened) appears with
    # its first line, so a run refused up front leaves nothing behind
    handler = logging.FileHandler(out_dir / "run.log", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    try:
        yield log
    finally:  # the logger is global: leave no handler behind for a later run in this process
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()


def run_config(cfg: dict, force: bool = False) -> Path:
    """Run ``cfg`` with a rich progress display and a plain log file in its folder."""
    from dualpatch.cli.common import WarningDigest
    from dualpatch.cli.progress import rendering
    from dualpatch.experiment.runner import Experiment

    out_dir = Path(cfg["out"])
    # the runs and their stages come as events (dualpatch.events): nobody parses the log; the
    # 30-second stage lines go to stderr (when it is a log) and to run.log; repeated warnings
    # are shown once and a library's are summed up (WarningDigest)
    with _run_log(out_dir) as log, WarningDigest(log).active(), rendering(True, log):
        report = Experiment(cfg, log=log, force=force).run()
    metrics = json.loads((out_dir / "metrics.json").read_text())  # null: undefined, n/a
    metrics.pop("fewshot", None)  # defect_shots: the advice per n, shown in report.html
    names = [r["name"] for r in cfg["runs"]]
    print_metrics(metrics if cfg["defect_shots"] else {n: metrics[n] for n in names})
    typer.echo(f"results: {out_dir}/  (metrics.json, metrics.csv, runs/, run.log)")
    typer.echo(f"report:  {report}")
    return report


@app.command()
@spec_options("out", defaults={"out": "runs/demo"})
def demo(spec: run_spec.ExperimentSpec | None = None, flags: dict | None = None) -> None:
    """Single vs dual on the built-in synthetic set, or on KolektorSDD if DUALPATCH_DATA is set."""
    from dualpatch.experiment.config import load_config

    data = os.environ.get("DUALPATCH_DATA")
    runs = [
        {"name": "single", "bank": "single"},
        {"name": "dual", "bank": "dual"},  # the default rule (defaults.DUAL_RULE: guarded)
        {"name": "dual-weighted-rule", "bank": "dual", "rule": "weighted"},
        {"name": "dual-seed-rule", "bank": "dual", "rule": "seed"},
    ]
    try:
        from dualpatch.augment import generate  # noqa: F401

        runs.append({"name": "dual+paste", "bank": "dual", "augment": {"method": "paste", "n": 40}})
    except ImportError:
        pass
    if data:
        typer.echo(f"demo data: KolektorSDD at {data} (DUALPATCH_DATA), default split, 320x128")
        overrides = ["dataset=kolektorsdd", f"data={data}", "name=demo-kolektorsdd"]
    else:
        typer.echo(
            "demo data: built-in synthetic striped surfaces in KSDD2 layout (runs/demo-data)"
        )
        overrides = ["dataset=demo", "data=runs/demo-data", "name=demo-synthetic"]
    assert spec is not None  # given by spec_options
    cfg = load_config(None, overrides + as_overrides({"out": spec.out}))
    cfg["runs"] = runs
    run_config(cfg)
