"""The inspection server as a user runs it: ``dualpatch serve`` in a subprocess on a free loopback
port, called with a real HTTP client (httpx)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.common import TINY, tiny_params

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGTERM semantics are POSIX")

API_KEY = "s3cret-token-for-tests"
MAX_BODY = 300_000
MAX_PIXELS = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``dualpatch serve`` in a subprocess; stopped with SIGTERM."""

    def __init__(self, model_dir: Path, env: dict, *args: str, delay: float = 0.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(env, DUALPATCH_SERVE_TEST_DELAY_S=str(delay))
        cmd = [sys.executable, "-m", "dualpatch.cli", "serve", "--model", str(model_dir)]
        cmd += ["--port", str(self.port), "--threads", "1", *args]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("server did not come up in 180 s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def served_model(tmp_path_factory, tiny_normal):
    """A single-bank model with a threshold set from held-out normal images (fit-time rule)."""
    from dualpatch import PatchCore
    from dualpatch.threshold import calibrate, holdout_split

    bank, held = holdout_split(tiny_normal, 0.34, seed=0)
    model = PatchCore(**tiny_params()).fit(bank)
    calibrate(model, held)
    folder = tmp_path_factory.mktemp("served") / "model"
    model.save(folder)
    return folder, model


@pytest.fixture(scope="module")
def server(served_model, cli_env, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("key") / "api-key"
    key_file.write_text(API_KEY + "\n")
    srv = Server(
        served_model[0],
        cli_env,
        "--api-key-file",
        str(key_file),
        "--max-body-bytes",
        str(MAX_BODY),
        "--max-pixels",
        str(MAX_PIXELS),
    )
    yield srv
    srv.stop()


AUTH = {"X-API-Key": API_KEY}


def test_model_threshold_comes_from_held_out_training_images(served_model):
    meta = json.loads((served_model[0] / "model.json").read_text())
    assert meta["threshold"] == pytest.approx(served_model[1].threshold_)
    assert "held out of the bank" in meta["threshold_rule"]


def test_inspect_raw_and_multipart_match_the_library(server, served_model, tiny_test):
    folder, model = served_model
    sample = tiny_test[-1]  # a defective image
    expected = float(model.predict([sample]).image_scores[0])
    raw = sample.image_path.read_bytes()
    r = httpx.post(
        f"{server.url}/v1/inspect", content=raw, headers={**AUTH, "Content-Type": "image/png"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["score"] == pytest.approx(expected, rel=1e-5)
    assert body["threshold"] == pytest.approx(model.threshold_)
    assert body["verdict"] == ("defect" if expected > model.threshold_ else "ok")
    assert (
        body["model"]["digest"]
        == json.loads((folder / "model.json").read_text())["safetensors_sha256"]
    )
    assert body["model"]["id"] == "model"
    assert set(body["timings"]) >= {"decode_ms", "score_ms", "total_ms"}
    files = {"image": ("part.png", raw, "image/png")}
    m = httpx.post(f"{server.url}/v1/inspect", files=files, headers=AUTH)
    assert m.status_code == 200, m.text
    assert m.json()["score"] == pytest.approx(body["score"], rel=1e-6)


def test_map_as_png_and_base64(server, tiny_test):
    from PIL import Image

    raw = tiny_test[-1].image_path.read_bytes()
    headers = {**AUTH, "Content-Type": "image/png"}
    r = httpx.post(f"{server.url}/v1/inspect?map=png", content=raw, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (TINY[1], TINY[0]) and img.mode == "L"
    assert float(r.headers["X-Dualpatch-Score"]) > 0
    b = httpx.post(f"{server.url}/v1/inspect?map=base64", content=raw, headers=headers)
    assert b.status_code == 200
    assert Image.open(io.BytesIO(base64.b64decode(b.json()["map_png_base64"]))).size == img.size


def test_health_and_model(server, served_model):
    assert httpx.get(f"{server.url}/v1/health").json()["status"] == "ok"
    info = httpx.get(f"{server.url}/v1/model", headers=AUTH).json()
    assert info["threshold"] == pytest.approx(served_model[1].threshold_)
    assert info["image_size"] == list(TINY) and info["runtime"] == "torch"


def _gif() -> bytes:
    return png_bytes(np.zeros((8, 8, 3), np.uint8), "GIF")


BAD_UPLOADS = {
    "empty body": (b"", "image/png", 400, "empty"),
    "corrupt bytes": (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "image/png", 400, "readable"),
    "random bytes": (bytes(range(256)) * 4, "application/octet-stream", 400, "readable"),
    "unsupported format (GIF)": (None, "application/octet-stream", 415, "unsupported image"),
    "wrong content type": (b"hello", "text/plain", 415, "content type"),
    "no content type": (b"hello", "", 415, "content type"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_4xx_with_one_line(server, case):
    data, ctype, status, words = BAD_UPLOADS[case]
    data = _gif() if data is None else data
    headers = {**AUTH, "Content-Type": ctype} if ctype else dict(AUTH)
    r = httpx.post(f"{server.url}/v1/inspect", content=data, headers=headers)
    assert r.status_code == status, r.text
    reason = r.json()["error"]
    assert words in reason and "\n" not in reason


def test_truncated_png_is_400(server, tiny_test):
    raw = tiny_test[0].image_path.read_bytes()
    headers = {**AUTH, "Content-Type": "image/png"}
    r = httpx.post(f"{server.url}/v1/inspect", content=raw[: len(raw) // 2], headers=headers)
    assert r.status_code == 400 and "readable" in r.json()["error"]


def test_oversized_body_and_huge_image_are_413(server):
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    big = httpx.post(f"{server.url}/v1/inspect", content=b"\0" * (MAX_BODY + 1), headers=headers)
    assert big.status_code == 413 and "limit" in big.json()["error"]
    # small on the wire, huge decoded: 1,200 x 1,000 zeros compress to a few kB
    bomb = png_bytes(np.zeros((1200, 1000), np.uint8))
    assert len(bomb) < MAX_BODY
    r = httpx.post(f"{server.url}/v1/inspect", content=bomb, headers=headers)
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_multipart_without_image_field_and_bad_map_option(server, tiny_test):
    r = httpx.post(f"{server.url}/v1/inspect", files={"other": ("a.png", b"x")}, headers=AUTH)
    assert r.status_code == 400 and "'image'" in r.json()["error"]
    raw = tiny_test[0].image_path.read_bytes()
    headers = {**AUTH, "Content-Type": "image/png"}
    r = httpx.post(f"{server.url}/v1/inspect?map=jpeg", content=raw, headers=headers)
    assert r.status_code == 400 and "map=png" in r.json()["error"]


def test_api_key_is_required(server, tiny_test):
    raw = tiny_test[0].image_path.read_bytes()
    url = f"{server.url}/v1/inspect"
    ctype = {"Content-Type": "image/png"}
    assert httpx.post(url, content=raw, headers=ctype).status_code == 401
    wrong = httpx.post(url, content=raw, headers={**ctype, "X-API-Key": API_KEY + "x"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    bearer = {**ctype, "Authorization": f"Bearer {API_KEY}"}
    assert httpx.post(url, content=raw, headers=bearer).status_code == 200
    assert httpx.get(f"{server.url}/v1/model").status_code == 401


def test_overload_gets_503_with_retry_after_then_recovers(served_model, cli_env, tiny_test):
    """max-queue 2 with a test-only 1 s scoring delay: of 6 simultaneous requests, those beyond
    the queue are turned away at once with 503 and Retry-After; all others succeed."""
    srv = Server(served_model[0], cli_env, "--max-queue", "2", delay=1.0)
    try:
        raw = tiny_test[0].image_path.read_bytes()
        results: list[httpx.Response] = []

        def call():
            results.append(
                httpx.post(
                    f"{srv.url}/v1/inspect",
                    content=raw,
                    headers={"Content-Type": "image/png"},
                    timeout=60,
                )
            )

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r.status_code for r in results)
        assert set(statuses) == {200, 503}, statuses
        assert statuses.count(200) >= 2
        for r in results:
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "1" and "busy" in r.json()["error"]
        # once the queue drains, requests are served again
        again = httpx.post(
            f"{srv.url}/v1/inspect", content=raw, headers={"Content-Type": "image/png"}, timeout=60
        )
        assert again.status_code == 200
    finally:
        srv.stop()


def test_sigterm_finishes_the_request_in_flight(served_model, cli_env, tiny_test):
    srv = Server(served_model[0], cli_env, delay=2.0)
    raw = tiny_test[0].image_path.read_bytes()
    result: dict = {}

    def call():
        result["r"] = httpx.post(
            f"{srv.url}/v1/inspect", content=raw, headers={"Content-Type": "image/png"}, timeout=60
        )

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 30
    while httpx.get(f"{srv.url}/v1/health").json()["pending"] < 1:
        assert time.monotonic() < deadline, "request never reached the server"
        time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    t.join(timeout=60)
    assert result["r"].status_code == 200 and result["r"].json()["score"] > 0
    # a clean stop: uvicorn re-raises the SIGTERM it handled once everything has finished
    assert srv.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Traceback" not in srv.proc.stderr.read()
    # and it no longer accepts connections
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{srv.url}/v1/health", timeout=2)


def test_model_without_threshold_is_served_with_verdicts_off(tmp_path, fitted_single, cli_env):
    fitted_single.save(tmp_path / "m")
    assert "threshold" not in json.loads((tmp_path / "m" / "model.json").read_text())
    srv = Server(tmp_path / "m", cli_env)
    try:
        raw = png_bytes(np.full((*TINY, 3), 90, np.uint8))
        r = httpx.post(f"{srv.url}/v1/inspect", content=raw, headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        assert r.json()["score"] > 0 and r.json()["verdict"] is None
        assert r.json()["threshold"] is None
        m = httpx.post(
            f"{srv.url}/v1/inspect?map=png", content=raw, headers={"Content-Type": "image/png"}
        )
        assert m.status_code == 200 and "X-Dualpatch-Verdict" not in m.headers
    finally:
        srv.stop()
    warnings = [x for x in srv.proc.stderr.read().splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "no threshold: verdicts are off" in warnings[0]


def test_stored_threshold_is_announced_and_answers_carry_a_verdict(served_model, cli_env):
    folder, model = served_model
    srv = Server(folder, cli_env)
    try:
        raw = png_bytes(np.full((*TINY, 3), 90, np.uint8))
        r = httpx.post(f"{srv.url}/v1/inspect", content=raw, headers={"Content-Type": "image/png"})
        assert r.json()["verdict"] in ("ok", "defect")
        assert r.json()["threshold"] == pytest.approx(model.threshold_)
    finally:
        srv.stop()
    lines = srv.proc.stderr.read().splitlines()
    said = [x for x in lines if x.startswith("verdict threshold")]
    assert len(said) == 1 and "from model.json" in said[0], lines
    # "serving on" comes once, after the port is bound
    assert sum(x.startswith("serving ") for x in lines) == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_threshold_option_is_refused(served_model, run_cli, value):
    proc = run_cli("serve", "--model", served_model[0], "--threshold", value, "--port", "1")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--threshold" in lines[0] and "finite" in lines[0], lines


@pytest.mark.parametrize("stored", ["NaN", "Infinity", '"high"'])
def test_non_finite_stored_threshold_is_refused(served_model, run_cli, tmp_path, stored):
    import shutil

    folder = shutil.copytree(served_model[0], tmp_path / "m")
    meta = (folder / "model.json").read_text()
    meta = json.dumps({**json.loads(meta), "threshold": "@"}).replace('"@"', stored)
    (folder / "model.json").write_text(meta)
    proc = run_cli("serve", "--model", folder, "--port", str(free_port()))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "threshold" in lines[0] and "serving" not in proc.stderr, lines


def test_busy_port_is_one_line_and_never_says_serving(served_model, run_cli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("serve", "--model", served_model[0], "--port", str(port))
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.strip().splitlines() if not x.startswith("verdict threshold")]
    assert len(lines) == 1 and f"--port {port}" in lines[0] and "in use" in lines[0], lines
    assert "serving" not in proc.stderr and "Traceback" not in proc.stderr


def test_open_host_and_readable_key_file_warn(served_model, run_cli, tmp_path):
    """--host 0.0.0.0 without a key warns; so does a key file others can read. A busy port (on
    127.0.0.1, which 0.0.0.0 includes) stops the command before it ever listens."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        open_host = run_cli(
            "serve", "--model", served_model[0], "--host", "0.0.0.0", "--port", port
        )
        key = tmp_path / "key"
        key.write_text(API_KEY)
        key.chmod(0o644)
        shared = run_cli("serve", "--model", served_model[0], "--api-key-file", key, "--port", port)
    warned = [x for x in open_host.stderr.splitlines() if x.startswith("warning:")]
    assert len(warned) == 1 and "0.0.0.0" in warned[0] and "API key" in warned[0]
    warned = [x for x in shared.stderr.splitlines() if x.startswith("warning:")]
    assert len(warned) == 1 and "other users" in warned[0] and "chmod 600" in warned[0]
    assert open_host.returncode == shared.returncode == 1


def test_non_ascii_api_key_is_refused_at_start(served_model, run_cli, tmp_path):
    key = tmp_path / "key"
    key.write_text("clé-secrète", encoding="utf-8")
    key.chmod(0o600)
    proc = run_cli("serve", "--model", served_model[0], "--api-key-file", key, "--port", "1")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(key) in lines[0] and "printable ASCII" in lines[0], lines


def test_unknown_path_and_method_answer_error_json_and_docs_are_closed(server):
    missing = httpx.get(f"{server.url}/v1/nothing", headers=AUTH)
    assert missing.status_code == 404 and "/v1/nothing" in missing.json()["error"]
    wrong = httpx.get(f"{server.url}/v1/inspect", headers=AUTH)
    assert wrong.status_code == 405 and "GET" in wrong.json()["error"]
    for path in ("/docs", "/redoc", "/openapi.json"):  # a key is set: nothing describes the API
        closed = httpx.get(f"{server.url}{path}", headers=AUTH)
        assert closed.status_code == 404 and set(closed.json()) == {"error"}


def exif_rotated_jpeg(path: Path) -> Path:
    """A JPEG stored a quarter turn from how it is shown (EXIF Orientation 6)."""
    from PIL import Image

    from tests.support.bad_input import texture

    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.ascontiguousarray(np.rot90(texture(7), k=1))
    Image.fromarray(stored).save(path, format="JPEG", quality=95, exif=exif)
    return path


def test_exif_rotated_jpeg_scores_alike_in_predict_and_serve(
    server, served_model, run_cli, tmp_path
):
    """One decode path: serve turns the upload as predict turns the file (issue 20 item 5)."""
    import csv

    (tmp_path / "in").mkdir()
    jpeg = exif_rotated_jpeg(tmp_path / "in" / "turned.jpg")
    proc = run_cli("predict", tmp_path / "in", "--model", served_model[0], "--out", tmp_path / "p")
    assert proc.returncode == 0, proc.stderr
    with (tmp_path / "p" / "scores.csv").open() as f:
        predicted = float(next(csv.DictReader(f))["score"])
    headers = {**AUTH, "Content-Type": "image/jpeg"}
    r = httpx.post(f"{server.url}/v1/inspect", content=jpeg.read_bytes(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["score"] == pytest.approx(predicted, rel=1e-5)
    # and the rotation matters: the same pixels without EXIF score differently
    from PIL import Image

    plain = io.BytesIO()
    Image.open(jpeg).save(plain, format="PNG")
    r = httpx.post(f"{server.url}/v1/inspect", content=plain.getvalue(), headers=headers)
    assert r.json()["score"] != pytest.approx(predicted, rel=1e-3)


def _tiff(frames: list, mode: str | None = None) -> bytes:
    from PIL import Image

    images = [
        Image.fromarray(f) if mode is None else Image.fromarray(f).convert(mode) for f in frames
    ]
    buf = io.BytesIO()
    images[0].save(buf, format="TIFF", save_all=True, append_images=images[1:])
    return buf.getvalue()


@pytest.mark.parametrize("case", ["multi-page TIFF", "LAB TIFF"])
def test_uploads_predict_refuses_are_refused(server, case):
    frame = np.full((*TINY, 3), 120, np.uint8)
    data = _tiff([frame, frame]) if case == "multi-page TIFF" else _tiff([frame], "LAB")
    headers = {**AUTH, "Content-Type": "image/tiff"}
    r = httpx.post(f"{server.url}/v1/inspect", content=data, headers=headers)
    assert r.status_code == 400, r.text
    words = "2 pages" if case == "multi-page TIFF" else "L*a*b*"
    assert words in r.json()["error"] and "\n" not in r.json()["error"]


def test_serve_binds_loopback_by_default():
    import inspect as pyinspect

    from dualpatch.cli.serve import serve

    assert pyinspect.signature(serve).parameters["host"].default.default == "127.0.0.1"


def test_help_stays_light(cli_env):
    """``dualpatch --help`` imports neither fastapi, uvicorn, onnx nor openvino."""
    code = (
        "import sys, dualpatch.cli\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'onnxruntime', 'openvino', 'torch')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_header_only_bomb_is_413_without_decoding(server):
    """A 100-byte PNG that claims 60000 x 60000 pixels is refused from its header."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    headers = {**AUTH, "Content-Type": "image/png"}
    r = httpx.post(f"{server.url}/v1/inspect", content=bomb, headers=headers)
    assert r.status_code == 413 and "too large" in r.json()["error"]
