"""benchmarks/readme_tables.py --write-readme: docs/results.md's tables and README's one headline
table are the JSON's figures, written between their markers, never typed by hand."""

from __future__ import annotations

import json
import shutil
import sys

from tests.support.common import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import readme_tables  # noqa: E402


def test_the_committed_tables_are_what_the_json_gives(tmp_path):
    """Rewriting copies of README.md and docs/results.md from the JSON files changes nothing."""
    readme, page = tmp_path / "README.md", tmp_path / "results.md"
    shutil.copy(REPO_ROOT / "README.md", readme)
    shutil.copy(REPO_ROOT / "docs" / "results.md", page)
    readme_tables.write_readme(readme, page)
    assert readme.read_text() == (REPO_ROOT / "README.md").read_text()
    assert page.read_text() == (REPO_ROOT / "docs" / "results.md").read_text()


def test_write_between_replaces_only_what_the_markers_hold(tmp_path):
    path = tmp_path / "page.md"
    path.write_text("before\n<!-- a -->\nold\nlines\n<!-- b -->\nafter\n")
    readme_tables.write_between(path, "<!-- a -->", "<!-- b -->", "new")
    assert path.read_text() == "before\n<!-- a -->\nnew\n<!-- b -->\nafter\n"


def test_the_headline_table_reads_each_datasets_json():
    table, _, note = readme_tables.headline_table().partition("\n\n")
    rows = [r for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) == 3 * len(readme_tables.HEADLINE_RUNS)
    for name, title in readme_tables.TITLES.items():
        data = json.loads((readme_tables.RESULTS / f"safety_{name}.json").read_text())
        guarded = data["runs"]["guarded"]["image_auroc"]
        (row,) = [r for r in rows if r.startswith(f"| {title} | dual, `guarded`")]
        assert f"| {guarded['mean']:.3f} [" in row
        fell_back = all(c["chosen"].get("fallback") for c in data["choices_per_outer_fold"])
        assert (title in note) == fell_back
