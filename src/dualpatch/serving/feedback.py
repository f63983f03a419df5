"""``POST /v1/feedback``: the line teaches the served model (docs/online.md).

    POST /v1/feedback?label=good|defect[&force=true]
        an image (raw body, or multipart field "image"; multipart may add a "mask" file for a
        defect) -> JSON: the new model version, what was added, the bank sizes, the threshold
        check; the next /v1/inspect is scored by the new version.

Behind the API key like /v1/inspect. The upload is kept beside the model, content-addressed
(``DIR/feedback/<sha256>.<ext>``), so the version record's file and digest stay checkable. The
update runs on the scoring thread, so it falls between two requests: none is scored by a
half-updated model. The guard's refusal is 409 with its one line and the header
``X-Dualpatch-Refused: guard`` (other 409s, which force would not change, carry none);
``force=true`` is the explicit confirmation that adds the image anyway. Exported runtimes would
keep scoring the old graph, so feedback needs ``--runtime torch``.
"""

# no ``from __future__ import annotations``: FastAPI reads the route's annotations (Request) at
# registration, from names imported inside the function
import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

from dualpatch.errors import ConfigError, DataError
from dualpatch.fileio import write_bytes

LABELS = {"good": "normal", "defect": "defect"}
FOLDER = "feedback"
#: a 409 that ``force=true`` would turn into an addition carries this header (value "guard")
REFUSED_HEADER = "X-Dualpatch-Refused"
#: how ``models.online.add_normal`` starts the guard's refusal
GUARD_REFUSAL = "refused from the normal bank"


def key_id(key: bytes | None) -> str:
    """Who gave the feedback, as recorded in the version: the API key's id (the first 12 hex
    digits of its SHA-256, never the key), or that the server has no key."""
    if key is None:
        return "no API key (open server)"
    return f"api-key:{hashlib.sha256(key).hexdigest()[:12]}"


def keep_upload(model_dir: str, data: bytes, kind: str) -> Path:
    """Write ``data`` to ``DIR/feedback/`` under its SHA-256 (atomically; once per content)."""
    from PIL import Image

    suffix = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}.get(
        Image.open(io.BytesIO(data)).format or "", ".img"
    )
    path = Path(model_dir) / FOLDER / f"{hashlib.sha256(data).hexdigest()}{kind}{suffix}"
    if not path.exists():
        write_bytes(path, data)
    return path


async def _mask_bytes(request: Any) -> bytes | None:
    """The multipart field "mask", if the request has one (its form was read by image_bytes)."""
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        return None
    upload = (await request.form()).get("mask")
    if upload is None or isinstance(upload, str):
        return None
    return await upload.read()


def register_feedback(app: Any, inspector: Any, http: Any) -> None:
    """Add ``POST /v1/feedback`` to the app of ``server.create_app``, which passes itself as
    ``http``: its ``BadRequest``, ``authorise``, ``image_bytes``, ``decode_upload``, ``model_info``.
    """
    from fastapi import Request

    config = inspector.config
    BadRequest = http.BadRequest  # noqa: N806 (the server's exception class)

    def apply(bank: str, image: Path, mask: Path | None, force: bool) -> dict[str, Any]:
        from dualpatch.models.online import update_folder
        from dualpatch.serving.runtime import open_scorer

        try:
            number, update = update_folder(
                config.model_dir, bank, [image], [mask] if mask else None, force,
                by=key_id(inspector.key),
            )  # fmt: skip
        except DataError as exc:
            # the review page offers "add anyway" (force) for the guard's refusal only
            refused = bank == "normal" and not force and str(exc).startswith(GUARD_REFUSAL)
            headers = {REFUSED_HEADER: "guard"} if refused else None
            raise BadRequest(409, str(exc), headers) from None
        except ConfigError as exc:
            raise BadRequest(400, str(exc)) from None
        # on the scoring thread: the next request is scored by the new version
        inspector.scorer = open_scorer(config.model_dir, config.runtime, config.threads)
        info = http.model_info(config.model_dir, config.threshold)
        inspector.info = {**info, "runtime": inspector.scorer.runtime}
        inspector.threshold = info["threshold"]
        inspector.map_reference = (
            info["map_scale"] if info["threshold"] is None else info["threshold"]
        )
        return {"version": number, "model": inspector.info, **update.record()}

    @app.post("/v1/feedback")
    async def feedback(request: Request, label: str | None = None, force: bool = False):
        http.authorise(request, inspector.key)
        if label not in LABELS:
            raise BadRequest(400, f"label={label}: use label=good or label=defect")
        if config.runtime != "torch":
            raise BadRequest(409, f"feedback needs --runtime torch (serving {config.runtime})")
        data = await http.image_bytes(
            request, config.max_body_bytes, config.guard.body_timeout, inspector.arriving
        )
        loop = asyncio.get_running_loop()
        mask_data = await _mask_bytes(request)
        for upload in (data, mask_data):  # a 4xx for a bad image, before anything is written
            if upload is not None:
                await loop.run_in_executor(
                    inspector.decoder, http.decode_upload, upload, inspector.size, inspector.limits
                )
        image = keep_upload(config.model_dir, data, "")
        mask = keep_upload(config.model_dir, mask_data, "_mask") if mask_data else None
        return await loop.run_in_executor(
            inspector.executor, apply, LABELS[label], image, mask, force
        )
