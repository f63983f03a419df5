"""HTTP inspection service: one fitted model, loaded once, scoring one image per request.

    POST /v1/inspect    an image (raw body with an image content type, or multipart field "image")
                        -> JSON score, verdict, threshold, model id and digest, timings;
                        ?map=png returns the anomaly map as image/png (score in headers),
                        ?map=base64 adds it to the JSON as "map_png_base64"
    GET  /v1/health     liveness and queue depth
    GET  /v1/model      what is being served

Every bad input gets a 4xx and a one-line ``{"error": ...}``: empty, corrupt, unsupported or
too large images (decoded-pixel cap), wrong content types, oversized bodies (``max_body_bytes``).
At most ``max_queue`` requests wait for or hold the scorer; one more gets 503 with Retry-After.
FastAPI is imported only when an app is built.
"""

import asyncio
import base64
import contextlib
import hmac
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

#: content types of a raw image body; multipart/form-data carries the image in field "image"
IMAGE_TYPES = {
    "image/png",
    "image/jpeg",
    "image/bmp",
    "image/x-ms-bmp",
    "image/tiff",
    "application/octet-stream",
}
#: decoded formats accepted (Pillow's names)
IMAGE_FORMATS = {"PNG", "JPEG", "BMP", "TIFF"}
#: test-only: seconds each scoring call sleeps, to make overload and shutdown observable in tests
TEST_DELAY_ENV = "DUALPATCH_SERVE_TEST_DELAY_S"


@dataclass
class ServeConfig:
    """How the service runs; ``threshold`` overrides the model's stored one."""

    model_dir: str
    runtime: str = "torch"
    threads: int | None = None
    threshold: float | None = None
    api_key: str | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_queue: int = 16


