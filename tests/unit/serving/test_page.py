"""The review page at ``/`` without a browser: served without the key while the API needs it,
self-contained (nothing loaded from elsewhere, a CSP that forbids it), and the feedback answer
the page's "add anyway" relies on (409 + ``X-Dualpatch-Refused: guard`` for the guard only)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from dualpatch.serving.page import CSP, colours, page_html
from dualpatch.serving.predict_io import BLUE, RED, YELLOW
from tests.unit.models.online_support import painted, save_dual

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

KEY = "page-key"


@pytest.fixture(scope="module")
def model_dir(demo_train, tmp_path_factory):
    return save_dual(demo_train, tmp_path_factory.mktemp("page") / "model")


def client(model_dir, key=KEY):
    from fastapi.testclient import TestClient

    from dualpatch.serving.server import ServeConfig, create_app

    return TestClient(create_app(ServeConfig(str(model_dir), threads=1, api_key=key)))


def png(array_or_path) -> bytes:
    image = Image.open(array_or_path) if not isinstance(array_or_path, np.ndarray) else None
    buf = io.BytesIO()
    (image.convert("RGB") if image else Image.fromarray(array_or_path)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_page_is_served_without_the_key_and_the_api_is_not(model_dir):
    api = client(model_dir)
    r = api.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert r.text == page_html()
    assert api.get("/v1/model").status_code == 401
    assert api.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200
    # the page holds no model data: not the digest, not the threshold
    info = api.get("/v1/model", headers={"X-API-Key": KEY}).json()
    assert info["digest"] not in r.text and repr(info["threshold"]) not in r.text


def test_the_page_loads_nothing_from_elsewhere():
    html = page_html()
    assert "<script src" not in html and "stylesheet" not in html
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(u.startswith("data:") for u in links), links
    assert not re.search(r"https?://", html)
    # the CSP lets the page talk only to its own server
    assert "default-src 'none'" in CSP and "connect-src 'self'" in CSP


def test_the_page_uses_predicts_overlay_colours():
    assert colours() == {"BLUE": BLUE.tolist(), "YELLOW": YELLOW.tolist(), "RED": RED.tolist()}
    for name, value in colours().items():
        assert f"const {name} = {value};" in page_html()


def test_only_the_guards_refusal_offers_force(model_dir, demo_train, tmp_path):
    import shutil

    folder = shutil.copytree(model_dir, tmp_path / "model")
    api = client(folder, key=None)
    image = png(painted(demo_train.normal()[20], tmp_path))
    r = api.post("/v1/feedback?label=good", content=image, headers={"content-type": "image/png"})
    assert r.status_code == 409 and r.headers["x-dualpatch-refused"] == "guard"
    # a defect whose mask is empty: 409 too, but force would change nothing
    files = {"image": ("d.png", image, "image/png"),
             "mask": ("m.png", png(np.zeros((320, 128), np.uint8)), "image/png")}  # fmt: skip
    r = api.post("/v1/feedback?label=defect", files=files)
    assert r.status_code == 409 and "nothing to add" in r.json()["error"], r.text
    assert "x-dualpatch-refused" not in r.headers
