"""The report: overlays, gallery order, scores CSV, HTML escaping, the page in a real browser."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from dualpatch.fileio import write_json
from dualpatch.report.data import RunResult, gallery_order, metrics_dict, write_scores_csv
from dualpatch.report.html import write_html_report
from dualpatch.report.plots import MASK_COLOUR, plot_curves, render_overlay, write_overlays
from tests.support import browser

H, W = 40, 16  # tall and narrow like KSDD2, tiny to keep the suite fast


def make_run(name: str, seed: int, n: int = 12, lazy: bool = False) -> RunResult:
    """A run with random images, low-resolution maps, a small square defect in half the images."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * (n // 2))
    scores = rng.normal(labels * 1.0, 0.6)
    images = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    masks = np.zeros((n, H, W), bool)
    masks[labels == 1, 10:20, 4:10] = True
    maps = rng.random((n, H // 4, W // 4)).astype(np.float32) + scores[:, None, None]
    metrics = {
        "image_auroc": float(rng.random()), "pixel_auroc": float(rng.random()),
        "image_ap": 1 / 3, "pixel_aupro": float("nan"), "f1_max": float(rng.random()),
        "f1_threshold": 0.123456789, "fit_seconds": 12.5, "images_per_second": None,
        "peak_rss_mb": 812.25,
    }
    return RunResult(
        name=name, metrics=metrics, ids=[f"test/{10000 + i}" for i in range(n)], labels=labels,
        scores=scores, threshold=0.5,
        maps=(lambda i: maps[i]) if lazy else maps,
        images=(lambda i: images[i]) if lazy else images,
        masks=masks,
    )


def test_overlay_keeps_image_shape_and_outlines_mask():
    image = np.full((320, 128, 3), 128, np.uint8)
    mask = np.zeros((320, 128), bool)
    mask[100:140, 40:60] = True
    out = render_overlay(image, np.random.default_rng(0).random((40, 16)), mask, (0.0, 1.0))
    assert out.shape == image.shape and out.dtype == np.uint8
    outline = np.all(out == MASK_COLOUR, axis=-1)
    assert outline[100, 50] and outline[120, 40] and not outline[120, 50]  # edge, not interior
    small = render_overlay(image, np.zeros((40, 16)), None, (0, 1), max_side=160)
    assert small.shape == (160, 64, 3)  # shrunk with the aspect kept, never squared


def test_overlay_colour_scale_is_fixed_across_the_run(tmp_path):
    run = make_run("r", 0, n=4)
    run.images = np.zeros((4, H, W, 3), np.uint8)
    run.masks = None
    run.maps = np.stack([np.full((H, W), v, np.float32) for v in (0, 1, 2, 4)])
    paths = write_overlays(run, tmp_path)
    pixels = [np.asarray(Image.open(paths[i]))[0, 0] for i in range(4)]
    assert list(paths) == [0, 1, 2, 3] and all(p.suffix == ".png" for p in paths.values())
    assert np.asarray(Image.open(paths[0])).shape == (H, W, 3)
    # value 0 is the run's coldest (blue), 4 its hottest (dark red): not each image's own scale
    assert pixels[0][2] > pixels[0][0] and pixels[3][0] > pixels[3][2]
    assert not np.array_equal(pixels[1], pixels[3])


def test_gallery_puts_worst_false_positives_and_negatives_first():
    run = make_run("r", 0, n=6)
    run.labels = np.array([0, 0, 0, 1, 1, 1])
    run.scores = np.array([0.9, 0.1, 0.7, 0.2, 0.8, 0.4])
    run.threshold = 0.5
    assert gallery_order(run) == [
        (0, "FP"), (2, "FP"),  # normals above the threshold, highest first
        (3, "FN"), (5, "FN"),  # defects below it, lowest first
        (4, "TP"), (1, "TN"),
    ]


def test_scores_csv_rows(tmp_path):
    run = make_run("r", 1, n=4)
    path = write_scores_csv(run, tmp_path / "s" / "scores.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["id"] for r in rows] == run.ids
    assert [int(r["label"]) for r in rows] == run.labels.tolist()
    assert [float(r["score"]) for r in rows] == run.scores.tolist()  # full precision


def test_curves_written(tmp_path):
    paths = plot_curves([make_run("a", 0), make_run("b", 1)], tmp_path)
    for p in paths.values():
        assert Image.open(p).size[0] > 100


def test_run_validates_lengths():
    with pytest.raises(ValueError, match="ids"):
        RunResult("x", {}, ["a", "b"], np.array([0]), np.array([0.1]), 0.5)


def test_html_escapes_text_and_loads_nothing_external(tmp_path):
    evil = '<script>alert("x")</script>&'
    run = make_run(evil, 0, n=4)
    run.ids = [f"{evil}{i}" for i in range(4)]
    page = write_html_report(
        tmp_path, [run], {"config": {"note": evil, "list": [1, evil]}, evil: "v"}, title=evil
    ).read_text()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for src in re.findall(r'src="([^"]+)"', page):  # relative, and every file exists
        assert (tmp_path / src).is_file()


def test_html_inline_images_make_a_single_file(tmp_path):
    page = write_html_report(tmp_path, [make_run("a", 0, n=4)], {}, inline_images=True).read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == 2 + 4 and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_gallery_limit_and_lazy_sources(tmp_path):
    run = make_run("lazy", 2, n=12, lazy=True)
    page = write_html_report(tmp_path, [run], {}, gallery_limit=1).read_text()
    order = gallery_order(run)
    firsts = [next(i for i, k in order if k == kind) for kind in ("FP", "FN", "TP", "TN")
              if any(k == kind for _, k in order)]
    shown = re.findall(r'<span class="tag \w+">\w+</span> ([^<]+)<br>', page)
    assert shown == [run.ids[i] for i in firsts]  # the worst of each kind, FP then FN first
    assert len(list((tmp_path / "runs" / "lazy" / "overlays").iterdir())) == page.count("<figure")


NO_BROWSER = browser.unavailable_reason()


@pytest.mark.skipif(NO_BROWSER is not None, reason=f"browser test skipped: {NO_BROWSER}")
def test_report_in_headless_chromium(tmp_path):
    runs = [make_run("single", 0), make_run("dual+ddpm<100>", 1)]
    metrics = metrics_dict(runs)
    write_json(tmp_path / "metrics.json", metrics)
    provenance = {"config": {"backbone": "efficientnet-lite0"}, "dataset_sha256": "ab" * 32}
    html_path = write_html_report(tmp_path, runs, provenance)

    with browser.browser() as b:
        page = b.new_page()
        page.goto(html_path.as_uri())
        images = page.evaluate(
            "Array.from(document.images, i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
        )
        cells = page.evaluate(
            "Array.from(document.querySelectorAll('td[data-metric]'), td =>"
            " [td.dataset.run, td.dataset.metric, td.dataset.value, td.textContent])"
        )
        shot = page.screenshot(width=1000)
        assert page.errors() == []
        assert all(u.startswith(("file://", "data:")) for u in page.requested_urls())

    assert len(images) == 2 + sum(len(r.ids) for r in runs)  # curves + every image (under limit)
    assert [src for src, complete, width in images if not (complete and width > 0)] == []
    expected = json.loads((tmp_path / "metrics.json").read_text())
    assert {(r, m) for r, m, _, _ in cells} == {(r, m) for r in expected for m in expected[r]}
    for run_name, metric, value, text in cells:
        want = expected[run_name][metric]
        if want is None:
            assert value == "" and text == "—"
        else:
            assert float(value) == want and text == f"{want:.3f}"
    assert math.isnan(runs[0].metrics["pixel_aupro"]) and expected["single"]["pixel_aupro"] is None
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(shot)).size[0] == 1000
