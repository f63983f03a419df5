"""predict's review page (index.html): what it holds, that a file name cannot inject markup, and
that it renders and filters in a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from dualpatch.serving.review import write_review
from tests.support import browser

# under the folder "in<", the third path holds "</script><img ...>": it must stay data
NAMES = ["plain.png", "with space.png", 'script><img src=x onerror="alert(1)">.png']


def predict_folder(tmp_path: Path, verdicts: bool = True) -> Path:
    """A folder as predict leaves it: scores.csv and one overlay per image."""
    import csv

    out = tmp_path / "pred"
    (out / "overlays").mkdir(parents=True)
    rows = []
    for i, (name, score) in enumerate(zip(NAMES, (0.2, 0.9, 0.5), strict=True)):
        Image.new("RGB", (40, 80), (50 * i, 90, 160)).save(out / "overlays" / f"{i}.jpg")
        verdict = ("defect" if score > 0.4 else "ok") if verdicts else ""
        rows.append([str(tmp_path / "in<" / name), "", f"overlays/{i}.jpg", score, verdict])
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "map", "overlay", "score", "verdict"])
        w.writerows(rows)
    return out


def blob(page: str) -> dict:
    return json.loads(re.search(r'id="data">(.*?)</script>', page, re.S).group(1))


def test_page_holds_rows_by_score_counts_and_threshold(tmp_path):
    out = predict_folder(tmp_path)
    page = write_review(out, 0.4, {"threshold_source": "model.json"}).read_text()
    data = blob(page)
    assert [r["score"] for r in data["rows"]] == [0.9, 0.5, 0.2]
    assert data["counts"] == {"defect": 2, "ok": 1} and data["threshold"] == 0.4
    assert data["threshold_source"] == "model.json"
    # the hostile name is data, never markup: one <script> data block closes the JSON
    assert page.count("</script>") == 2 and "<img src=x" not in page
    assert "</script><img" in data["rows"][1]["image"]


def test_page_without_threshold_says_verdicts_are_off(tmp_path):
    out = predict_folder(tmp_path, verdicts=False)
    data = blob(write_review(out, None, {}).read_text())
    assert data["threshold"] is None and data["counts"] == {"defect": 0, "ok": 0}


NO_BROWSER = browser.unavailable_reason()


@pytest.mark.skipif(NO_BROWSER is not None, reason=f"browser test skipped: {NO_BROWSER}")
def test_review_page_in_headless_chromium(tmp_path):
    out = predict_folder(tmp_path)
    html_path = write_review(out, 0.4, {"threshold_source": "model.json"})
    with browser.browser() as b:
        page = b.new_page()
        page.goto(html_path.as_uri())
        names = page.evaluate("Array.from(document.querySelectorAll('.card .name'), "
                              "e => e.textContent)")  # fmt: skip
        order = page.evaluate("Array.from(document.querySelectorAll('#cards > div'), "
                              "e => e.className)")  # fmt: skip
        summary = page.evaluate("document.getElementById('summary').textContent")
        loaded = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0)"
                               ".length")  # fmt: skip
        page.evaluate("const s = document.getElementById('show'); s.value = 'ok';"
                      "s.dispatchEvent(new Event('input'))")  # fmt: skip
        shown = page.evaluate("document.querySelectorAll('.card').length")
        page.evaluate("document.querySelector('.card img').click()")
        zoomed = page.evaluate("getComputedStyle(document.getElementById('zoom')).display")
        (tmp_path / "review.png").write_bytes(page.screenshot(width=900))
        assert page.errors() == []
        assert all(u.startswith("file://") for u in page.requested_urls())
        assert page.evaluate("typeof alert") == "function"  # the hostile name ran nothing
    assert names == [NAMES[1], NAMES[2], NAMES[0]]  # highest score first
    assert order == ["card", "card", "threshold-row", "card"]  # the threshold drawn in place
    assert "3 images" in summary and "2 defect" in summary and "1 ok" in summary
    assert "threshold 0.400000 (from model.json)" in summary
    assert loaded == 3 and shown == 1 and zoomed == "flex"
    assert Image.open(tmp_path / "review.png").size[0] == 900


def test_a_non_finite_score_is_null_in_strict_json(tmp_path):
    out = predict_folder(tmp_path)
    text = (out / "scores.csv").read_text().replace(",0.5,", ",nan,")
    (out / "scores.csv").write_text(text)
    page = write_review(out, 0.4, {}).read_text()
    raw = re.search(r'id="data">(.*?)</script>', page, re.S).group(1)

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    data = json.loads(raw, parse_constant=refuse)  # JSON.parse in the page refuses NaN too
    assert [r["score"] for r in data["rows"]] == [0.9, 0.2, None]
    if NO_BROWSER is None:
        with browser.browser() as b:
            page = b.new_page()
            page.goto((out / "index.html").as_uri())
            texts = page.evaluate("Array.from(document.querySelectorAll('.score'), "
                                  "e => e.textContent)")  # fmt: skip
            assert page.errors() == []
        assert texts == ["score 0.900000", "score 0.200000", "score n/a"]
