"""The review page ``dualpatch serve`` answers at ``/`` (docs/serve.md, "The review page").

One self-contained HTML document (inline CSS and JS, no CDN, no file beside it): a person drops or
picks an image; the page sends it to ``POST /v1/inspect?map=base64`` and shows the photo with the
anomaly map laid over it in predict's overlay colours, the score, the threshold and where it comes
from, and the verdict. "this is good" and "this is a defect" send the same image to
``POST /v1/feedback``, show the new model version and inspect the image again. A guard refusal
(409 with ``X-Dualpatch-Refused: guard``) is shown with an explicit "add anyway" that sends
``force=true``.

The page itself is served without the API key: it holds no model data. Everything it shows comes
from API calls, which carry the key typed into its key field as ``X-API-Key``.
"""

from __future__ import annotations

import json
from typing import Any

from dualpatch.serving.predict_io import BLUE, RED, YELLOW

#: what the page may load: itself, its API calls, the photo (blob:) and the map (data:); no
#: other origin, so a page edited to pull a script from elsewhere would fail in the browser
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)

_STYLE = """
[hidden]{display:none !important}
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1em;color:#222}
h1{font-size:1.3em;margin:.2em 0}
#model{color:#444}
label.key{display:block;margin:.6em 0}
#drop{border:2px dashed #889;border-radius:8px;padding:1.4em;text-align:center;margin:.6em 0}
#drop.over{background:#eef}
#error,#guard{border-radius:6px;padding:.5em .8em;margin:.6em 0}
#error{background:#fde8e8;color:#8a1010}
#guard{background:#fff4d6;color:#6a4a00}
#result{display:flex;gap:1.2em;flex-wrap:wrap;align-items:flex-start}
#result>div:last-child{flex:1;min-width:18em}
#view{position:relative;display:inline-block;line-height:0}
#photo{max-width:460px;max-height:640px}
#overlay{position:absolute;left:0;top:0;width:100%;height:100%}
#facts dt{font-weight:600;margin-top:.4em}
#facts dd{margin:0}
.ok{color:#0a6b2a}.defect{color:#b00000}.off{color:#666}
#verdict{font-size:1.6em;font-weight:700}
button{font:inherit;padding:.35em .8em;margin:.2em .3em .2em 0}
"""

_BODY = """
<h1>dualpatch review</h1>
<p id="model">model: not read yet</p>
<label class="key">API key (sent as X-API-Key; kept in this tab only)
  <input id="key" type="password" autocomplete="off" size="40"></label>
<div id="drop">drop an image here, or <input id="file" type="file" accept="image/*"></div>
<p id="error" role="alert" hidden></p>
<div id="result" hidden>
  <div id="view"><img id="photo" alt="the inspected image"><canvas id="overlay"></canvas></div>
  <div>
    <label><input id="show-overlay" type="checkbox" checked> overlay</label>
    <dl id="facts">
      <dt>verdict</dt><dd id="verdict"></dd>
      <dt>score</dt><dd id="score"></dd>
      <dt>threshold</dt><dd id="threshold"></dd>
      <dt>model</dt><dd id="version"></dd>
    </dl>
    <button id="good" type="button">this is good</button>
    <button id="defect" type="button">this is a defect</button>
    <p id="feedback" role="status"></p>
    <div id="guard" role="alert" hidden><span id="guard-text"></span><br>
      <button id="force" type="button">add anyway</button>
      <button id="cancel" type="button">cancel</button></div>
  </div>
</div>
"""

