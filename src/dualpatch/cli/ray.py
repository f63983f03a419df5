"""``dualpatch predict --ray``: plain ``predict``'s outputs (``predict_io``: scores.csv, maps/,
provenance.json), scored on Ray Data, plus ``scores.parquet``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer


def ray_option(does: str) -> typer.models.OptionInfo:
    """``--ray``: what the command does on Ray Data (``does``), and where."""
    return typer.Option(
        None,
        "--ray",
        help=f"{does} on Ray Data: local (start Ray here), auto or a cluster ADDRESS.",
    )


RAY_ACTORS = typer.Option(
    1,
    "--ray-actors",
    min=1,
    help="Ray actors, each loading the model (predict) or backbone (fit) once.",
)


def predict_ray(
    paths: list[Path],
    model: Path,
    out: Path,
    weights: Path | None,
    address: str,
    actors: int,
    force: bool = False,
    threshold: tuple[float | None, str] = (None, "none"),
    maps: str = "both",
) -> None:
    """``predict --ray``: plain predict's outputs (scores.csv with verdicts at ``threshold``, its
    source, maps, overlays, index.html), the images scored on Ray."""
    from dualpatch.cli.common import say_threshold
    from dualpatch.cluster.extract import expand_inputs, ray_batches
    from dualpatch.fileio import check_output_dir, output_dir, write_json
    from dualpatch.models import PatchCore
    from dualpatch.serving.predict_io import (
        COMMAND,
        PredictionWriter,
        map_names,
        provenance,
        unique_inputs,
    )

    files = unique_inputs(expand_inputs(paths))
    check_output_dir(out, COMMAND, force, files, legacy=("scores.csv",))
    weights_arg = str(weights) if weights else None
    m = PatchCore.load(model, weights_arg)  # its map scale, and a bad model fails here, once
    cut, source = threshold
    record = provenance(model, command="predict", weights=m.weights, threshold=cut,
                        threshold_source=source, maps=maps)  # fmt: skip
    names = map_names(files)
    scores = np.empty(len(files))
    with output_dir(out, COMMAND, force, inputs=files, legacy=("scores.csv",)) as tmp:
        write_json(tmp / "provenance.json", {**record, "images": len(files), "ray": address})
        with PredictionWriter(tmp, out, getattr(m, "map_scale_", None), cut, maps) as writer:
            # batches arrive in any order: rows are written in input order, as plain predict's
            pending: dict[int, tuple[float, np.ndarray]] = {}
            following = 0
            for index, batch_scores, maps in ray_batches(
                model, files, address, actors, m.batch_size, weights_arg
            ):
                for i, s, amap in zip(index, batch_scores, maps, strict=True):
                    pending[int(i)] = (float(s), amap)
                while following in pending:
                    s, amap = pending.pop(following)
                    writer.write_batch([files[following]], [names[following]], [s], [amap])
                    scores[following] = s
                    following += 1
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"image": [str(f) for f in files], "map": [f"maps/{n}" for n in names],
                          "score": scores})  # fmt: skip
        pq.write_table(table, tmp / "scores.parquet")
        from dualpatch.serving.review import write_review

        write_review(tmp, cut, record)
    say_threshold(cut, source)
    typer.echo(f"scored {len(files)} images on Ray: {out / 'scores.csv'}, maps in {out / 'maps'}")
