"""``dualpatch predict --ray``: the same outputs as plain ``predict``, scored on Ray Data, plus
``scores.parquet``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer


def predict_ray(
    paths: list[Path],
    model: Path,
    out: Path,
    weights: Path | None,
    address: str,
    actors: int,
    writers: tuple[Callable, Callable, Callable],
) -> None:
    """``writers``: plain predict's (unique map names, map to uint8, scores CSV) helpers, passed
    in by ``cli`` (importing them here would make an import cycle)."""
    _unique_names, to_uint8, scores_csv = writers
    from .distributed import expand_inputs, score_with_ray
    from .fileio import atomic_path, write_image, write_text

    files = expand_inputs(paths)
    scores, maps = score_with_ray(
        model, files, address, actors, weights=str(weights) if weights else None
    )
    for name, amap in zip(_unique_names(files), maps, strict=True):
        write_image(out / "maps" / f"{name}.png", to_uint8(amap, maps))
    write_text(out / "scores.csv", scores_csv([str(f) for f in files], scores, None))
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"image": [str(f) for f in files], "score": scores})
    with atomic_path(out / "scores.parquet") as tmp:
        pq.write_table(table, tmp)
    typer.echo(f"scored {len(files)} images on Ray: {out / 'scores.csv'}, maps in {out / 'maps'}")
