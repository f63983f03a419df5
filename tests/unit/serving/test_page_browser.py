"""The review page at ``serve``'s ``/`` in a real browser: Playwright (pytest-playwright's ``page``)
driving the system Chromium against the app served by uvicorn on a loopback port.

Upload and read the verdict, the API key, the feedback buttons changing the verdict of the same
image, and the guard's "add anyway"."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import httpx
import pytest

from dualpatch.models import versions
from tests.support import playwright_page as pw
from tests.support.common import TINY, tiny_params
from tests.unit.models.online_support import painted

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("playwright", reason=pw.unavailable_reason())
pytestmark = pytest.mark.skipif(pw.unavailable_reason() is not None,
                                reason=str(pw.unavailable_reason()))  # fmt: skip

from playwright.sync_api import Page, expect  # noqa: E402 (after the skip)

KEY = "page-test-key"
#: the machine is shared: give the page time to score and re-score
WAIT_MS = 60_000


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return pw.launch_args(browser_type_launch_args)


@pytest.fixture(scope="module")
def learner(demo_train, demo_test, tmp_path_factory):
    """A dual model with a threshold from 4 held-out normal training images, and the first
    normal and the first defective test image it flags. coreset_ratio 0.1 (not the fixtures'
    0.01): one confirmed image adds 4 of its 32 patches, enough to move its own score."""
    from dualpatch import DualPatchCore
    from dualpatch.threshold import calibrate

    params = {**tiny_params(), "coreset_ratio": 0.1}
    model = DualPatchCore(**params).fit(demo_train.normal()[:6], demo_train.defect_crops(TINY)[:6])
    with pytest.warns(UserWarning, match="held-out normal images"):
        calibrate(model, demo_train.normal()[6:10])
    folder = model.save(tmp_path_factory.mktemp("learner") / "model")
    flagged = {}
    for kind, samples in (("normal", demo_test.normal()), ("defect", demo_test.defective())):
        scores = model.predict(samples).image_scores
        hits = [s.image_path for s, v in zip(samples, scores, strict=True) if v > model.threshold_]
        assert hits, f"no {kind} test image above the threshold: the scenario needs one"
        flagged[kind] = hits[0]
    return folder, flagged


@pytest.fixture
def served(learner, tmp_path):
    """A private copy of the learner (feedback writes versions into it), served without a key."""
    folder = Path(shutil.copytree(learner[0], tmp_path / "model"))
    with pw.live_server(config(folder)) as url:
        yield url, folder


def config(folder: Path, key: str | None = None):
    from dualpatch.serving.server import ServeConfig

    return ServeConfig(str(folder), threads=1, api_key=key)


def open_page(page: Page, url: str) -> list[str]:
    """Load the page; returns the list that collects its console errors and requests elsewhere."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith((url, "blob:", "data:"))
            else problems.append(f"request elsewhere: {r.url}"))  # fmt: skip
    page.set_default_timeout(WAIT_MS)
    page.goto(url + "/")
    return problems


def upload(page: Page, image: Path) -> None:
    page.set_input_files("#file", str(image))
    expect(page.locator("body")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)


def after_feedback(page: Page, version: int) -> None:
    """Wait until the page shows ``version`` and has re-inspected the image with it."""
    expect(page.locator("#feedback")).to_contain_text(f"model version {version}", timeout=WAIT_MS)
    expect(page.locator("#version")).to_contain_text(f"version {version}", timeout=WAIT_MS)
    expect(page.locator("body")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)