_SCRIPT = """
const $ = (id) => document.getElementById(id);
const NO_THRESHOLD = "none: verdicts are off (the model holds no threshold; fit with " +
  "--threshold-holdout, or serve with --threshold)";
// shown: the image whose result is on the page (feedback sends it); seq: the latest inspection,
// so that a late answer never lands beside another image
let shown = null, model = null, version = null, seq = 0;

function headers() {
  const key = $("key").value.trim();
  return key ? {"X-API-Key": key} : {};
}
function showError(text) { $("error").textContent = text; $("error").hidden = !text; }
async function call(method, path, body) {
  let r;
  try {
    r = await fetch(path, {method, headers: headers(), body});
  } catch (e) {
    return {r: {ok: false, status: 0, headers: new Headers()}, data: {error: "server unreachable"}};
  }
  let data = {};
  try { data = await r.json(); } catch (e) { data = {error: r.statusText}; }
  return {r, data};
}
function form(image) {
  const f = new FormData();
  f.append("image", image, image.name || "image");
  return f;
}

function number(x) { return String(Number(x.toPrecision(6))); }
function thresholdText(t) {
  if (t === null || t === undefined) return NO_THRESHOLD;
  const shown = number(t);
  if (!model || model.threshold !== t) return shown;
  const rule = model.threshold_rule ? ` (${model.threshold_rule})` : "";
  return `${shown} from ${model.threshold_source}${rule}`;
}
async function readModel() {
  const {r, data} = await call("GET", "/v1/model");
  if (!r.ok) {
    model = null;
    $("model").textContent = `model: cannot be read (${r.status}: ${data.error})`;
    return;
  }
  model = data;
  const t = data.threshold === null ? NO_THRESHOLD : thresholdText(data.threshold);
  $("model").textContent = `model: ${data.id} (${data.class}, ${data.runtime}); threshold ${t}`;
}

function colour(r) {  // predict's overlay colours: blue, yellow at the threshold, red at twice it
  const low = Math.min(r, 1), high = Math.min(Math.max(r - 1, 0), 1);
  return [0, 1, 2].map((c) => (1 - low) * BLUE[c] + low * ((1 - high) * YELLOW[c] + high * RED[c]));
}
function drawOverlay(mapB64) {
  const photo = $("photo"), canvas = $("overlay"), map = new Image();
  map.onload = () => {
    // the map is resized to the photo as predict's overlays are (grey 128 = the threshold)
    const scale = Math.min(1, 1024 / Math.max(photo.naturalWidth, photo.naturalHeight));
    canvas.width = Math.max(1, Math.round(photo.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(photo.naturalHeight * scale));
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(map, 0, 0, canvas.width, canvas.height);
    const img = ctx.getImageData(0, 0, canvas.width, canvas.height), px = img.data;
    for (let i = 0; i < px.length; i += 4) {
      const r = px[i] / 128, rgb = colour(r), low = Math.min(r, 1);
      px[i] = rgb[0]; px[i + 1] = rgb[1]; px[i + 2] = rgb[2]; px[i + 3] = 255 * 0.65 * low * low;
    }
    ctx.putImageData(img, 0, 0);
    document.body.dataset.state = "shown";
  };
  map.src = "data:image/png;base64," + mapB64;
}

function show(res, image) {
  const v = $("verdict");
  v.textContent = res.verdict === null ? "no verdict (threshold off)" : res.verdict;
  v.className = res.verdict === null ? "off" : res.verdict;
  $("score").textContent = number(res.score);
  $("threshold").textContent = thresholdText(res.threshold);
  const digest = res.model.digest.slice(0, 12);
  $("version").textContent = (version ? `version ${version}, ` : "") + `digest ${digest}`;
  $("photo").onload = () => drawOverlay(res.map_png_base64);
  if ($("photo").src) URL.revokeObjectURL($("photo").src);
  $("photo").src = URL.createObjectURL(image);
  shown = image;
  $("result").hidden = false;
}
async function inspect(image) {
  const mine = ++seq;
  document.body.dataset.state = "inspecting";
  showError("");
  const {r, data} = await call("POST", "/v1/inspect?map=base64", form(image));
  if (mine !== seq) return;  // another image was picked meanwhile
  if (!r.ok) {
    showError(`inspection failed: ${r.status}: ${data.error}`);
    $("result").hidden = true;  // never an old verdict beside a new image
    document.body.dataset.state = "error";
    return;
  }
  show(data, image);
}

function summary(data) {
  const bank = `${data.bank} bank ${data.rows_before} -> ${data.rows_after} rows`;
  const t = data.threshold || {};
  const check = t.checked ? (t.moved ? "threshold moved" : "threshold unchanged")
    : (t.reason || "threshold not re-checked");
  return `added to the ${bank}: model version ${data.version}; ${check}`;
}
function busy(on) { for (const id of ["good", "defect", "force"]) $(id).disabled = on; }
async function feedback(label, force) {
  busy(true);  // one click, one version
  try { await sendFeedback(label, force); } finally { busy(false); }
}
async function sendFeedback(label, force) {
  const image = shown;
  $("guard").hidden = true;
  $("feedback").textContent = `sending "${label}"...`;
  document.body.dataset.state = "feedback";
  const q = `/v1/feedback?label=${label}` + (force ? "&force=true" : "");
  const {r, data} = await call("POST", q, form(image));
  if (r.status === 409 && r.headers.get("X-Dualpatch-Refused") === "guard") {
    $("feedback").textContent = "";
    $("guard-text").textContent = `not added: ${data.error}. Add it to the normal bank anyway?`;
    $("guard").hidden = false;
    document.body.dataset.state = "guard";
    return;
  }
  if (!r.ok) {
    $("feedback").textContent = `feedback failed: ${r.status}: ${data.error}`;
    document.body.dataset.state = "error";
    return;
  }
  version = data.version;
  $("feedback").textContent = summary(data);
  await readModel();
  await inspect(image);  // the same image, scored by the new version
}

function pick(f) {
  if (!f) return;
  $("feedback").textContent = "";
  $("guard").hidden = true;
  inspect(f);
}
$("file").addEventListener("change", (e) => pick(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over"); pick(e.dataTransfer.files[0]);
});
$("key").addEventListener("change", readModel);
$("good").addEventListener("click", () => feedback("good", false));
$("defect").addEventListener("click", () => feedback("defect", false));
$("force").addEventListener("click", () => feedback("good", true));
$("cancel").addEventListener("click", () => { $("guard").hidden = true; });
$("show-overlay").addEventListener("change", (e) => { $("overlay").hidden = !e.target.checked; });
readModel();
"""


def colours() -> dict[str, Any]:
    """predict's overlay colours, as the page's script reads them."""
    return {name: [float(c) for c in value] for name, value in
            (("BLUE", BLUE), ("YELLOW", YELLOW), ("RED", RED))}  # fmt: skip


def page_html() -> str:
    """The whole review page: one document, nothing loaded from anywhere but the server's API."""
    consts = "".join(f"const {k} = {json.dumps(v)};\n" for k, v in colours().items())
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no /favicon.ico request (a 404)
        f"<title>dualpatch review</title><style>{_STYLE}</style></head>"
        f"<body>{_BODY}<script>\n{consts}{_SCRIPT}</script></body></html>\n"
    )


def page_response() -> Any:
    """``GET /``: the page, with a Content-Security-Policy that allows nothing from elsewhere."""
    from fastapi.responses import HTMLResponse

    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
    return HTMLResponse(page_html(), headers=headers)
