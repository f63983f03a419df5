"""README is the user's page (issue 22 item 6): short, and every relative link in it and in docs/
resolves, to a file that exists and, with a #fragment, to a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymdownx.slugs import slugify

from tests.support.common import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
SLUG = slugify(case="lower")  # GitHub's heading ids, as mkdocs.yml's toc uses them
FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (a link there is no link)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """The ids of ``path``'s headings (``-1``, ``-2``... for repeats, as GitHub and mkdocs do)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), flags=re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
        slug = SLUG(text.strip(), "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z]+:|//", t)]


def test_readme_is_the_users_page():
    """About 250 lines: what it is, the two commands, your own images, one results table, links."""
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    for heading in ("## Two commands", "## Your own images in five commands", "## Results"):
        assert heading in text
    results = text[text.index("## Results") :].split("\n## ")[0]
    assert results.count("| --- |") == 1, "one results table"
    assert "(docs/safety-suite.md)" in results, "a link to how it was measured"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert broken == []


def test_the_link_check_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A `title`\n\n## Two words\n\n[ok](#two-words) [ok](#a-title) `[no](x.md)`\n"
                    "[bad](missing.md) [bad](#nowhere) [web](https://example.com)\n")  # fmt: skip
    assert relative_links(page) == ["#two-words", "#a-title", "missing.md", "#nowhere"]
    assert anchors(page) == {"a-title", "two-words"}