def inspect_api(url: str, image: Path, key: str | None = None) -> dict:
    headers = {"content-type": "image/png", **({"X-API-Key": key} if key else {})}
    r = httpx.post(f"{url}/v1/inspect", content=image.read_bytes(), headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def overlay_pixels(page: Page) -> dict:
    """Size of the overlay canvas and how many of its pixels are drawn (alpha > 0)."""
    return page.evaluate("""() => {
        const c = document.getElementById("overlay");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let drawn = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) drawn++;
        return {width: c.width, height: c.height, drawn};
    }""")


def test_upload_shows_verdict_score_threshold_and_overlay(page, served, learner, tmp_path):
    url, _ = served
    image = learner[1]["defect"]
    problems = open_page(page, url)
    expect(page.locator("#model")).to_contain_text("from model.json")
    upload(page, image)
    expected = inspect_api(url, image)
    assert page.inner_text("#verdict") == expected["verdict"] == "defect"
    assert float(page.inner_text("#score")) == pytest.approx(expected["score"], rel=1e-5)
    shown, source = page.inner_text("#threshold").split(" ", 1)
    assert float(shown) == pytest.approx(expected["threshold"], rel=1e-5)
    assert source.startswith("from model.json (quantile")
    # the map over the photo at the photo's own size (the demo images are 128 x 320)
    drawn = overlay_pixels(page)
    assert (drawn["width"], drawn["height"]) == (128, 320) and drawn["drawn"] > 0
    shot = tmp_path / "review.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == []


def test_a_dropped_image_is_inspected(page, served, learner):
    url, _ = served
    image = learner[1]["normal"]
    open_page(page, url)
    data = base64.b64encode(image.read_bytes()).decode()
    page.evaluate("""(data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "dropped part.png", {type: "image/png"}));
        const drop = document.getElementById("drop");
        drop.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""", data)  # fmt: skip
    expect(page.locator("body")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
    score = inspect_api(url, image)["score"]
    assert float(page.inner_text("#score")) == pytest.approx(score, rel=1e-5)


def test_the_page_needs_the_key_for_its_calls_and_says_401_without_it(page, learner, tmp_path):
    folder = Path(shutil.copytree(learner[0], tmp_path / "model"))
    with pw.live_server(config(folder, KEY)) as url:
        problems = open_page(page, url)  # the page itself is served without the key
        expect(page.locator("#model")).to_contain_text("401")
        page.set_input_files("#file", str(learner[1]["normal"]))
        expect(page.locator("#error")).to_contain_text("401: missing or wrong API key")
        expect(page.locator("#result")).to_be_hidden()
        page.fill("#key", KEY)
        page.dispatch_event("#key", "change")
        expect(page.locator("#model")).to_contain_text("from model.json")
        page.set_input_files("#file", str(learner[1]["defect"]))
        expect(page.locator("body")).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
        assert page.inner_text("#verdict") == "defect"
        expect(page.locator("#error")).to_be_hidden()
    # the only console errors are the two refused calls (Chromium logs each 401)
    assert all("401" in p for p in problems) and len(problems) == 2, problems


def test_good_clears_a_false_alarm_and_defect_adds_a_version(page, served, learner):
    url, folder = served
    open_page(page, url)
    upload(page, learner[1]["normal"])
    assert page.inner_text("#verdict") == "defect"  # a false alarm
    before = float(page.inner_text("#score"))
    page.click("#good")
    after_feedback(page, 2)
    expect(page.locator("#verdict")).to_have_text("ok")
    assert float(page.inner_text("#score")) < before
    assert "added to the normal bank" in page.inner_text("#feedback")
    assert versions.read_record(folder, 2)["action"] == "add_normal"

    upload(page, learner[1]["defect"])
    assert page.inner_text("#verdict") == "defect"
    page.click("#defect")
    after_feedback(page, 3)
    assert "added to the defect bank" in page.inner_text("#feedback")
    assert versions.read_record(folder, 3)["action"] == "add_defect"
    assert page.inner_text("#verdict") == "defect"


def test_a_defect_called_good_is_refused_until_confirmed(page, served, demo_train, tmp_path):
    url, folder = served
    image = painted(demo_train.normal()[20], tmp_path)
    open_page(page, url)
    upload(page, image)
    page.click("#good")
    expect(page.locator("#guard")).to_be_visible()
    expect(page.locator("#guard-text")).to_contain_text("refused from the normal bank")
    assert not versions.is_versioned(folder)  # nothing added before the confirmation
    assert "version" not in page.inner_text("#version")
    page.click("#force")
    after_feedback(page, 2)
    expect(page.locator("#guard")).to_be_hidden()
    assert versions.read_record(folder, 2)["added"][0]["forced"] is True


def test_a_model_without_threshold_shows_verdicts_off(page, fitted_single, tmp_path, learner):
    folder = fitted_single.save(tmp_path / "single")
    with pw.live_server(config(folder)) as url:
        open_page(page, url)
        expect(page.locator("#model")).to_contain_text("verdicts are off")
        upload(page, learner[1]["defect"])
        assert page.inner_text("#verdict") == "no verdict (threshold off)"
        assert "verdicts are off" in page.inner_text("#threshold")
        # an error from the feedback call is shown as the server's one line
        page.click("#defect")
        expect(page.locator("#feedback")).to_contain_text(
            "feedback failed: 400: a single-bank model has no defect bank"
        )
        expect(page.locator("#guard")).to_be_hidden()


def test_a_double_click_adds_one_version(page, served, demo_test):
    url, folder = served
    open_page(page, url)
    upload(page, demo_test.normal()[0].image_path)
    page.evaluate("() => { const b = document.getElementById('good'); b.click(); b.click(); }")
    after_feedback(page, 2)
    expect(page.locator("#good")).to_be_enabled()
    assert versions.current_version(folder) == 2
