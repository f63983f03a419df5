"""``POST /v1/feedback`` (server_feedback.py): behind the API key, a confirmed defect or good
image updates the served model between requests, as a new version; the guard answers 409."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dualpatch.models import versions
from tests.unit.models.online_support import painted, save_dual

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

KEY = "line-3-key"


@pytest.fixture
def served(demo_train, tmp_path):
    return save_dual(demo_train, tmp_path / "model")


def client(model_dir, threshold=None):
    from fastapi.testclient import TestClient

    from dualpatch.serving.server import ServeConfig, create_app

    config = ServeConfig(str(model_dir), threads=1, api_key=KEY, threshold=threshold)
    return TestClient(create_app(config), headers={"X-API-Key": KEY})


def png(path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def inspect(api, data: bytes) -> dict:
    r = api.post("/v1/inspect", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_confirmed_defect_changes_the_verdict_of_the_same_image(served, demo_test):
    sample = demo_test.defective()[2]
    image = png(sample.image_path)
    first = inspect(client(served), image)
    before = first["score"]
    api = client(served, threshold=before * 1.01)  # the defect passes as ok today
    assert inspect(api, image)["verdict"] == "ok"
    files = {"image": ("x.png", image, "image/png"), "mask": ("m.png", png(sample.mask_path))}
    r = api.post("/v1/feedback?label=defect", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 2 and body["bank"] == "defect"
    assert body["added"][0]["chosen_by"] == "mask"
    after = inspect(api, image)
    assert after["verdict"] == "defect" and after["score"] > before
    assert after["model"]["digest"] == body["model"]["digest"] != first["model"]["digest"]

    record = versions.read_record(served, 2)
    assert record["by"].startswith("api-key:") and KEY not in record["by"]
    assert (served / record["added"][0]["file"]).is_file()


def test_a_good_image_joins_the_normal_bank(fitted_single, demo_test, tmp_path):
    served = fitted_single.save(tmp_path / "single")  # score: the farthest patch's distance
    image = png(demo_test.normal()[5].image_path)
    api = client(served, threshold=1.0)
    before = inspect(api, image)["score"]
    r = api.post("/v1/feedback?label=good", content=image, headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["bank"] == "normal", r.text
    assert inspect(api, image)["score"] < before


def test_the_guard_answers_409_until_confirmed(served, demo_train, tmp_path):
    image = png(painted(demo_train.normal()[20], tmp_path))
    api = client(served)
    r = api.post("/v1/feedback?label=good", content=image, headers={"content-type": "image/png"})
    assert r.status_code == 409 and "refused from the normal bank" in r.json()["error"]
    assert not versions.is_versioned(served)
    r = api.post(
        "/v1/feedback?label=good&force=true", content=image, headers={"content-type": "image/png"}
    )
    assert r.status_code == 200 and r.json()["added"][0]["forced"] is True


def test_feedback_needs_the_key_and_a_label(served, demo_test):
    image = png(demo_test.normal()[0].image_path)
    api = client(served)
    r = api.post("/v1/feedback?label=good", content=image,
                 headers={"content-type": "image/png", "X-API-Key": "wrong"})  # fmt: skip
    assert r.status_code == 401
    r = api.post("/v1/feedback?label=maybe", content=image, headers={"content-type": "image/png"})
    assert r.status_code == 400 and "label=good or label=defect" in r.json()["error"]
    r = api.post("/v1/feedback?label=good", content=b"junk", headers={"content-type": "image/png"})
    assert r.status_code == 400
    assert not versions.is_versioned(served)
