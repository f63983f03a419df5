"""The review page of a ``predict`` run: ``index.html`` beside its ``scores.csv``.

One self-contained file (no CDN, no server: it opens offline from disk) listing every image with
its overlay, score, verdict and a bar that shows the score against the threshold. Sorted by score,
highest first, with the threshold drawn as a line between the images above and below it; the
verdict counts are at the top; the list can be re-sorted (score, name) and filtered (verdict,
name); a click on a picture enlarges it.

The data travel as JSON inside the page and are put in place with ``textContent`` and
``setAttribute``: a file name cannot inject markup. Each card holds an empty
``<div class="review-actions" data-image="...">``: the place for "this is good / this is a
defect" buttons, to come.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

PAGE = "index.html"


def read_rows(folder: Path) -> list[dict]:
    """``scores.csv``'s rows with the score as a number, highest score first."""
    with (folder / "scores.csv").open(newline="", encoding="utf-8") as f:
        rows = [dict(r, score=float(r["score"])) for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: -r["score"] if math.isfinite(r["score"]) else math.inf)


def page_data(rows: list[dict], threshold: float | None, record: dict) -> dict:
    """What the page shows: the rows, the threshold, the counts and where it all came from."""
    counts = {v: sum(r.get("verdict") == v for r in rows) for v in ("defect", "ok")}
    return {
        "rows": [
            {
                "image": r["image"],
                "name": Path(r["image"]).name,
                "picture": r.get("overlay") or r.get("map") or "",
                # JSON has no NaN: a non-finite score shows as "n/a" and sorts last
                "score": r["score"] if math.isfinite(r["score"]) else None,
                "verdict": r.get("verdict") or "",
                "original": Path(r["image"]).resolve().as_uri(),
            }
            for r in rows
        ],
        "threshold": threshold,
        "threshold_source": record.get("threshold_source"),
        "counts": counts,
        "model": record.get("model"),
    }


