"""HTTP inspection service: one fitted model, loaded once, scoring one image per request.

    POST /v1/inspect    an image (raw body with an image content type, or multipart field "image")
                        -> JSON score, verdict, threshold, model id and digest, timings;
                        ?map=png returns the anomaly map as image/png (score in headers),
                        ?map=base64 adds it to the JSON as "map_png_base64"
    GET  /v1/health     liveness and queue depth
    GET  /v1/model      what is being served
    GET  /              the review page (serving/page.py; served without the key, holds no data)

Every bad input gets a 4xx and a one-line ``{"error": ...}``: empty, corrupt, unsupported or
too large images (decoded through ``data.images`` as ``predict`` reads files, with a pixel cap and
a decoding-memory cap checked from the header), wrong content types, oversized bodies
(``max_body_bytes``), bodies slower than ``body_timeout``. At most ``max_queue`` requests whose
image has arrived wait for or hold the scorer; one more gets 503 with Retry-After. The connection
limits are ``server_guard``'s. FastAPI is imported only when an app is built.
"""

import asyncio
import base64
import contextlib
import hmac
import io
import math
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualpatch.errors import ConfigError, DataError
from dualpatch.serving.guard import LOG, Guard

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
    max_decode_mib: int = 512
    guard: Guard = Guard()

    def __post_init__(self) -> None:
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ConfigError(f"--threshold {self.threshold}: expected a finite number")


class BadRequest(Exception):
    """A client error: ``status`` and a one-line ``reason``."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def model_info(model_dir: str | os.PathLike[str], threshold: float | None) -> dict[str, Any]:
    """What /v1/model reports. ``threshold`` (``--threshold``) overrides the stored one; with
    neither, "threshold" is None and answers carry no verdict."""
    from dualpatch.card import ModelCard

    # the one reader of model.json: every field checked there (a NaN or text threshold refused)
    card = ModelCard.read(model_dir)
    stored = card.threshold
    source = (
        "--threshold" if threshold is not None else "model.json" if stored is not None else None
    )
    return {
        "id": Path(model_dir).resolve().name,
        "digest": card.safetensors_sha256,
        "class": card.model_class,
        "rule": card.params.get("rule") if card.kind == "dual" else None,
        "backbone": card.params.get("backbone"),
        "image_size": list(card.image_size),
        "threshold": threshold if threshold is not None else stored,
        "threshold_source": source,
        "stored_threshold": stored,
        "threshold_rule": card.threshold_rule,
        "map_scale": card.map_scale,
    }


def threshold_line(model_dir: str, info: dict[str, Any]) -> str:
    """What the server says at start about its verdicts."""
    if info["threshold"] is None:
        return (
            f"{Path(model_dir) / 'model.json'} holds no threshold: verdicts are off (answers carry "
            "the score only); fit with --threshold-holdout, or pass --threshold"
        )
    if info["threshold_source"] == "--threshold":
        stored = info["stored_threshold"]
        was = "none stored" if stored is None else f"model.json's {stored:.6g} not used"
        return f"verdict threshold {info['threshold']:.6g} from --threshold ({was})"
    rule = f" ({info['threshold_rule']})" if info["threshold_rule"] else ""
    return f"verdict threshold {info['threshold']:.6g} from model.json{rule}"


def decode_upload(data: bytes, size: tuple[int, int], limits: Any) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 at the model's size, read as ``predict`` reads a file
    (``data.images``), or BadRequest with a one-line reason."""
    from dualpatch.data.images import ImageFormatError, ImageTooLargeError, decode_image_bytes

    if not data:
        raise BadRequest(400, "empty image (0 bytes)")
    try:
        return decode_image_bytes(data, "upload", tuple(size), limits)
    except ImageTooLargeError as exc:
        raise BadRequest(413, f"image too large: {_reason(exc)}") from None
    except ImageFormatError as exc:
        raise BadRequest(415, _reason(exc)) from None
    except DataError as exc:
        raise BadRequest(400, _reason(exc)) from None
    except Exception as exc:  # Pillow raises many types for odd files: still the client's
        raise BadRequest(400, f"not a readable image ({type(exc).__name__})") from None


def _reason(exc: Exception) -> str:
    return str(exc).removeprefix("upload: ").splitlines()[0][:300]


