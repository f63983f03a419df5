"""``dualpatch export`` (the whole scorer as ONNX or OpenVINO) and ``dualpatch serve`` (HTTP)."""

from __future__ import annotations

import warnings
from enum import StrEnum
from pathlib import Path

import typer

from dualpatch.cli.common import MODEL, WEIGHTS_MORE, command_group, reporting
from dualpatch.cli.spec import spec_options
from dualpatch.spec import ExperimentSpec

app = command_group()


# choices of the options below (a StrEnum's auto values are its lower-case names)
ExportFormat = StrEnum("ExportFormat", ["onnx", "openvino"])
InputFormat = StrEnum("InputFormat", ["uint8", "float"])
Runtime = StrEnum("Runtime", ["torch", "onnx", "openvino"])


def _size_mib(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


@app.command()
@spec_options("weights", more={"weights": WEIGHTS_MORE})
def export(
    model: Path = MODEL,
    format: ExportFormat = typer.Option(ExportFormat.onnx, help="onnx or openvino."),  # noqa: A002
    out: Path | None = typer.Option(
        None, help="File to write (default: MODEL/model.onnx, or MODEL/model.xml + .bin)."
    ),
    input: InputFormat = typer.Option(  # noqa: A002
        InputFormat.uint8,
        help="uint8: (B, H, W, 3) RGB bytes (NHWC); float: (B, 3, H, W) in [0, 1] (NCHW).",
    ),
    spec: ExperimentSpec | None = None,
    flags: dict | None = None,
) -> None:
    """Export the whole scorer (backbone, banks, rule, map, score) as one ONNX/OpenVINO graph."""
    assert spec is not None  # given by spec_options
    with reporting():
        from dualpatch.serving.export import default_export_path, export_model

        target = out or default_export_path(model, format.value)
        path = export_model(model, format.value, target, input.value, spec.weights)
    files = [path] if format == ExportFormat.onnx else [path, path.with_suffix(".bin")]
    folder = [model / "model.safetensors", model / "model.json"]
    typer.echo(
        f"exported {format.value} scorer to {', '.join(map(str, files))}: "
        f"{_size_mib(files):.2f} MiB (model folder {_size_mib(folder):.2f} MiB without the "
        "backbone weights, which the export holds); input images "
        + ("(B, H, W, 3) uint8 RGB" if input == InputFormat.uint8 else "(B, 3, H, W) float [0, 1]")
    )


@app.command()
def serve(
    model: Path = MODEL,
    runtime: Runtime = typer.Option(Runtime.torch, help="torch, onnx or openvino."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads of the scorer."),
    threshold: float | None = typer.Option(
        None, help="Verdict threshold (default: the model's; none stored: verdicts off)."
    ),
    api_key_file: Path | None = typer.Option(
        None, help="File holding the API key clients send (X-API-Key or Bearer; printable ASCII)."
    ),
    max_body_bytes: int = typer.Option(20 * 2**20, min=1, help="Largest request body."),
    max_pixels: int = typer.Option(40_000_000, min=1, help="Largest decoded image (pixels)."),
    max_decode_mib: int = typer.Option(
        512, min=1, help="Largest memory one image may take to decode (from its header)."
    ),
    max_queue: int = typer.Option(16, min=1, help="Requests waiting or scoring before 503."),
    max_connections: int = typer.Option(512, min=1, help="Open connections at once."),
    header_timeout: float = typer.Option(
        5.0, min=0.1, help="Seconds a connection has to send a request's headers."
    ),
    body_timeout: float = typer.Option(
        30.0, min=0.1, help="Seconds a request has to send its body (408 after)."
    ),
) -> None:
    """Serve the model over HTTP: POST /v1/inspect, GET /v1/health, GET /v1/model."""
    with reporting():
        from dualpatch.serving.guard import Guard
        from dualpatch.serving.server import ServeConfig, run

        key = None if api_key_file is None else _api_key(api_key_file)
        if key is None and host not in _LOOPBACK:
            warnings.warn(
                f"--host {host}: reachable from other machines without an API key "
                "(give --api-key-file)",
                stacklevel=1,
            )
        config = ServeConfig(
            str(model),
            runtime.value,
            threads,
            threshold,
            key,
            max_body_bytes,
            max_pixels,
            max_queue,
            max_decode_mib,
            Guard(header_timeout, body_timeout, max_connections),
        )
        # uvicorn stops accepting on SIGTERM/SIGINT, lets requests whose body has arrived finish,
        # and drops clients still sending
        run(config, host, port)


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _api_key(path: Path) -> str:
    """The API key held in ``path`` (its text, stripped), or one error line; a warning when
    others may read the file."""
    from dualpatch.errors import ConfigError

    try:
        key = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read API key ({why})") from exc
    if not key:
        raise ConfigError(f"{path}: API key file is empty")
    if not (key.isascii() and key.isprintable()):
        # HTTP header values are bytes that clients send as typed; only printable ASCII is
        # sent and compared alike by curl, browsers and HTTP libraries
        raise ConfigError(
            f"{path}: API key holds characters other than printable ASCII; "
            "use letters, digits and punctuation (e.g. openssl rand -hex 32)"
        )
    if mode & 0o077:
        warnings.warn(
            f"{path}: the API key file can be read by other users (mode {mode & 0o777:o}); "
            f"chmod 600 {path}",
            stacklevel=1,
        )
    return key