def write_review(folder: str | Path, threshold: float | None, record: dict | None = None) -> Path:
    """Write ``index.html`` into ``folder`` (which holds predict's ``scores.csv``)."""
    from dualpatch.fileio import write_text

    folder = Path(folder)
    data = page_data(read_rows(folder), threshold, record or {})
    # "<" escaped inside the JSON: no "</script>" in a file name can end the data block
    blob = json.dumps(data).replace("<", "\\u003c")
    title = f"dualpatch predict: {len(data['rows'])} images"
    text = TEMPLATE.replace("@TITLE@", html.escape(title)).replace("@DATA@", blob)
    write_text(folder / PAGE, text)
    return folder / PAGE


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
header { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: baseline; }
.count { font-size: 1.4rem; font-weight: 600; }
.count.defect { color: #b00020; } .count.ok { color: #176b2c; }
#controls { margin: 1rem 0; display: flex; gap: 1rem; flex-wrap: wrap; }
#cards { display: flex; flex-direction: column; gap: .5rem; }
.card { display: grid; grid-template-columns: 160px 1fr 14rem; gap: 1rem; align-items: center;
        border: 1px solid #ddd; border-radius: 6px; padding: .5rem; }
.card img { max-width: 160px; max-height: 160px; cursor: zoom-in; }
.name { font-weight: 600; word-break: break-all; }
.verdict { display: inline-block; padding: .1rem .5rem; border-radius: 4px; color: #fff; }
.verdict.defect { background: #b00020; } .verdict.ok { background: #176b2c; }
.verdict.none { background: #777; }
.bar { position: relative; height: .8rem; background: #eee; margin-top: .3rem; }
.bar .fill { position: absolute; left: 0; top: 0; bottom: 0; background: #5477c4; }
.bar .line { position: absolute; top: -.2rem; bottom: -.2rem; width: 2px; background: #b00020; }
.threshold-row { border-top: 3px dashed #b00020; color: #b00020; padding-top: .2rem; }
#zoom { position: fixed; inset: 0; background: rgba(0,0,0,.85); display: none;
        align-items: center; justify-content: center; cursor: zoom-out; }
#zoom img { max-width: 95vw; max-height: 95vh; }
</style>
</head>
<body>
<h1>@TITLE@</h1>
<header id="summary"></header>
<div id="controls">
  <label>sort <select id="sort">
    <option value="score-desc">score, highest first</option>
    <option value="score-asc">score, lowest first</option>
    <option value="name">name</option>
  </select></label>
  <label>show <select id="show">
    <option value="all">all</option>
    <option value="defect">defect</option>
    <option value="ok">ok</option>
  </select></label>
  <label>name contains <input id="find" type="search"></label>
</div>
<div id="cards"></div>
<div id="zoom"><img alt="enlarged"></div>
<script type="application/json" id="data">@DATA@</script>
<script>
(() => {  // nothing global: "top", "name" and the like are the window's own
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const t = data.threshold;
data.rows.forEach(r => { r.value = r.score === null ? -Infinity : r.score; });
const barTop = Math.max(...data.rows.map(r => r.value), t === null ? 0 : 2 * t, 1e-12);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function summary() {
  const s = document.getElementById("summary");
  s.appendChild(el("span", "count", data.rows.length + " images"));
  if (t === null) {
    s.appendChild(el("span", "count none", "no threshold: verdicts off"));
    return;
  }
  s.appendChild(el("span", "count defect", data.counts.defect + " defect"));
  s.appendChild(el("span", "count ok", data.counts.ok + " ok"));
  s.appendChild(el("span", "threshold",
    "threshold " + t.toPrecision(6) + " (from " + data.threshold_source + ")"));
}

function card(r) {
  const c = el("div", "card");
  c.dataset.verdict = r.verdict;
  c.dataset.score = r.value;
  const img = el("img");
  img.setAttribute("src", r.picture);
  img.setAttribute("alt", r.name);
  img.addEventListener("click", () => enlarge(r.picture));
  c.appendChild(img);
  const mid = el("div");
  const name = el("a", "name", r.name);
  name.setAttribute("href", r.original);
  name.setAttribute("title", r.image);
  mid.appendChild(name);
  const shown = r.score === null ? "n/a" : r.score.toPrecision(6);
  mid.appendChild(el("div", "score", "score " + shown));
  const bar = el("div", "bar");
  const fill = el("div", "fill");
  fill.style.width = Math.max(0, Math.min(100, 100 * r.value / barTop)) + "%";
  bar.appendChild(fill);
  if (t !== null) {
    const line = el("div", "line");
    line.style.left = (100 * t / barTop) + "%";
    bar.appendChild(line);
  }
  mid.appendChild(bar);
  c.appendChild(mid);
  const right = el("div");
  right.appendChild(el("span", "verdict " + (r.verdict || "none"), r.verdict || "no verdict"));
  // the place for "this is good / this is a defect" buttons (a later issue)
  const actions = el("div", "review-actions");
  actions.dataset.image = r.image;
  right.appendChild(actions);
  c.appendChild(right);
  return c;
}

function enlarge(src) {
  const z = document.getElementById("zoom");
  z.querySelector("img").setAttribute("src", src);
  z.style.display = "flex";
}
document.getElementById("zoom").addEventListener("click", e => {
  e.currentTarget.style.display = "none";
});

function render() {
  const sort = document.getElementById("sort").value;
  const show = document.getElementById("show").value;
  const find = document.getElementById("find").value.toLowerCase();
  let rows = data.rows.filter(r => (show === "all" || r.verdict === show)
    && r.name.toLowerCase().includes(find));
  if (sort === "score-desc") rows.sort((a, b) => b.value - a.value);
  if (sort === "score-asc") rows.sort((a, b) => a.value - b.value);
  if (sort === "name") rows.sort((a, b) => a.name.localeCompare(b.name));
  const box = document.getElementById("cards");
  box.replaceChildren();
  let drawn = false;
  rows.forEach((r, i) => {
    const crosses = t !== null && sort !== "name" && !drawn && i > 0
      && (sort === "score-desc" ? r.value <= t : r.value > t)
      && (sort === "score-desc" ? rows[i - 1].value > t : rows[i - 1].value <= t);
    if (crosses) {
      box.appendChild(el("div", "threshold-row", "threshold " + t.toPrecision(6)));
      drawn = true;
    }
    box.appendChild(card(r));
  });
}

summary();
["sort", "show", "find"].forEach(id =>
  document.getElementById(id).addEventListener("input", render));
render();
})();
</script>
</body>
</html>
"""