def map_png(amap: np.ndarray, reference: float | None) -> bytes:
    """8-bit gray PNG of an anomaly map: pixel = min(255, 128 * map / reference), so 128 is the
    threshold whatever the model's score scale (without a threshold: the model's map scale, or
    the map's own maximum)."""
    from PIL import Image

    amap = np.asarray(amap, dtype=np.float64)
    ref = reference if reference is not None else float(amap.max(initial=0.0))
    scaled = np.clip(amap * (128.0 / max(ref, 1e-12)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(scaled.astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


class BodyBudget:
    """Bytes of request bodies being received, all requests together: past ``limit`` a request
    gets 503. Slow senders hold a few bytes each, so they cannot keep others out; many large
    bodies arriving at once cannot take the memory."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, n: int) -> None:
        if self.held + n > self.limit:
            raise BadRequest(
                503,
                f"busy: {self.held / 2**20:.1f} MiB of uploads arriving "
                f"(limit {self.limit / 2**20:g} MiB)",
                {"Retry-After": "1"},
            )
        self.held += n


async def read_body(
    request: Any, limit: int, seconds: float = 30.0, budget: BodyBudget | None = None
) -> bytes:
    """The request body, refused (413) past ``limit`` bytes, declared or streamed, (408) unless
    it has all arrived within ``seconds``, and (503) while ``budget`` is spent."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise BadRequest(413, f"body of {declared} bytes exceeds the limit of {limit}")
    budget = budget or BodyBudget(limit)
    chunks, total = [], 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise BadRequest(413, f"body exceeds the limit of {limit} bytes")
                budget.take(len(chunk))
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(
            408, f"body not received within {seconds:g} s", {"Connection": "close"}
        ) from None
    except ClientDisconnect:
        raise ClientGone(total) from None
    finally:
        budget.held -= sum(map(len, chunks))
    return b"".join(chunks)


class ClientGone(Exception):
    """The client closed its connection before its body had arrived."""

    def __init__(self, received: int) -> None:
        super().__init__(f"client disconnected after {received} bytes of its body")


async def image_bytes(
    request: Any, limit: int, seconds: float, budget: BodyBudget | None = None
) -> bytes:
    """The uploaded image's bytes: a raw image body, or multipart field "image"."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data" and ctype not in IMAGE_TYPES:
        raise BadRequest(
            415,
            f"unsupported content type {ctype or '(none)'}: send an image body "
            "(image/png, image/jpeg, image/bmp, image/tiff, application/octet-stream) or "
            "multipart/form-data with an 'image' field",
        )
    body = await read_body(request, limit, seconds, budget)
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
    """What the routes share: the model's scorer behind one thread, a decoding thread before it,
    and a bounded queue count."""

    def __init__(self, config: ServeConfig) -> None:
        from dualpatch.data.images import DecodeLimits
        from dualpatch.serving.runtime import open_scorer

        self.config = config
        self.info = model_info(config.model_dir, config.threshold)
        self.scorer = open_scorer(config.model_dir, config.runtime, config.threads)
        self.info["runtime"] = self.scorer.runtime
        self.threshold: float | None = self.info["threshold"]
        # the map PNG's 128 grey: the threshold, else the model's map scale
        self.map_reference = self.info["map_scale"] if self.threshold is None else self.threshold
        self.size = tuple(self.scorer.image_size)
        self.limits = DecodeLimits(
            max_pixels=config.max_pixels,
            max_decode_bytes=config.max_decode_mib * 2**20,
            formats=frozenset(IMAGE_FORMATS),
            hint="serve --max-pixels",
        )
        self.delay = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)
        # one scoring thread: requests take turns on the model; its own threads (--threads) work.
        # Decoding has its own thread, so that neither blocks the event loop (/v1/health answers
        # while a large image decodes)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dualpatch-score")
        self.decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dualpatch-decode")
        self.key = config.api_key.encode() if config.api_key else None
        self.pending = self.served = 0
        # bodies in memory while they arrive: as many full ones as the queue holds
        self.arriving = BodyBudget(config.max_queue * config.max_body_bytes)

    def score_one(self, image: np.ndarray) -> tuple[float, np.ndarray, float]:
        start = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        scores, maps = self.scorer.score_images(image[None])
        return float(scores[0]), maps[0], time.perf_counter() - start

    async def inspect(self, request: Any) -> tuple[float, np.ndarray, dict[str, float]]:
        """(score, anomaly map, timings in ms) of the request's image; 503 if the queue is full.

        The body is read before the request joins the queue: a slow sender holds its own
        connection (until ``body_timeout``), not a queue place."""
        t0 = time.perf_counter()
        authorise(request, self.key)
        self._refuse_when_full()
        guard = self.config.guard
        data = await image_bytes(
            request, self.config.max_body_bytes, guard.body_timeout, self.arriving
        )
        t1 = time.perf_counter()
        self._refuse_when_full()
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(
                self.decoder, decode_upload, data, self.size, self.limits
            )
            del data
            t2 = time.perf_counter()
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

    def _refuse_when_full(self) -> None:
        if self.pending >= self.config.max_queue:
            raise BadRequest(
                503,
                f"busy: {self.pending} requests queued (limit {self.config.max_queue})",
                {"Retry-After": "1"},
            )

    def verdict(self, score: float) -> str | None:
        if self.threshold is None:
            return None
        return "defect" if score > self.threshold else "ok"

    def answer(self, score: float, amap: np.ndarray, timings: dict, map_as: str | None) -> Any:
        """The JSON body of an inspection, or (``map_as="png"``) the map PNG with the score in
        headers; ``map_as="base64"`` adds the map PNG to the JSON. Without a threshold the
        verdict and threshold are null (absent from the PNG's headers)."""
        from fastapi.responses import Response

        verdict = self.verdict(score)
        if map_as == "png":
            headers = {"X-Dualpatch-Score": f"{score:.8g}"}
            if verdict is not None:
                headers["X-Dualpatch-Verdict"] = verdict
                headers["X-Dualpatch-Threshold"] = f"{self.threshold:.8g}"
            png = map_png(amap, self.map_reference)
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
            png = map_png(amap, self.map_reference)
            body["map_png_base64"] = base64.b64encode(png).decode()
        return body


def _one_line_errors(app: Any) -> None:
    """Every client error as a status and one line ``{"error": ...}``: the app's own, FastAPI's
    validation errors, Starlette's 404 and 405; a client that went away is one log line."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

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

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        reason = {404: f"no such path {request.url.path}", 405: f"{request.method} not allowed"}
        text = reason.get(exc.status_code, str(exc.detail))
        return error(exc.status_code, text, getattr(exc, "headers", None))

    @app.exception_handler(ClientGone)
    async def gone(request: Request, exc: ClientGone):
        client = request.client
        LOG.warning("%s: %s", f"{client.host}:{client.port}" if client else "client", exc)
        return Response(status_code=400)  # nobody reads it


def create_app(config: ServeConfig):
    """The FastAPI app: model loaded once, one scorer thread, a bounded queue in front of it.
    With an API key, the interactive docs and the OpenAPI schema are not served."""
    from fastapi import FastAPI, Request

    inspector = Inspector(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        # requests in flight have finished by now (uvicorn waits)
        inspector.executor.shutdown(wait=True)
        inspector.decoder.shutdown(wait=True)

    closed = {"docs_url": None, "redoc_url": None, "openapi_url": None} if inspector.key else {}
    app = FastAPI(title="dualpatch inspection", version="1", lifespan=lifespan, **closed)
    app.state.inspector = inspector
    _one_line_errors(app)

    @app.post("/v1/inspect")
    async def inspect(request: Request, map: str | None = None):  # noqa: A002 (query name)
        if map not in (None, "png", "base64"):
            raise BadRequest(400, f"map={map}: use map=png or map=base64")
        return inspector.answer(*await inspector.inspect(request), map)

    @app.get("/", include_in_schema=False)
    async def review_page():
        from dualpatch.serving.page import page_response

        return page_response()

    @app.get("/v1/health")
    async def health():
        return {"status": "ok", "pending": inspector.pending, "served": inspector.served}

    @app.get("/v1/model")
    async def model(request: Request):
        authorise(request, inspector.key)
        return inspector.info

    # POST /v1/feedback (docs/online.md); this module's request helpers are passed in, so that
    # server_feedback never imports server back (an import cycle)
    from dualpatch.serving.feedback import register_feedback

    register_feedback(app, inspector, sys.modules[__name__])
    return app


def run(config: ServeConfig, host: str, port: int) -> None:
    """Serve ``config``'s model on ``host``:``port`` until SIGTERM or Ctrl-C: the app built and
    the port bound before "serving on ..." is printed (a busy port is one error line)."""
    import uvicorn

    from dualpatch.serving.guard import bind, guarded_protocol, quiet_logging

    application = create_app(config)
    sock = bind(host, port)
    guard = config.guard
    settings = uvicorn.Config(
        application,
        http=guarded_protocol(guard),
        log_level="warning",
        timeout_keep_alive=int(max(1, guard.header_timeout)),
        # requests whose body has arrived finish first; slow senders are cut at once
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers
    )
    server = uvicorn.Server(settings)
    quiet_logging()
    inspector = application.state.inspector
    line = threshold_line(config.model_dir, inspector.info)
    if inspector.threshold is None:
        warnings.warn(line, stacklevel=2)
    else:
        print(line, file=sys.stderr)
    where = f"http://{host}:{sock.getsockname()[1]}"
    print(f"serving {config.model_dir} ({inspector.info['runtime']}) on {where}/v1/inspect; "
          f"review page: {where}/", file=sys.stderr)  # fmt: skip
    server.run(sockets=[sock])