class BadRequest(Exception):
    """A client error: ``status`` and a one-line ``reason``."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def model_info(model_dir: str | os.PathLike[str], threshold: float | None) -> dict[str, Any]:
    """What /v1/model reports; refuses a model without a threshold when none is given."""
    from .card import ModelCard

    card = ModelCard.read(model_dir)
    meta_path, meta = card.path, card.data
    chosen = threshold if threshold is not None else meta.get("threshold")
    if chosen is None:
        raise ConfigError(
            f"{meta_path}: the model has no stored threshold (fit it with --threshold-holdout, "
            "or pass --threshold)"
        )
    params = meta.get("params", {})
    return {
        "id": Path(model_dir).resolve().name,
        "digest": meta.get("safetensors_sha256"),
        "class": meta.get("class"),
        "rule": params.get("rule") if meta.get("class") == "DualPatchCore" else None,
        "backbone": params.get("backbone"),
        "image_size": params.get("image_size"),
        "threshold": float(chosen),
        "threshold_source": "--threshold" if threshold is not None else "model.json",
        "threshold_rule": meta.get("threshold_rule"),
    }


def decode_upload(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 at the model's size, or BadRequest with a one-line reason."""
    from PIL import Image, UnidentifiedImageError

    from .data.images import image_to_rgb

    if not data:
        raise BadRequest(400, "empty image (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadRequest(400, "not a readable image (unknown format or corrupt)") from None
    except Image.DecompressionBombError:  # Pillow's own cap, far above --max-pixels by default
        raise BadRequest(413, f"image too large (limit {max_pixels} decoded pixels)") from None
    except Exception as exc:  # Pillow raises many types for damaged headers
        raise BadRequest(400, f"not a readable image ({type(exc).__name__})") from None
    if img.format not in IMAGE_FORMATS:
        raise BadRequest(415, f"unsupported image format {img.format} (PNG, JPEG, BMP or TIFF)")
    width, height = img.size
    if width * height > max_pixels:
        raise BadRequest(
            413, f"image too large: {width}x{height} pixels (limit {max_pixels} decoded pixels)"
        )
    try:
        img.load()
        return image_to_rgb(img, "upload", tuple(size))
    except Exception as exc:  # truncated or corrupt pixel data, odd modes
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise BadRequest(400, f"not a readable image ({reason or type(exc).__name__})") from None


def map_png(amap: np.ndarray, threshold: float) -> bytes:
    """8-bit gray PNG of an anomaly map: pixel = min(255, 128 * map / threshold), so 128 is the
    threshold whatever the model's score scale."""
    from PIL import Image

    scaled = np.clip(np.asarray(amap, dtype=np.float64) * (128.0 / max(threshold, 1e-12)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(scaled.astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise BadRequest(413, f"body of {declared} bytes exceeds the limit of {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BadRequest(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def image_bytes(request: Any, limit: int) -> bytes:
    """The uploaded image's bytes: a raw image body, or multipart field "image"."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data" and ctype not in IMAGE_TYPES:
        raise BadRequest(
            415,
            f"unsupported content type {ctype or '(none)'}: send an image body "
            "(image/png, image/jpeg, image/bmp, image/tiff, application/octet-stream) or "
            "multipart/form-data with an 'image' field",
        )
    body = await read_body(request, limit)
    if ctype != "multipart/form-data":
        return body
    request._body = body  # parse the size-checked body, not the socket again
    try:
        form = await request.form()
    except Exception as exc:
        raise BadRequest(400, f"malformed multipart body ({type(exc).__name__})") from None
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise BadRequest(400, "multipart body has no file field 'image'")
    return await upload.read()


def authorise(request: Any, key: bytes | None) -> None:
    """401 unless the request carries ``key`` (X-API-Key or a bearer token); None: open."""
    if key is None:
        return
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not hmac.compare_digest(given.encode(), key):
        raise BadRequest(401, "missing or wrong API key", {"WWW-Authenticate": "Bearer"})


class Inspector:
    """What the routes share: the model's scorer behind one thread, and a bounded queue count."""

    def __init__(self, config: ServeConfig) -> None:
        from .runtime import open_scorer

        self.config = config
        self.info = model_info(config.model_dir, config.threshold)
        self.scorer = open_scorer(config.model_dir, config.runtime, config.threads)
        self.info["runtime"] = self.scorer.runtime
        self.threshold: float = self.info["threshold"]
        self.size = tuple(self.scorer.image_size)
        self.delay = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)
        # one scoring thread: requests take turns on the model; its own threads (--threads) work
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dualpatch-score")
        self.key = config.api_key.encode() if config.api_key else None
        self.pending = self.served = 0

    def score_one(self, image: np.ndarray) -> tuple[float, np.ndarray, float]:
        start = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        scores, maps = self.scorer.score(image[None])
        return float(scores[0]), maps[0], time.perf_counter() - start

    async def inspect(self, request: Any) -> tuple[float, np.ndarray, dict[str, float]]:
        """(score, anomaly map, timings in ms) of the request's image; 503 if the queue is full."""
        t0 = time.perf_counter()
        authorise(request, self.key)
        if self.pending >= self.config.max_queue:
            raise BadRequest(
                503,
                f"busy: {self.pending} requests queued (limit {self.config.max_queue})",
                {"Retry-After": "1"},
            )
        self.pending += 1
        try:
            data = await image_bytes(request, self.config.max_body_bytes)
            t1 = time.perf_counter()
            image = decode_upload(data, self.size, self.config.max_pixels)
            t2 = time.perf_counter()
            loop = asyncio.get_running_loop()
            score, amap, score_s = await loop.run_in_executor(self.executor, self.score_one, image)
            t3 = time.perf_counter()
        finally:
            self.pending -= 1
        self.served += 1
        timings = {
            "read_ms": round(1000 * (t1 - t0), 3),
            "decode_ms": round(1000 * (t2 - t1), 3),
            "queue_ms": round(1000 * (t3 - t2 - score_s), 3),
            "score_ms": round(1000 * score_s, 3),
            "total_ms": round(1000 * (t3 - t0), 3),
        }
        return score, amap, timings

    def answer(self, score: float, amap: np.ndarray, timings: dict, map_as: str | None) -> Any:
        """The JSON body of an inspection, or (``map_as="png"``) the map PNG with the score in
        headers; ``map_as="base64"`` adds the map PNG to the JSON."""
        from fastapi.responses import Response

        verdict = "defect" if score > self.threshold else "ok"
        if map_as == "png":
            headers = {
                "X-Dualpatch-Score": f"{score:.8g}",
                "X-Dualpatch-Verdict": verdict,
                "X-Dualpatch-Threshold": f"{self.threshold:.8g}",
            }
            png = map_png(amap, self.threshold)
            return Response(png, media_type="image/png", headers=headers)
        body = {
            "score": score,
            "verdict": verdict,
            "threshold": self.threshold,
            "model": {"id": self.info["id"], "digest": self.info["digest"]},
            "runtime": self.info["runtime"],
            "timings": timings,
        }
        if map_as == "base64":
            body["map_png_base64"] = base64.b64encode(map_png(amap, self.threshold)).decode()
        return body


def _one_line_errors(app: Any) -> None:
    """Every client error as a status and one line ``{"error": ...}``."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    def error(status: int, reason: str, headers: dict[str, str] | None = None):
        return JSONResponse({"error": reason}, status_code=status, headers=headers)

    @app.exception_handler(BadRequest)
    async def bad_request(_request: Request, exc: BadRequest):
        return error(exc.status, exc.reason, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"invalid request: {where} {first.get('msg', '')}".strip())


def create_app(config: ServeConfig):
    """The FastAPI app: model loaded once, one scorer thread, a bounded queue in front of it."""
    from fastapi import FastAPI, Request

    inspector = Inspector(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        # requests in flight have finished by now (uvicorn waits)
        inspector.executor.shutdown(wait=True)

    app = FastAPI(title="dualpatch inspection", version="1", lifespan=lifespan)
    _one_line_errors(app)

    @app.post("/v1/inspect")
    async def inspect(request: Request, map: str | None = None):  # noqa: A002 (query name)
        if map not in (None, "png", "base64"):
            raise BadRequest(400, f"map={map}: use map=png or map=base64")
        return inspector.answer(*await inspector.inspect(request), map)

    @app.get("/v1/health")
    async def health():
        return {"status": "ok", "pending": inspector.pending, "served": inspector.served}

    @app.get("/v1/model")
    async def model(request: Request):
        authorise(request, inspector.key)
        return inspector.info

    return app
