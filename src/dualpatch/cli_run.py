"""``dualpatch run`` (an experiment matrix into one results folder) and ``dualpatch demo``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from .cli_common import FORCE, ON_DUPLICATES_HELP, OnDuplicates, command_group, fail, print_metrics

# no name: the commands join the top level (registered in cli.py)
app = command_group()


@app.command()
def run(
    config: Path | None = typer.Option(None, help="Experiment YAML (see configs/)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: key=value (repeatable)."
    ),
    out: Path | None = typer.Option(None, help="Results folder (same as --set out=DIR)."),
    force: bool = FORCE,
    check: bool = typer.Option(
        False, "--check", help="Validate the config and the results folder, then stop."
    ),
    folds: int | None = typer.Option(None, help="K-fold cross-validation (--set folds=K)."),
    seeds: str | None = typer.Option(None, help="Seeds to repeat every run with, e.g. 0,1,2."),
    on_duplicates: OnDuplicates | None = typer.Option(None, help=ON_DUPLICATES_HELP),
    defect_shots: str | None = typer.Option(
        None, help="Few real defects: n per dual run, e.g. 1,2,5,10,all (--set defect_shots=[..])."
    ),
    defect_draws: int | None = typer.Option(None, help="Random draws per n (default 3)."),
) -> None:
    """Run an experiment matrix (single / dual / dual + augmentation) into one results folder."""
    from .experiment import Experiment, load_config
    from .fileio import MARKER

    overrides = list(set_) + ([f"out={out}"] if out else [])
    overrides += [f"folds={folds}"] if folds is not None else []
    overrides += [f"seeds=[{seeds}]"] if seeds else []
    overrides += [f"on_duplicates={on_duplicates.value}"] if on_duplicates else []
    overrides += [f"defect_shots=[{defect_shots}]"] if defect_shots else []
    overrides += [f"defect_draws={defect_draws}"] if defect_draws is not None else []
    cfg = load_config(config, overrides)
    results = Path(cfg["out"])
    if config is not None and Path(config).resolve() == (results / "config.yaml").resolve():
        if not (results / MARKER).is_file():  # the user's own config, not one a run wrote
            fail(f"{config}: the results folder would overwrite this config; choose another --out")
    Experiment(cfg, force=force).check_output()
    if check:
        typer.echo(f"config ok: {len(cfg['runs'])} run(s) into {results}")
        return
    run_config(cfg, force)


def run_config(cfg: dict, force: bool = False) -> Path:
    """Run ``cfg`` with a rich progress display and a plain log file in its folder."""
    import logging

    from .cli_progress import rendering
    from .experiment import Experiment

    out_dir = Path(cfg["out"])
    log = logging.getLogger("dualpatch.experiment")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    # delay: the log (and its folder, made by Experiment.run once the data opened) appears with
    # its first line, so a run refused up front leaves nothing behind
    handler = logging.FileHandler(out_dir / "run.log", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    # the runs and their stages come as events (dualpatch.events): nobody parses the log
    try:
        with rendering(always=True):
            report = Experiment(cfg, log=log, force=force).run()
    finally:  # the logger is global: leave no handler behind for a later run in this process
        for h in list(log.handlers):
            log.removeHandler(h)
            h.close()
    metrics = json.loads((out_dir / "metrics.json").read_text())  # null: undefined, n/a
    metrics.pop("fewshot", None)  # defect_shots: the advice per n, shown in report.html
    names = [r["name"] for r in cfg["runs"]]
    print_metrics(metrics if cfg["defect_shots"] else {n: metrics[n] for n in names})
    typer.echo(f"results: {out_dir}/  (metrics.json, metrics.csv, runs/, run.log)")
    typer.echo(f"report:  {report}")
    return report


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Results folder."),
) -> None:
    """Single vs dual on the built-in synthetic set, or on KolektorSDD if DUALPATCH_DATA is set."""
    from .experiment import load_config

    data = os.environ.get("DUALPATCH_DATA")
    runs = [
        {"name": "single", "bank": "single"},
        {"name": "dual", "bank": "dual"},  # the default rule (defaults.DUAL_RULE: patch)
        {"name": "dual-weighted-rule", "bank": "dual", "rule": "weighted"},
        {"name": "dual-seed-rule", "bank": "dual", "rule": "seed"},
    ]
    try:
        from .augment import generate  # noqa: F401

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
    cfg = load_config(None, overrides + [f"out={out}"])
    cfg["runs"] = runs
    run_config(cfg)
