"""README's "Your own images in five commands" are real commands: the fit, evaluate and predict
lines run as written (plus a tiny model size) on a folder laid out as the README shows, and the
serve and curl lines use the options and the port `serve` has."""

from __future__ import annotations

import csv
import json
import re
import shlex

from tests.bad_input.conftest import cli  # noqa: F401  (the fixture)
from tests.support.bad_input import box_mask, save, texture
from tests.support.common import REPO_ROOT

#: a tiny model, so that the README's fit runs in seconds; everything else is the README's
TINY_FIT = ["--image-size", "64", "32", "--coreset-min", "20"]


def readme_commands() -> list[list[str]]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Your own images in five commands") :].split("\n## ")[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def my_photos(root):
    """The README's layout: good/ in two camera folders, defective/ JPEGs, masks/ for some."""
    for i in range(10):
        save(root / f"my-photos/good/cam{i % 2 + 1}/ok {i}.png", texture(i))
    for i in range(5):
        img = texture(100 + i)
        img[box_mask() > 0] = [250, 30, 30]
        save(root / f"my-photos/defective/scratch {i}.jpg", img, quality=95)
        if i < 3:
            save(root / f"my-photos/masks/scratch {i}_mask.png", box_mask())
    for i in range(3):
        save(root / f"new-photos/part {i}.png", texture(200 + i))


def test_five_commands():
    commands = readme_commands()
    assert len(commands) == 5
    assert [c[:2] for c in commands[:4]] == [
        ["dualpatch", "fit"], ["dualpatch", "evaluate"], ["dualpatch", "predict"],
        ["dualpatch", "serve"],
    ]  # fmt: skip
    assert commands[4][0] == "curl"


def test_the_readme_commands_run_on_a_folder(cli, tmp_path, monkeypatch):  # noqa: F811
    my_photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    fit, evaluate, predict, _, _ = readme_commands()
    code, _, err = cli(*fit[1:], *TINY_FIT)
    assert code == 0, err
    code, _, err = cli(*evaluate[1:])
    assert code == 0, err
    out = evaluate[evaluate.index("--out") + 1]
    metrics = json.loads((tmp_path / out / "metrics.json").read_text())
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    code, _, err = cli(*predict[1:])
    assert code == 0, err
    out = tmp_path / predict[predict.index("--out") + 1]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 3 and {r["verdict"] for r in rows} <= {"ok", "defect"}
    assert (out / "index.html").is_file() and all((out / r["overlay"]).is_file() for r in rows)


def test_the_serve_and_curl_lines_match_the_server(cli):  # noqa: F811
    *_, serve, curl = readme_commands()
    code, help_text, _ = cli("serve", "--help")
    assert code == 0
    options = [a for a in serve[2:] if a.startswith("--")]
    assert options and all(o in help_text for o in options)
    port = re.search(r"--port\b.*?default: (\d+)", help_text, flags=re.S).group(1)
    assert f"http://127.0.0.1:{port}/v1/inspect" in curl
