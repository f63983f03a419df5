"""``dualpatch model ...``: teach a fitted model from the line and manage its versions
(docs/online.md): ``add-normal``, ``add-defects``, ``history``, ``rollback``, ``prune``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dualpatch.cli.common import command_group, reporting

app = command_group(help="Teach a fitted model from the line; list, roll back and prune versions.")

MODEL_DIR = typer.Argument(..., help="Model folder written by fit.")
IMAGES = typer.Argument(..., help="Image files or folders of images.")
BY = typer.Option(None, "--by", help="Who made the change (default: the login name).")
HELD_OUT = typer.Option(
    None,
    "--held-out",
    help="Held-out normal images (files or folders) to re-check the threshold on; recorded and "
    "re-used by later updates.",
)


def _files(paths: list[Path] | None) -> list[Path] | None:
    """The image files named by ``paths`` (files, or folders of images); None for none."""
    from dualpatch.data.images import list_images
    from dualpatch.errors import DataError

    if not paths:
        return None
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: file not found")
        found = list_images(p) if p.is_dir() else [p]
        if not found:
            raise DataError(f"{p}: folder holds no images")
        files += found
    return files


def _report(number: int, update) -> None:  # noqa: ANN001  (an online.Update)
    rows = f"{update.bank} bank {update.rows_before} -> {update.rows_after} rows"
    typer.echo(f"version {number}: added {len(update.added)} image(s), {rows}")
    check = update.threshold
    if check.get("checked"):
        moved = "moved" if check["moved"] else "did not move"
        typer.echo(
            f"threshold {moved}: {check['before']:.6g} -> {check['after']:.6g} "
            f"(re-checked on {check['held_out']} held-out normal images)"
        )
    else:
        typer.echo(f"threshold: {check['reason']}")


@app.command("add-normal")
def add_normal(
    model: Path = MODEL_DIR,
    images: list[Path] = IMAGES,
    force: bool = typer.Option(
        False, "--force", help="Add images the guard refuses (scored far above the threshold)."
    ),
    held_out: list[Path] | None = HELD_OUT,
    by: str | None = BY,
) -> None:
    """Add confirmed-good images (false alarms) to the normal bank, as a new version."""
    from dualpatch.models.online import update_folder

    with reporting():
        number, update = update_folder(
            model, "normal", _files(images), force=force, held_out=_files(held_out), by=by
        )
    _report(number, update)


@app.command("add-defects")
def add_defects(
    model: Path = MODEL_DIR,
    images: list[Path] = IMAGES,
    mask: list[Path] | None = typer.Option(
        None,
        "--mask",
        help="A mask per image, in the same order (none: each image's patches above the "
        "normal bank's novelty level).",
    ),
    held_out: list[Path] | None = HELD_OUT,
    by: str | None = BY,
) -> None:
    """Add confirmed defects to the defect bank of a dual model, as a new version."""
    from dualpatch.models.online import update_folder

    with reporting():
        number, update = update_folder(
            model, "defect", _files(images), masks=mask or None, held_out=_files(held_out), by=by
        )
    _report(number, update)


@app.command()
def history(
    model: Path = MODEL_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print the version records as JSON."),
) -> None:
    """List the model's versions: what each added, when, by whom; * marks the current one."""
    from dualpatch.models.versions import history as read_history

    records = read_history(model)
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    if not records:
        typer.echo(f"{model}: no versions (as fit wrote it)")
        return
    for r in records:
        mark = "*" if r["current"] else " "
        what = ", ".join(Path(a["file"]).name for a in r.get("added") or [])
        if r.get("restores"):
            what = f"restores version {r['restores']}"
        typer.echo(
            f"{mark} {r['version']:>4}  {r.get('created') or '?':25}  {r.get('by') or '-':12}  "
            f"{r['action']:12}  {what}"
        )


@app.command()
def rollback(
    model: Path = MODEL_DIR,
    to: int = typer.Option(..., "--to", help="The version to restore."),
    by: str | None = BY,
) -> None:
    """Make an earlier version current again (recorded as a new version; nothing is deleted)."""
    from dualpatch.models.versions import rollback as restore

    number = restore(model, to, by)
    typer.echo(f"version {number}: restores version {to}")


@app.command()
def prune(
    model: Path = MODEL_DIR,
    keep: int = typer.Option(..., "--keep", help="How many of the newest versions to keep."),
) -> None:
    """Delete old versions: all but the newest KEEP (the current one is always kept)."""
    from dualpatch.models.versions import prune as remove

    gone = remove(model, keep)
    typer.echo(f"deleted {len(gone)} version(s){': ' if gone else ''}{', '.join(map(str, gone))}")
